"""R1: kill -9 mid-training, then --resume latest, replays the uninterrupted run exactly (CPU), with negative
controls that prove the comparison catches a broken restore; plus the command's error handling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from trainers.logging import read_metrics

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": str(REPO)}
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from tests.helpers.media import pan_frames
    from trainers.data.video_io import write_video

    root = tmp_path_factory.mktemp("clips")
    for photo in PHOTOS:  # 6 clips, batch 2: 3 updates per epoch, so the crash lands after the first epoch
        write_video(root / f"{photo}.mp4", pan_frames(9, (20, 24), photo), lossless=True)
    return root


def train(clips: Path, run_dir: Path, *extra: str, check: bool = True, faults: tuple[str, ...] = ()
          ) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "tests" / "faults.py"), *faults, "scripts.train_tokenizer", "--data", str(clips),
           "--out", str(run_dir),
           "--preset", "tiny", "--max-steps", "9", "--seed", "3", *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def losses(run_dir: Path) -> dict[int, dict[str, float]]:
    """Last logged train record per step (a resumed run re-logs the steps after its checkpoint)."""
    return {r["step"]: r for r in read_metrics(run_dir / "metrics.jsonl", kind="train")}


def final_tensors(run_dir: Path) -> dict[str, dict]:
    step = run_dir / "checkpoints" / "step-00000009"
    return {name: load_file(str(step / f"{name}.safetensors")) for name in ("tokenizer", "ema", "loss", "opt_g",
                                                                            "opt_d")}


def same(a: dict, b: dict) -> bool:
    return all(a[g].keys() == b[g].keys() and all((a[g][k] == b[g][k]).all() for k in a[g]) for g in a)


@pytest.fixture(scope="module")
def baseline(clips, tmp_path_factory):
    run = tmp_path_factory.mktemp("baseline") / "run"
    train(clips, run)
    return run


def crashed_run(clips: Path, run: Path) -> None:
    result = train(clips, run, check=False, faults=("--crash-at", "7"))
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    complete = sorted(p.name for p in (run / "checkpoints").iterdir() if (p / "COMPLETE.json").exists())
    assert complete[-1] == "step-00000005"  # checkpoint_every=5: the kill came after update 7, before any save


@pytest.mark.slow
def test_kill_9_then_resume_reproduces_the_uninterrupted_run(clips, baseline, tmp_path):
    run = tmp_path / "run"
    crashed_run(clips, run)
    (run / "checkpoints" / "step-00000007.tmp-999999").mkdir()  # a half-written checkpoint from the crash
    train(clips, run, "--resume", "latest")
    expected, got = losses(baseline), losses(run)
    keys = [k for k in expected[9] if k.startswith(("generator.", "discriminator.")) or k.startswith("lr")]
    assert any(k.startswith("discriminator.") for k in keys)  # the GAN, R1 and LeCam were running
    for step in range(6, 10):
        assert {k: got[step][k] for k in keys} == {k: expected[step][k] for k in keys}, step
    assert same(final_tensors(run), final_tensors(baseline))


@pytest.mark.slow
@pytest.mark.parametrize("broken", ["optimizer", "sampler"])
def test_negative_control_a_broken_restore_is_detected(clips, baseline, tmp_path, broken):
    run = tmp_path / "run"
    crashed_run(clips, run)
    train(clips, run, "--resume", "latest", faults=("--break-restore", broken))
    expected, got = losses(baseline), losses(run)
    assert any(got[s]["generator.total"] != expected[s]["generator.total"] for s in range(6, 10))
    assert not same(final_tensors(run), final_tensors(baseline))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.train_tokenizer", *args], capture_output=True, text=True,
                          env=ENV, cwd=REPO, timeout=120)


def test_bad_arguments_exit_2_with_one_line(clips, tmp_path):
    tiny = ("--preset", "tiny")  # the default (base) builds a 128x128 model before it finds these mistakes
    cases = [
        ("--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r1"), *tiny),
        ("--data", str(clips), "--out", str(tmp_path / "r2"), "--num-frames", "4", *tiny),
        ("--data", str(clips), "--out", str(tmp_path / "r3"), "--preset", "huge"),
        ("--data", str(clips), "--out", str(tmp_path / "r4"), "--resume", "latest", *tiny),
        ("--data", str(clips), "--out", str(tmp_path / "r5"), "--config", str(tmp_path / "missing.yaml")),
    ]
    for args in cases:
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, (args, result.stderr)
        assert "error" in lines[0]


def test_corrupted_checkpoint_is_named_and_incomplete_ones_are_ignored(clips, tmp_path):
    run = tmp_path / "run"
    train(clips, run, "--max-steps", "5")
    step5 = run / "checkpoints" / "step-00000005"
    weights = step5 / "tokenizer.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])  # truncated
    result = run_cli("--data", str(clips), "--out", str(run), "--preset", "tiny", "--resume", "latest",
                     "--max-steps", "6")
    assert result.returncode == 2 and "tokenizer.safetensors" in result.stderr
    (step5 / "COMPLETE.json").unlink()  # without its marker the checkpoint does not exist for --resume latest
    result = run_cli("--data", str(clips), "--out", str(run), "--preset", "tiny", "--resume", "latest",
                     "--max-steps", "6")
    assert result.returncode == 2 and "no complete checkpoint" in result.stderr
