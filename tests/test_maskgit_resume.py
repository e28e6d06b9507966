"""R1 for stage two: kill -9 mid-training, then --resume latest, replays the uninterrupted run exactly (CPU), with
negative controls that prove the comparison catches a broken restore; the command's one-line errors; and the
exported RUN_DIR/pipeline/ works with TextToVideoPipeline.from_pretrained and magvit2-generate."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from maskgit import TextToVideoPipeline
from tests.helpers.artefacts import final_tensors, logged, same
from tests.helpers.commands import expect_user_error, train_maskgit_cli
from tests.helpers.training import make_stage_two
from trainers.data.video_io import read_video


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    # 6 clips, 2 held out, batch 2: 2 updates per epoch, so the crash lands mid-run with a mid-epoch position
    return make_stage_two(tmp_path_factory.mktemp("stage2"))


@pytest.fixture(scope="module")
def baseline(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("baseline") / "run"
    train_maskgit_cli(data, run)
    return run


@pytest.fixture(scope="module")
def crashed(data, tmp_path_factory) -> Path:
    """A run SIGKILLed after update 7, before any checkpoint of it (checkpoint_every=5: step-00000005 survives)."""
    run = tmp_path_factory.mktemp("crashed") / "run"
    result = train_maskgit_cli(data, run, check=False, faults=("--crash-at", "7"))
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    complete = sorted(p.name for p in (run / "checkpoints").iterdir() if (p / "COMPLETE.json").exists())
    assert complete[-1] == "step-00000005"
    return run


@pytest.mark.slow
def test_kill_9_then_resume_reproduces_the_uninterrupted_run(data, baseline, crashed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(crashed, run)
    (run / "checkpoints" / "step-00000007.tmp-999999").mkdir()  # a half-written checkpoint from the crash
    train_maskgit_cli(data, run, "--resume", "latest")
    expected, got = logged(baseline), logged(run)
    for step in range(6, 10):
        assert got[step] == expected[step], step
    assert same(final_tensors(run), final_tensors(baseline))
    assert not (run / "checkpoints" / "step-00000007.tmp-999999").exists()


@pytest.mark.slow
@pytest.mark.parametrize("broken", ["optimizer", "sampler"])
def test_negative_control_a_broken_restore_is_detected(data, baseline, crashed, tmp_path, broken):
    run = tmp_path / "run"
    shutil.copytree(crashed, run)
    train_maskgit_cli(data, run, "--resume", "latest", faults=("--break-restore", broken))
    expected, got = logged(baseline), logged(run)
    assert any(got[s]["loss"] != expected[s]["loss"] for s in range(6, 10))
    assert not same(final_tensors(run), final_tensors(baseline))


@pytest.mark.slow
def test_exported_pipeline_loads_and_magvit2_generate_runs_on_the_run_folder(baseline, tmp_path, capsys):
    from scripts.generate import main as generate

    pipe = TextToVideoPipeline.from_pretrained(baseline / "pipeline")
    ema = load_file(str(baseline / "checkpoints" / "step-00000009" / "ema.safetensors"))
    exported = pipe.transformer.state_dict()
    assert all(torch.equal(v, ema[f"ema_model.{k}"]) for k, v in exported.items())  # the EMA weights
    assert pipe.defaults.num_frames == 5 and pipe.text_encoder.spec == "tiny:32"
    out = tmp_path / "videos"
    assert generate(["--model", str(baseline), "--prompt", "a cup of coffee", "--out-dir", str(out), "--device",
                     "cpu", "--seed", "1"]) == 0
    (video,) = sorted(out.glob("*.mp4"))
    assert read_video(video).shape == (5, 16, 16, 3)


def test_user_errors_exit_2_with_one_line(data, tmp_path, capsys):
    common = ["--tokenizer", data["tokenizer"], "--preset", "tiny", "--out"]  # (base, the default, loads MiniLM)
    expect_user_error(capsys, [*common, tmp_path / "r1", "--codes", tmp_path / "nope"], "no index.json")
    expect_user_error(capsys, [*common, tmp_path / "r2", "--codes", data["codes"], "--preset", "huge"],
                      "invalid choice: 'huge'")
    expect_user_error(capsys, [*common, tmp_path / "r3", "--codes", data["codes"], "--resume", "latest"],
                      "no complete checkpoint")
    other = make_stage_two(tmp_path / "k32", ("coffee", "rocket"), ("a", "b"), codebook_size=2**5)
    capsys.readouterr()  # the fixture's own progress bar
    expect_user_error(capsys, [*common, tmp_path / "r4", "--codes", other["codes"]], "vocabulary mismatch")
    expect_user_error(capsys, ["--tokenizer", tmp_path / "nope", "--out", tmp_path / "r5", "--codes", data["codes"]],
                      "does not exist")
    expect_user_error(capsys, [*common, tmp_path / "r6", "--codes", data["codes"], "--data", data["clips"]],
                      "not allowed with argument")
