"""Data-parallel training for real: 2 CPU processes with gloo under `torchrun` (`accelerate launch --cpu
--num_processes 2` starts ONE process on a GPU-less machine, so it would test nothing). Every multi-process run
asserts the world size it ran with.

W processes x batch B must train like one process x batch W*B (same global batches, the LFQ codebook entropy, LeCam
means and adaptive GAN weight of the global batch, the MaskGit masks of the global batch); a run resumes exactly on
another process count with the same global batch; a kill -9 of a 2-process run resumes bitwise; --max-minutes ends
every process with one checkpoint, and a SIGTERM on one process saves and ends all of them; FSDP and DeepSpeed
refuse with one line."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.commands import launch, ok, world_size_of
from trainers.logging import read_metrics

# windows as long as the clips: the temporal discriminators run on every video batch with no random window, so one
# process and two draw the same thing; Adam's eps keeps tiny gradient noise from being amplified into sign flips
EQUIVALENCE_YAML = "loss:\n  temporal_window_lengths: [5]\ngen_optim:\n  eps: 0.01\ndisc_optim:\n  eps: 0.01\n"
MASKGIT_YAML = "optim:\n  eps: 0.01\n"
TOKENIZER_LOSSES = ("generator.total", "generator.recon", "generator.codebook_entropy", "generator.adaptive_weight",
                    "discriminator.total", "discriminator.hinge", "discriminator.lecam", "discriminator.r1")


def train_records(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(run / "metrics.jsonl", kind="train")}


def tensors(run: Path, step: int, group: str) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step-{step:08d}" / f"{group}.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def assert_losses_close(a: dict, b: dict, keys, steps, rtol: float) -> None:
    for step in steps:
        for k in keys:
            if k in a[step]:
                assert b[step][k] == pytest.approx(a[step][k], rel=rtol, abs=1e-6), (step, k)


# ---------------------------------------------------------------------------------------------------------------
# the LFQ codebook entropy of the global batch


def test_lfq_codebook_entropy_over_two_processes_equals_one_process_on_the_whole_batch(tmp_path):
    from magvit2.config import TokenizerConfig
    from magvit2.quantize import LFQuantizer

    config = TokenizerConfig(image_size=16, codebook_size=2**10)
    torch.manual_seed(0)
    quantizer = LFQuantizer(8, config).train()
    z = torch.randn(64, 10, requires_grad=True)  # (tokens, bits); process r gets rows r::2... as a contiguous half
    _, entropy = quantizer.entropies(z)
    entropy.backward()
    torch.save({"state": quantizer.state_dict(), "z": z.detach()}, tmp_path / "inputs.pt")
    ok(launch("tests.distributed_worker", "entropy", str(tmp_path), processes=2))
    for rank in range(2):
        got = torch.load(tmp_path / f"entropy-{rank}.pt")
        assert got["world_size"] == 2
        assert got["entropy"] == pytest.approx(float(entropy.detach()), rel=1e-6)
        half = slice(32 * rank, 32 * (rank + 1))
        # each process holds every process's copy of the gradient (DDP divides by 2): the whole-batch gradient
        torch.testing.assert_close(got["grad"] / 2, z.grad[half], rtol=1e-5, atol=1e-8)
    naive = LFQuantizer(8, config).train()  # the per-process entropy alone is not the global one
    naive.load_state_dict(quantizer.state_dict())
    assert float(naive.entropies(z[:32])[1].detach()) != pytest.approx(float(entropy.detach()), rel=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# the tokenizer trainer: 2 x B == 1 x 2B, resume across process counts, kill -9


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> dict[str, Path]:
    """8 videos + 8 images (mixed batches are all-video or all-image for every process), the equivalence YAML."""
    from PIL import Image

    from tests.helpers.media import pan_frames
    from trainers.data.video_io import write_video

    root = tmp_path_factory.mktemp("mixed")
    data = root / "data"
    data.mkdir()
    photos = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "immunohistochemistry", "cat")
    for i, photo in enumerate(photos):
        write_video(data / f"v{i}.mp4", pan_frames(9, (20, 24), photo), lossless=True)
        Image.fromarray(pan_frames(1, (20, 24), photo)[0]).save(data / f"i{i}.png")
    (root / "eq.yaml").write_text(EQUIVALENCE_YAML)
    (root / "maskgit.yaml").write_text(MASKGIT_YAML)
    return {"data": data, "yaml": root / "eq.yaml", "maskgit_yaml": root / "maskgit.yaml", "root": root}


def tokenizer_args(mixed: dict[str, Path], run: Path, batch: int, *extra: str) -> list[str]:
    return ["--data", str(mixed["data"]), "--out", str(run), "--preset", "tiny", "--max-steps", "9", "--seed", "1",
            "--batch-size", str(batch), "--config", str(mixed["yaml"]), *extra]


@pytest.fixture(scope="module")
def tokenizer_runs(mixed) -> dict[str, Path]:
    """One process x batch 4 and two processes x batch 2, uninterrupted, 9 updates (GAN from update 2)."""
    runs = {"one": mixed["root"] / "one", "two": mixed["root"] / "two"}
    ok(launch("scripts.train_tokenizer", *tokenizer_args(mixed, runs["one"], 4)))
    ok(launch("scripts.train_tokenizer", *tokenizer_args(mixed, runs["two"], 2), processes=2))
    assert world_size_of(runs["one"]) == 1 and world_size_of(runs["two"]) == 2
    assert "num_processes: 2" in (runs["two"] / "config.yaml").read_text()  # the launch is recorded
    return runs


@pytest.mark.slow
def test_tokenizer_two_processes_train_like_one_process_with_the_global_batch(tokenizer_runs):
    one, two = train_records(tokenizer_runs["one"]), train_records(tokenizer_runs["two"])
    assert any("discriminator.lecam" in one[s] for s in one)  # the GAN, LeCam and R1 ran
    assert [(one[s]["epoch"], one[s]["batch_index"]) for s in one] == [(two[s]["epoch"], two[s]["batch_index"])
                                                                      for s in two]
    # the same losses while float noise is small (Adam amplifies it over later GAN steps)
    assert_losses_close(one, two, TOKENIZER_LOSSES, steps=(1, 2, 3), rtol=1e-3)
    # After 5 updates the weights differ by float noise that jumps between seeds (likely LFQ's sign quantization:
    # a value near 0 flips a code bit): 2e-6 to 1.2e-4 at seeds 1-4, measured at 7d45d98 and 0a3f4e8 (wave 28's
    # still-image conv path moves which seeds land near the top). One update moves a weight by up to ~7e-4 here;
    # 4e-4 leaves 3x margin.
    for group in ("tokenizer", "loss", "ema"):
        assert max_diff(tensors(tokenizer_runs["one"], 5, group), tensors(tokenizer_runs["two"], 5, group)) < 4e-4


def crashed(mixed, name: str, batch: int, processes: int) -> Path:
    run = mixed["root"] / name
    result = launch("scripts.train_tokenizer", *tokenizer_args(mixed, run, batch), processes=processes,
                    faults=("--crash-at", "7"))
    assert result.returncode != 0
    if processes == 1:
        assert result.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*"))[-1] == "step-00000005"
    return run


@pytest.mark.slow
def test_kill_9_of_two_processes_then_resume_on_two_is_bitwise_identical(mixed, tokenizer_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(crashed(mixed, "crashed-two", 2, 2), run)
    ok(launch("scripts.train_tokenizer", *tokenizer_args(mixed, run, 2, "--resume", "latest"), processes=2))
    assert world_size_of(run) == 2
    expected, got = train_records(tokenizer_runs["two"]), train_records(run)
    for step in range(6, 10):
        assert {k: got[step][k] for k in TOKENIZER_LOSSES if k in got[step]} == \
               {k: expected[step][k] for k in TOKENIZER_LOSSES if k in expected[step]}, step
    for group in ("tokenizer", "ema", "loss", "opt_g", "opt_d"):
        assert max_diff(tensors(run, 9, group), tensors(tokenizer_runs["two"], 9, group)) == 0.0, group


@pytest.mark.slow
@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)])
def test_resume_on_another_process_count_continues_the_same_global_data_order(mixed, tokenizer_runs, tmp_path,
                                                                              before, after):
    run = tmp_path / "run"
    shutil.copytree(crashed(mixed, f"crashed-{before}", 4 // before, before), run)
    ok(launch("scripts.train_tokenizer", *tokenizer_args(mixed, run, 4 // after, "--resume", "latest"),
              processes=after))
    assert world_size_of(run) == after
    got = train_records(run)
    reference = train_records(tokenizer_runs["one" if after == 1 else "two"])
    positions = [(reference[s]["epoch"], reference[s]["batch_index"]) for s in range(6, 10)]
    assert [(got[s]["epoch"], got[s]["batch_index"]) for s in range(6, 10)] == positions  # no batch repeated/skipped
    # the first update after the resume starts from the saved state: the same losses as the run that saved it
    saver = train_records(tokenizer_runs["one" if before == 1 else "two"])
    assert_losses_close(saver, got, TOKENIZER_LOSSES, steps=(6,), rtol=1e-3)
    # a different global batch cannot continue the same order: refused with the batch size that would
    result = launch("scripts.train_tokenizer", *tokenizer_args(mixed, run, 3, "--resume", "latest"))
    assert result.returncode == 2 and "global batch of 4" in result.stderr and "--batch-size 4" in result.stderr


@pytest.mark.slow
def test_max_minutes_ends_both_processes_with_one_checkpoint(mixed, tmp_path):
    run = tmp_path / "run"
    ok(launch("scripts.train_tokenizer", "--data", str(mixed["data"]), "--out", str(run), "--preset", "tiny",
              "--batch-size", "2", "--max-steps", "100000", "--max-minutes", "0.05", processes=2, timeout=240))
    assert world_size_of(run) == 2
    summary = json.loads((run / "summary.json").read_text())
    assert 0 < summary["step"] < 100000
    assert (run / "checkpoints" / f"step-{summary['step']:08d}" / "COMPLETE.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_saves_then_ends_every_process_and_the_run_resumes(mixed, tokenizer_runs, tmp_path, processes):
    """A scheduler's pre-emption: SIGTERM during update 4 (on process 1 only when there are two) ends the run after
    that update on every process, with its checkpoint, export and summary written; the command exits 143 (what a
    SIGTERM'd process reports) with one line, so a script chaining stages stops too; --resume finishes the run."""
    run = tmp_path / "run"
    args = tokenizer_args(mixed, run, 4 // processes)
    result = launch("scripts.train_tokenizer", *args, processes=processes,
                    faults=("--sigterm-at", "3" if processes == 1 else "3:1"))
    if processes == 1:
        assert result.returncode == 143, result.stderr[-2000:]
    else:
        assert result.returncode != 0, result.stderr[-2000:]  # torchrun: a worker exited 143
    # every process says so in one line (with two, torchrun's own failure report follows: its traceback)
    assert result.stderr.count("stopped by SIGTERM after step 4; saved in") == processes, result.stderr[-3000:]
    assert "at step 4 (SIGTERM)" in result.stderr  # process 0 logs why, signalled or not
    assert processes == 2 or "Traceback" not in result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["step"], summary["world_size"]) == (4, processes)  # process 0 stopped with process 1
    assert (run / "checkpoints" / "step-00000004" / "COMPLETE.json").is_file()
    assert not (run / "checkpoints" / "step-00000005").exists()
    ok(launch("scripts.train_tokenizer", *args, "--resume", "latest", processes=processes))
    assert json.loads((run / "summary.json").read_text())["step"] == 9
    reference = train_records(tokenizer_runs["one" if processes == 1 else "two"])
    assert_losses_close(reference, train_records(run), ("generator.recon",), steps=(5,), rtol=1e-3)


@pytest.mark.slow
def test_decoder_only_on_two_processes_trains_like_one_and_keeps_the_encoder(mixed, tokenizer_runs, tmp_path):
    """`--decoder-only` under DDP: the frozen encoder is left out of the all-reduce and stays as loaded on every
    process; the decoder trains as one process with the global batch does."""
    from magvit2 import VideoTokenizer

    init = tokenizer_runs["one"] / "tokenizer"
    runs = {n: tmp_path / f"dec{n}" for n in (1, 2)}
    for n, run in runs.items():
        ok(launch("scripts.train_tokenizer", *tokenizer_args(mixed, run, 4 // n), "--init-from", str(init),
                  "--decoder-only", processes=n))
        assert world_size_of(run) == n
    one, two = train_records(runs[1]), train_records(runs[2])
    assert_losses_close(one, two, ("generator.recon",), steps=(1, 2, 3), rtol=1e-3)
    start = VideoTokenizer.from_pretrained(init)
    frozen = {name for name, p in start.named_parameters() if any(p is q for q in start.encoder_parameters())}
    weights = {n: tensors(run, 5, "tokenizer") for n, run in runs.items()}
    for name, value in start.state_dict().items():
        if name in frozen:
            assert torch.equal(weights[1][name], value) and torch.equal(weights[2][name], value), name
    assert max_diff(weights[1], weights[2]) < 1e-4
    assert max(float((weights[2][k] - v).abs().max()) for k, v in start.state_dict().items()
               if k in weights[2] and k not in frozen) > 1e-4


@pytest.mark.slow
def test_code_noise_on_two_processes_draws_what_one_process_does(mixed, tokenizer_runs, tmp_path):
    """`--code-noise` under DDP: the redrawn codes are drawn for the global batch and each process takes its rows, so
    two processes x batch 2 train as one x batch 4 does; the noise reaches the loss (it differs from a clean run's)."""
    init = tokenizer_runs["one"] / "tokenizer"
    runs = {}
    for name, n, noise in (("clean", 1, ()), ("one", 1, ("--code-noise", "0.3")), ("two", 2, ("--code-noise", "0.3"))):
        runs[name] = tmp_path / name
        ok(launch("scripts.train_tokenizer", *tokenizer_args(mixed, runs[name], 4 // n), "--init-from", str(init),
                  "--decoder-only", *noise, processes=n))
        assert world_size_of(runs[name]) == n
    clean, one, two = (train_records(runs[k]) for k in ("clean", "one", "two"))
    assert_losses_close(one, two, ("generator.recon",), steps=(1, 2, 3), rtol=1e-3)
    assert all(one[s]["generator.recon"] != pytest.approx(clean[s]["generator.recon"], rel=1e-2) for s in (1, 2, 3))


@pytest.mark.slow
def test_a_batch_one_process_cannot_load_is_dropped_by_every_process(mixed, tmp_path):
    """Process 1 fails to decode every image, so its half of each image batch is empty: both processes drop those
    global batches together (no hang, no collective mismatch) and train on the video batches."""
    (tmp_path / "tolerant.yaml").write_text("data:\n  max_bad_fraction: 0.9\n")
    run = tmp_path / "run"
    result = launch("scripts.train_tokenizer", "--data", str(mixed["data"]), "--out", str(run), "--preset", "tiny",
                    "--batch-size", "2", "--max-steps", "4", "--config", str(tmp_path / "tolerant.yaml"),
                    processes=2, faults=("--fail-images-on-rank", "1"), timeout=240)
    ok(result)
    assert world_size_of(run) == 2 and json.loads((run / "summary.json").read_text())["step"] == 4
    assert "injected load failure" in result.stderr  # process 1 reported its failures


@pytest.mark.parametrize("engine", ["FSDP", "DEEPSPEED"])
def test_fsdp_and_deepspeed_refuse_with_one_line(mixed, tmp_path, engine):
    result = launch("scripts.train_tokenizer", "--data", str(mixed["data"]), "--out", str(tmp_path / "run"),
                    env={f"ACCELERATE_USE_{engine}": "true"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "not supported" in result.stderr and "DDP" in result.stderr


# ---------------------------------------------------------------------------------------------------------------
# the MaskGit trainer: 2 x B == 1 x 2B


@pytest.mark.slow
def test_maskgit_two_processes_train_like_one_process_with_the_global_batch(tmp_path_factory, mixed):
    from tests.helpers.training import make_stage_two

    stage_two = make_stage_two(tmp_path_factory.mktemp("stage2"))
    runs = {}
    for name, processes, batch in (("one", 1, 4), ("two", 2, 2)):
        runs[name] = tmp_path_factory.mktemp(name) / "run"
        ok(launch("scripts.train_maskgit", "--tokenizer", str(stage_two["tokenizer"]), "--codes",
                  str(stage_two["codes"]), "--out", str(runs[name]), "--preset", "tiny", "--max-steps", "4",
                  "--seed", "2", "--batch-size", str(batch), "--config", str(mixed["maskgit_yaml"]),
                  processes=processes))
        assert world_size_of(runs[name]) == processes
    one, two = train_records(runs["one"]), train_records(runs["two"])
    assert_losses_close(one, two, ("loss", "mask_fraction", "drop_fraction"), steps=(1, 2, 3, 4), rtol=1e-3)
    for group in ("transformer", "ema"):
        assert max_diff(tensors(runs["one"], 4, group), tensors(runs["two"], 4, group)) < 1e-4


@pytest.mark.slow
def test_maskgit_lora_two_processes_train_like_one_process_and_hold_the_adapter_only(tmp_path_factory, mixed):
    from tests.helpers.training import LORA, make_lora_base, make_stage_two

    stage_two = make_stage_two(tmp_path_factory.mktemp("stage2-lora"))
    base = make_lora_base(stage_two, tmp_path_factory.mktemp("lora-base") / "base")
    runs = {}
    for name, processes, batch in (("one", 1, 4), ("two", 2, 2)):
        runs[name] = tmp_path_factory.mktemp(f"lora-{name}") / "run"
        ok(launch("scripts.train_maskgit", "--tokenizer", str(stage_two["tokenizer"]), "--codes",
                  str(stage_two["codes"]), "--out", str(runs[name]), "--preset", "tiny", "--max-steps", "4",
                  "--seed", "2", "--batch-size", str(batch), "--config", str(mixed["maskgit_yaml"]),
                  "--init-from", str(base), *LORA, processes=processes))
        assert world_size_of(runs[name]) == processes
    one, two = train_records(runs["one"]), train_records(runs["two"])
    assert_losses_close(one, two, ("loss", "mask_fraction", "drop_fraction"), steps=(1, 2, 3, 4), rtol=1e-3)
    for group in ("transformer", "ema"):
        a, b = tensors(runs["one"], 4, group), tensors(runs["two"], 4, group)
        assert all("lora_" in k for k in a if k not in ("initted", "step"))  # the adapter only, on both
        assert max_diff(a, b) < 1e-4
    assert (runs["two"] / "lora" / "adapter_model.safetensors").is_file()
