"""Disk space, on real small tmpfs mounts: a disk that fills during training stops the run with one line (the
checkpoint being written, the last complete one, how to resume; exit 2, no traceback) and `--resume latest` continues
once space is freed; the start-up check estimates what this run's checkpoints need (a `tiny` run fits in a few MB, a
`paper` one needs GB) and refuses in one line naming need vs free."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.fs_mounts import tmpfs
from trainers.checkpointing import CheckpointManager, CheckpointWriteError
from trainers.disk_space import check_disk_space, checkpoint_bytes, disk_full

REPO = Path(__file__).resolve().parents[1]
ENV = {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
TINY = ["--preset", "tiny", "--batch-size", "2", "--num-frames", "5", "--num-workers", "0"]


@pytest.fixture
def data(tmp_path, make_clip) -> Path:
    for photo in ("astronaut", "coffee", "chelsea", "rocket"):
        make_clip(f"data/{photo}.mp4", num_frames=9, size=(20, 24), photo=photo)
    return tmp_path / "data"


def train(*args: str, faults: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    import os

    target = [str(REPO / "tests" / "faults.py"), *faults, "scripts.train_tokenizer"] if faults else [
        "-m", "scripts.train_tokenizer"]
    return subprocess.run([sys.executable, *target, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **ENV}, timeout=400)


@pytest.mark.timeout(600)
def test_a_disk_that_fills_during_training_stops_in_one_line_and_resume_continues(data, tmp_path):
    with tmpfs(tmp_path / "disk", size="32m") as disk:
        run, filler = disk / "run", disk / "filler.bin"
        args = ["--data", str(data), "--out", str(run), *TINY, "--max-steps", "5", "--checkpoint-every", "1",
                "--keep-last", "2"]
        out = train(*args, faults=("--fill-disk-after", f"3:{filler}"))
        assert out.returncode == 2, out.stderr[-3000:]
        assert "Traceback" not in out.stderr
        [line] = [x for x in out.stderr.splitlines() if "error:" in x]
        assert line.startswith("magvit2-train-tokenizer: error: no space left on the device while writing checkpoint "
                               "step-00000004")
        assert "last complete checkpoint is step-00000003 (intact)" in line and line.endswith("--resume latest")
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000002", "step-00000003"]

        filler.unlink()  # space freed
        again = train(*args, "--resume", "latest")
        assert again.returncode == 0, again.stderr[-3000:]
        assert "resumed from" in again.stderr and "step-00000003 at step 3" in again.stderr
        assert json.loads((run / "summary.json").read_text())["step"] == 5
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000004", "step-00000005"]


@pytest.mark.timeout(300)
def test_the_start_up_check_sizes_this_runs_checkpoints(data, tmp_path):
    with tmpfs(tmp_path / "disk", size="8m") as disk:
        too_many = train("--data", str(data), "--out", str(disk / "a"), *TINY, "--max-steps", "1",
                         "--keep-last", "20")
        assert too_many.returncode == 2 and "Traceback" not in too_many.stderr, too_many.stderr[-3000:]
        [line] = [x for x in too_many.stderr.splitlines() if "error:" in x]
        assert "MB free under" in line and "needs about" in line and "21 checkpoint(s) of" in line
        assert line.endswith("or lower --keep-last")
        assert not (disk / "a" / "checkpoints").exists()  # refused before any step
        # the check asks for what this run will write, not a fixed margin: a tiny run keeping 2 checkpoints fits in 8 MB
        fits = train("--data", str(data), "--out", str(disk / "b"), *TINY, "--max-steps", "2", "--keep-last", "2",
                     "--checkpoint-every", "1")
        assert fits.returncode == 0, fits.stderr[-3000:]


def test_the_estimate_is_close_to_a_written_checkpoint_and_large_for_paper(tmp_path):
    from magvit2 import VideoTokenizer, preset_config
    from magvit2.losses import LossConfig, TokenizerLoss
    from trainers.optim import OptimConfig, build_optimizer

    def parts(preset: str):
        tok = VideoTokenizer(preset_config(preset))
        loss = TokenizerLoss(LossConfig(), tok.config)
        opts = {"opt_g": build_optimizer(tok, OptimConfig(lr=1e-4)),
                "opt_d": build_optimizer(loss.discriminator_parameters(), OptimConfig(lr=1e-4))}
        return {"tokenizer": tok, "ema": tok, "loss": loss}, opts

    modules, opts = parts("tiny")
    for p in modules["tokenizer"].parameters():  # one step, so the optimizer's state is what gets written
        p.grad = torch.zeros_like(p)
    for p in modules["loss"].discriminator_parameters():
        p.grad = torch.zeros_like(p)
    for o in opts.values():
        o.step()
    from trainers.state_flatten import flatten_state

    tensors = {k: m.state_dict() for k, m in modules.items()}
    for k, o in opts.items():
        tensors[k] = flatten_state(o.state_dict())[0]
    written = CheckpointManager(tmp_path).save(1, tensors, {"step": 1})
    size = sum(p.stat().st_size for p in written.iterdir())
    estimate = checkpoint_bytes(modules, opts)
    print(f"tiny checkpoint: written {size} bytes, estimated {estimate}")
    assert size <= estimate <= 1.5 * size

    with torch.device("meta"):  # sizes without memory
        modules, opts = parts("paper")
    big = checkpoint_bytes(modules, opts)
    print(f"paper checkpoint estimate: {big / 1e9:.2f} GB")
    assert big > 1e9


def test_check_disk_space_counts_checkpoints_already_there(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    manager = CheckpointManager(tmp_path, keep_last=3)
    module = torch.nn.Linear(1000, 1000)
    need = check_disk_space(manager, {"m": module}, {})
    one = checkpoint_bytes({"m": module}, {})
    assert need == 4 * one  # keep_last + 1, nothing exported
    manager.save(1, {"m": module.state_dict()}, {"step": 1})
    assert check_disk_space(manager, {"m": module}, {}) == 3 * one
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 3 * one - 1))
    with pytest.raises(OSError, match=r"free under .* needs about .* 3 checkpoint\(s\)") as info:
        check_disk_space(manager, {"m": module}, {}, keep_last_name="--keep-last")
    assert info.value.errno == errno.ENOSPC and str(info.value).endswith("--keep-last")


def test_a_full_disk_while_exporting_is_one_line_too(tmp_path, data, monkeypatch, one_thread):
    from scripts._cli import TRAINER_FLAGS
    from trainers.configs import build_config
    from trainers.tokenizer_trainer import TokenizerTrainer

    config = build_config("tokenizer", "tiny", None, {"run": {"max_steps": 1}})
    trainer = TokenizerTrainer(config, [data], tmp_path / "run", names=TRAINER_FLAGS)

    def full(folder):  # what safetensors raises on a full disk
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(trainer, "write_export", full)
    trainer.last_checkpoint = str(tmp_path / "run" / "checkpoints" / "step-00000007")
    with pytest.raises(CheckpointWriteError, match=r"while writing the export .*tokenizer \(step 0\); the last "
                                                   r"complete checkpoint is step-00000007 \(intact\): free space, "
                                                   r"then continue with --resume latest"):
        trainer.export()
    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded")) and not disk_full(OSError(errno.EIO, "I/O"))


def test_the_cli_says_a_full_disk_anywhere_in_one_line(capsys):
    from scripts._cli import ArgumentParser, run

    def main(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/run/metrics.jsonl")

    assert run(main, ArgumentParser(prog="magvit2-x"), []) == 2
    assert capsys.readouterr().err.strip() == ("magvit2-x: error: [Errno 28] No space left on device: "
                                               "'/run/metrics.jsonl'")
