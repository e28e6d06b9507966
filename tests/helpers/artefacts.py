"""Checkpoints and run outputs: a saved checkpoint to corrupt, JSON rewritten in place, and what a MaskGit run
logged and saved (to compare an interrupted run with an uninterrupted one)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from trainers import checkpointing as ckpt
from trainers.logging import read_metrics

# the train-record keys a resumed MaskGit run must reproduce
LOGGED = ("loss", "accuracy", "mask_fraction", "drop_fraction", "lr", "grad_norm")


def saved_checkpoint(root: Path, state: dict | None = None) -> ckpt.CheckpointManager:
    """A complete step-3 checkpoint of one tensor group under `root` (not any trainer's)."""
    manager = ckpt.CheckpointManager(root)
    state = state or {"step": 3, "sampler": {"epoch": 0, "batch_index": 1}, "config": {},
                      "guard": {"total_skipped": 0, "consecutive": {}}}
    manager.save(3, {"model": {"w": torch.ones(2)}}, state)
    return manager


def rewrite(path: Path, change) -> None:
    """Applies `change` (a function that edits a dict in place) to the JSON file at `path`."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def logged(run_dir: Path) -> dict[int, dict[str, float]]:
    """Last logged train record per step (a resumed run re-logs the steps after its checkpoint)."""
    return {r["step"]: {k: r[k] for k in LOGGED} for r in read_metrics(run_dir / "metrics.jsonl", kind="train")}


def final_tensors(run_dir: Path) -> dict[str, dict]:
    """The transformer, EMA and optimizer tensors of a 9-update MaskGit run's last checkpoint."""
    step = run_dir / "checkpoints" / "step-00000009"
    return {name: load_file(str(step / f"{name}.safetensors")) for name in ("transformer", "ema", "optimizer")}


def same(a: dict, b: dict) -> bool:
    """Whether two {group: {name: tensor}} dicts hold the same names and bitwise equal tensors."""
    return all(a[g].keys() == b[g].keys() and all(torch.equal(a[g][k], b[g][k]) for k in a[g]) for g in a)
