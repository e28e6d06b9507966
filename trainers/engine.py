"""Pieces both training loops share: the accelerator, the run folder, stop conditions, EMA, state loading, hooks.

The loops themselves (`tokenizer_trainer.py`, `maskgit_trainer.py`) hold the step logic; nothing here knows a model
architecture.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from ema_pytorch import EMA
from torch import nn

from trainers.configs import EMAConfig, RunConfig
from trainers.data import MultiFolderDataset, VideoFolderDataset
from trainers.sampler import ResumableBatchSampler

StepHook = Callable[[Any, int], None]  # hook(trainer, completed_updates), before any checkpoint of that step


def make_accelerator(run: RunConfig) -> Accelerator:
    """An Accelerator on the best available device. Models are NOT passed to `prepare` (see optim.sync_gradients)."""
    return Accelerator(mixed_precision=run.mixed_precision, cpu=not torch.cuda.is_available())


def prepare_run_dir(run_dir: str | os.PathLike, resume: str | None, is_main: bool) -> Path:
    """Create (or check) the run folder before any data is touched: writable, and never silently reused."""
    run_dir = Path(run_dir)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-probe-{os.getpid()}"
        try:
            with open(probe, "wb") as f:
                f.write(b"ok")
                os.fsync(f.fileno())
        except OSError as e:
            raise PermissionError(f"cannot write to the run folder {run_dir}: {e}") from e
        finally:
            probe.unlink(missing_ok=True)
        has_checkpoints = any((run_dir / "checkpoints").glob("step-*")) if (run_dir / "checkpoints").is_dir() else False
        if has_checkpoints and resume is None:
            raise FileExistsError(f"{run_dir} already holds checkpoints; pass --resume latest to continue it, or "
                                  "choose a new --out")
        free_gb = shutil.disk_usage(run_dir).free / 2**30
        if free_gb < 1:
            raise OSError(f"only {free_gb:.2f} GB free under {run_dir}; checkpoints need more")
    return run_dir


class Clock:
    """Wall time of this invocation, for --max-minutes."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def minutes(self) -> float:
        return (time.monotonic() - self.start) / 60


def build_ema(model: nn.Module, config: EMAConfig) -> EMA:
    """EMA of `model` (created identically on every process; its `initted`/`step` counters checkpoint with it)."""
    return EMA(model, beta=config.beta, update_after_step=config.update_after_step,
               update_every=config.update_every, include_online_model=False)


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str, source: str | Path) -> None:
    """`load_state_dict(strict)` with an error naming the component, the file and the mismatched keys."""
    missing, unexpected = module.load_state_dict(dict(state), strict=False)
    if missing or unexpected:
        raise ValueError(f"{source}: the saved {what} does not match this model (different config?): "
                         f"missing {sorted(missing)[:6]}, unexpected {sorted(unexpected)[:6]}")


def infinite_batches(loader: torch.utils.data.DataLoader, dataset) -> Iterator[dict[str, Any]]:
    """Batches forever, epoch after epoch, from the sampler's stored position; all-failed batches are dropped."""
    while True:
        for batch in loader:
            if batch.get("num_skipped"):
                dataset.record_skipped(batch)
            if batch["video"] is not None:
                yield batch


def folder_datasets(dirs: list[Path], split: str | None, **kwargs) -> VideoFolderDataset | MultiFolderDataset:
    """One dataset over several folders. For split='val', folders whose split comes out empty are left out."""
    datasets = []
    for d in dirs:
        try:
            datasets.append(VideoFolderDataset(d, split=split, **kwargs))
        except ValueError as e:
            if split == "val" and "has no files" in str(e):
                continue
            raise
    if not datasets:
        raise ValueError(f"no validation clips in {[str(d) for d in dirs]}: raise data.val_fraction or pass --val-data")
    return datasets[0] if len(datasets) == 1 else MultiFolderDataset(datasets)


def sampler_of(loader: torch.utils.data.DataLoader) -> ResumableBatchSampler:
    return loader.batch_sampler  # type: ignore[return-value]


def crash_hook(at_step: int) -> StepHook:
    """Test hook: SIGKILL this process once `at_step` updates are done (before that step's checkpoint)."""

    def hook(trainer: Any, step: int) -> None:
        if step == at_step:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def train_loop(trainer: Any, batches: Iterator[dict[str, Any]], bar: Any, clock: Clock,
               postfix: Callable[[dict[str, float]], dict[str, str]]) -> dict[str, float]:
    """The loop both trainers run: `trainer.train_step` until `run.max_steps` or `run.max_minutes`, hooks after each
    update, validation every `val_every`, checkpoints every `checkpoint_every` and when time is up; then a final
    checkpoint and validation unless the last step already had them. Returns the last validation metrics.

    `trainer` provides: config.run, step, hooks, metrics, log, train_step(batches) -> logs | None (a skipped
    update), validate() -> dict, _save()."""
    c = trainer.config.run
    last_val: dict[str, float] = {}
    saved_at, validated_at = trainer.step, None
    while trainer.step < c.max_steps:
        logs = trainer.train_step(batches)
        for hook in trainer.hooks:
            hook(trainer, trainer.step)
        bar.update(1)
        if logs is not None:
            trainer.metrics.log(logs, step=trainer.step, kind="train")
            bar.set_postfix(refresh=False, **postfix(logs))  # shown at the next redraw (rate-limited)
        if trainer.step % c.val_every == 0:
            last_val, validated_at = trainer.validate(), trainer.step
            trainer.metrics.log(last_val, step=trainer.step, kind="val")
        out_of_time = c.max_minutes is not None and clock.minutes() >= c.max_minutes
        if trainer.step % c.checkpoint_every == 0 or out_of_time:
            trainer._save()
            saved_at = trainer.step
        if out_of_time:
            trainer.log.info("stopping after %.1f minutes at step %d (--max-minutes)", clock.minutes(), trainer.step)
            break
    bar.close()
    if saved_at != trainer.step:
        trainer._save()
    if validated_at != trainer.step:
        last_val = trainer.validate()
        trainer.metrics.log(last_val, step=trainer.step, kind="val")
    return last_val
