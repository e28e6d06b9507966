"""LoRA runs of the MaskGit trainer (`--init-from PIPELINE --lora-rank R`): only the adapter's tensors change and the
base stays bit for bit; the optimizer, EMA and checkpoints hold the adapter only; the export RUN_DIR/lora/ loads into
its base pipeline and gives the EMA adapter's outputs; kill -9 then --resume (with or without --init-from) replays the
uninterrupted run exactly; wrong combinations and a changed base fail with one line."""

from __future__ import annotations

import json
import shutil
import signal
import sys

import pytest
import torch
from safetensors.torch import load_file

from maskgit import TextToVideoPipeline
from maskgit.lora import base_state_dict, weights_sha256
from scripts.train_maskgit import main
from tests.helpers.artefacts import final_tensors, logged, same
from tests.helpers.commands import expect_user_error, train_maskgit_cli
from tests.helpers.training import LORA, make_lora_base, make_stage_two, maskgit_config, maskgit_trainer


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("lora")
    data = make_stage_two(root)
    data["base"] = make_lora_base(data, root / "base")
    return data


def test_only_adapter_tensors_train_and_the_export_loads_into_its_base(data, tmp_path, one_thread, caplog):
    base = TextToVideoPipeline.from_pretrained(data["base"])
    base_weights = {k: v.clone() for k, v in base.transformer.state_dict().items()}
    t = maskgit_trainer(data, tmp_path / "run", "--max-steps", "6", *LORA, init_from=str(data["base"]),
                        cfg=maskgit_config("--max-steps", "6", *LORA, run={"checkpoint_every": 3, "val_every": 3}))
    assert "adapter parameters train" in caplog.text and "of the" in caplog.text
    initial = {k: v.detach().clone() for k, v in t.lora.weights.items()}
    summary = t.fit()
    # the base is untouched, bit for bit; every adapter tensor moved (B started at zero)
    now = base_state_dict(t.transformer)
    assert now.keys() == base_weights.keys() and all(torch.equal(now[k], base_weights[k]) for k in now)
    assert all(not torch.equal(p, initial[k]) for k, p in t.lora.weights.items())
    assert 0 < summary["lora_share"] < 0.5 and summary["lora_trainable_params"] == t.lora.trainable
    # the optimizer, EMA and checkpoints hold the adapter only
    assert {id(p) for g in t.optimizer.param_groups for p in g["params"]} == {id(p) for p in t.lora.weights.values()}
    step = tmp_path / "run" / "checkpoints" / "step-00000006"
    ckpt = {g: load_file(str(step / f"{g}.safetensors")) for g in ("transformer", "ema")}
    assert set(ckpt["transformer"]) == set(t.lora.weights)
    assert {k for k in ckpt["ema"] if k.startswith("ema_model.")} == {f"ema_model.{k}" for k in t.lora.weights}
    assert set(ckpt["ema"]) - {f"ema_model.{k}" for k in t.lora.weights} == {"initted", "step"}
    assert sum(v.numel() for v in ckpt["transformer"].values()) == t.lora.trainable
    state = json.loads((step / "state.json").read_text())
    assert state["config"]["lora_resolved"]["base"]["transformer_sha256"] == weights_sha256(base_weights)
    # the export: the EMA adapter, loadable into its base; the same logits as the trainer's EMA model
    assert not (tmp_path / "run" / "pipeline").exists()
    base.load_lora_weights(tmp_path / "run", adapter_name="run")
    codes = torch.full((1, 3 * 8 * 8), base.transformer.mask_id)
    text = base.text_encoder.encode(["a cup of coffee"])
    base.transformer.eval()
    with torch.no_grad(), t.ema_transformer() as ema:
        ema.eval()
        assert torch.equal(base.transformer(codes, text)[0], ema(codes, text)[0])
    assert base("a cup of coffee", generator=torch.Generator().manual_seed(0), output_type="latent").frames.shape \
        == (1, 3, 8, 8)


def test_gradient_checkpointing_trains_the_adapter_the_same(data, tmp_path, one_thread):
    runs = {}
    for name, flags in (("plain", ()), ("checkpointed", ("--gradient-checkpointing",))):
        t = maskgit_trainer(data, tmp_path / name, init_from=str(data["base"]),
                            cfg=maskgit_config("--max-steps", "2", *LORA, *flags, run={"val_every": 100}))
        t.fit()
        runs[name] = {k: p.detach().clone() for k, p in t.lora.weights.items()}
    assert all(torch.allclose(runs["plain"][k], runs["checkpointed"][k], atol=1e-6) for k in runs["plain"])
    assert any((v != 0).any() for k, v in runs["plain"].items() if "lora_B" in k)


@pytest.fixture(scope="module")
def baseline(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("lora-baseline") / "run"
    train_maskgit_cli(data, run, "--init-from", str(data["base"]), *LORA)
    return run


@pytest.fixture(scope="module")
def crashed(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("lora-crashed") / "run"
    result = train_maskgit_cli(data, run, "--init-from", str(data["base"]), *LORA, check=False,
                               faults=("--crash-at", "7"))
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*"))[-1] == "step-00000005"
    return run


@pytest.mark.slow
@pytest.mark.parametrize("with_init_from", [True, False])
def test_kill_9_then_resume_of_a_lora_run_is_exact(data, baseline, crashed, tmp_path, with_init_from):
    run = tmp_path / "run"
    shutil.copytree(crashed, run)
    again = ("--init-from", str(data["base"])) if with_init_from else ()  # else: the base the checkpoint recorded
    train_maskgit_cli(data, run, *again, *LORA, "--resume", "latest")
    expected, got = logged(baseline), logged(run)
    for step in range(6, 10):
        assert got[step] == expected[step], step
    assert same(final_tensors(run), final_tensors(baseline))
    exported = load_file(str(run / "lora" / "adapter_model.safetensors"))
    assert exported.keys() == load_file(str(baseline / "lora" / "adapter_model.safetensors")).keys()


@pytest.mark.slow
def test_negative_control_a_lora_resume_that_forgets_the_optimizer_is_detected(data, baseline, crashed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(crashed, run)
    train_maskgit_cli(data, run, "--init-from", str(data["base"]), *LORA, "--resume", "latest",
                      faults=("--break-restore", "optimizer"))
    assert not same(final_tensors(run), final_tensors(baseline))


def test_lora_user_errors_exit_2_with_one_line(data, crashed, tmp_path, capsys, monkeypatch):
    common = ["--tokenizer", data["tokenizer"], "--codes", data["codes"], "--preset", "tiny", "--out"]
    expect_user_error(capsys, [*common, tmp_path / "r1", *LORA], "pass --init-from PIPELINE")
    expect_user_error(capsys, [*common, tmp_path / "r2", "--lora-alpha", "8"], "--lora-alpha needs --lora-rank")
    expect_user_error(capsys, [*common, tmp_path / "r3", *LORA, "--init-from",
                               crashed / "checkpoints" / "step-00000005"], "adapts a pipeline")
    expect_user_error(capsys, [*common, tmp_path / "r4", "--lora-rank", "2", "--lora-targets", r".*\.nothing$",
                               "--init-from", data["base"]], "matches no module")
    other = make_lora_base(data, tmp_path / "other", seed=8)  # resuming on another base is refused, naming both
    run = tmp_path / "r5"
    shutil.copytree(crashed, run)
    for argv, match in (([*LORA, "--init-from", other], "base pipeline was"), ([], "is a LoRA run")):
        assert main([str(a) for a in [*common, run, *argv, "--resume", "latest"]]) == 2
        err = capsys.readouterr().err  # (the run logs its setup before the checkpoint is read)
        assert err.endswith("\n") and "Traceback" not in err and err.count("error:") == 1, err
        assert err.splitlines()[-1].startswith("magvit2-train-maskgit: error:") and match in err, err
    monkeypatch.setitem(sys.modules, "peft", None)
    expect_user_error(capsys, [*common, tmp_path / "r6", *LORA, "--init-from", data["base"]],
                      "pip install 'magvit2-maskgit[lora]'")


def test_a_full_fine_tune_checkpoint_cannot_resume_as_lora(data, tmp_path, capsys):
    run = tmp_path / "full"
    train_maskgit_cli(data, run, "--max-steps", "1", "--init-from", str(data["base"]))
    assert main(["--tokenizer", str(data["tokenizer"]), "--codes", str(data["codes"]), "--out", str(run),
                 "--preset", "tiny", *LORA, "--init-from", str(data["base"]), "--resume", "latest"]) == 2
    assert "is not a LoRA run" in capsys.readouterr().err
