"""The base trainer both training loops share: accelerator, run folder, EMA, non-finite guard, metrics, the loop
(`fit`), checkpoints (save / restore, with the data position) and the export of the trained model.

A subclass builds its models, optimizers and data in `__init__`, then calls `self.start(resume_path)`, and provides:

* `checkpointed` {group: module} and `optimizers` {group: optimizer}: what a checkpoint holds (one safetensors file
  per group, optimizer state flattened by `trainers.checkpointing.flatten_state`);
* `loader`: a DataLoader whose batch sampler is a `ResumableBatchSampler` (the data position of a checkpoint);
* `train_step(batches) -> logs | None`: one update; `validate() -> metrics`;
* `resolved_config()` (written to config.yaml and every checkpoint) and `check_resume(state, path)`;
* `write_export(folder)`: the trained model as a `from_pretrained` folder at RUN_DIR/<export_name>;
* `summary(last_val)`, `postfix(logs)`: what `fit` reports. Optional: `extra_state()` / `load_extra_state(state)`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from ema_pytorch import EMA
from torch import nn

from magvit2.serialization import atomic_dir, atomic_write_text, load_state_strict
from trainers.checkpointing import CheckpointCorruptError, CheckpointManager, flatten_state, unflatten_state
from trainers.configs import EMAConfig, RunConfig, dump_yaml
from trainers.data.batches import ResumableBatchSampler
from trainers.guards import NonFiniteGuard
from trainers.logging import MetricsLogger, get_logger, progress_bar
from trainers.optim import set_lr


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


def build_ema(model: nn.Module, config: EMAConfig) -> EMA:
    """EMA of `model` (created identically on every process; its `initted`/`step` counters checkpoint with it)."""
    return EMA(model, beta=config.beta, update_after_step=config.update_after_step,
               update_every=config.update_every, include_online_model=False)


class Clock:
    """Wall time of this invocation, for --max-minutes."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def minutes(self) -> float:
        return (time.monotonic() - self.start) / 60


class Trainer:
    """What both trainers share; see the module docstring for what a subclass provides."""

    name = "train"  # progress-bar label
    export_name = "model"  # RUN_DIR/<export_name>: the exported from_pretrained folder
    checkpointed: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    loader: torch.utils.data.DataLoader

    def __init__(self, config: Any, run_dir: str | os.PathLike, resume: str | None, logger_name: str) -> None:
        self.config = config
        self.accelerator = make_accelerator(config.run)
        self.device, self.is_main = self.accelerator.device, self.accelerator.is_main_process
        self.run_dir = prepare_run_dir(run_dir, resume, self.is_main)
        self.log = get_logger(logger_name, is_main=self.is_main)
        self.ckpt = CheckpointManager(self.run_dir, keep_last=config.run.keep_last, is_main=self.is_main)
        self.resume_path = self.ckpt.resolve(resume) if resume is not None else None  # fail before any heavy work
        self.guard = NonFiniteGuard(config.run.nonfinite)
        self.step = 0
        self.last_checkpoint = "none"

    def start(self) -> None:
        """End of a subclass's `__init__`: open the metrics, then restore the checkpoint or write config.yaml."""
        run = self.config.run
        self.metrics = MetricsLogger(self.run_dir, is_main=self.is_main, tensorboard=run.tensorboard,
                                     wandb={"project": run.wandb_project} if run.wandb_project else None)
        self._position = tuple(self.sampler.state_dict().values())
        if self.resume_path is not None:
            self.restore(self.resume_path)
        elif self.is_main:
            dump_yaml(self.resolved_config(), self.run_dir / "config.yaml")

    @property
    def sampler(self) -> ResumableBatchSampler:
        return self.loader.batch_sampler  # type: ignore[return-value]

    # hooks a subclass provides -------------------------------------------------------------------------------------

    def train_step(self, batches: Iterator[dict[str, Any]]) -> dict[str, float] | None:
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        raise NotImplementedError

    def resolved_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def check_resume(self, state: dict[str, Any], path: Path) -> None:
        """Raise ValueError when the checkpoint at `path` was written for another architecture."""

    def write_export(self, folder: Path) -> None:
        raise NotImplementedError

    def summary(self, last_val: dict[str, float]) -> dict[str, Any]:
        return dict(last_val)

    def postfix(self, logs: dict[str, float]) -> dict[str, str]:
        return {}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # data --------------------------------------------------------------------------------------------------------

    def batches(self) -> Iterator[dict[str, Any]]:
        """Batches forever, epoch after epoch, from the sampler's stored position; batches whose clips all failed
        to decode are counted by the dataset and dropped."""
        while True:
            for batch in self.loader:
                if batch.get("num_skipped"):
                    self.train_set.record_skipped(batch)
                if batch.get("video", batch.get("codes")) is not None:
                    yield batch

    def next_batch(self, batches: Iterator[dict[str, Any]]) -> dict[str, Any]:
        """The next batch; the consumed data position (the DataLoader may have prefetched further) moves past it."""
        batch = next(batches)
        self._position = (batch["epoch"], batch["batch_index"] + 1)
        return batch

    # one update's tail ---------------------------------------------------------------------------------------------

    def optimizer_step(self, optimizer: torch.optim.Optimizer, lr: float) -> None:
        """Set the LR and step (through the GradScaler under fp16)."""
        set_lr(optimizer, lr)
        if self.accelerator.scaler is not None:
            self.accelerator.scaler.step(optimizer)
        else:
            optimizer.step()

    def logs_due(self, ok: bool) -> bool:
        """Log every run.log_every updates, and every skipped one (call after `self.step` advanced)."""
        return self.step % self.config.run.log_every == 0 or not ok

    # checkpoints ---------------------------------------------------------------------------------------------------

    def save(self) -> None:
        """A checkpoint of step `self.step` (written by the main process; every process waits for it), then the
        export of the model."""
        tensors = {name: module.state_dict() for name, module in self.checkpointed.items()}
        epoch, batch_index = self._position
        state = {"step": self.step, "sampler": {"epoch": epoch, "batch_index": batch_index},
                 "guard": self.guard.state_dict(), "config": self.resolved_config(), **self.extra_state()}
        for name, optimizer in self.optimizers.items():
            tensors[name], state[f"{name}_meta"] = flatten_state(optimizer.state_dict())
        if self.accelerator.scaler is not None:
            state["scaler"] = self.accelerator.scaler.state_dict()
        if self.is_main:  # every process holds identical state; one writes it
            self.last_checkpoint = str(self.ckpt.save(self.step, tensors, state))
            self.export()
            self.log.info("step %d: checkpoint %s", self.step, self.last_checkpoint)
        self.accelerator.wait_for_everyone()

    def export(self) -> Path | None:
        """The trained model as a from_pretrained folder at RUN_DIR/<export_name>/ (atomically; main process)."""
        if not self.is_main:
            return None
        return atomic_dir(self.write_export, self.run_dir / self.export_name)

    def restore(self, path: Path) -> None:
        """Continue from a checkpoint: weights, optimizers, data position, guard, scaler, counters."""
        tensors, state = self.ckpt.load(path)
        self.check_resume(state, path)
        for name in [*self.checkpointed, *self.optimizers]:
            if name not in tensors:
                raise CheckpointCorruptError(f"{path}: no {name}.safetensors (written by another trainer?)")
        for name, module in self.checkpointed.items():
            load_state_strict(module, tensors[name], path / f"{name}.safetensors", f"saved {name} weights")
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(unflatten_state(tensors[name], state[f"{name}_meta"]))
        self.sampler.load_state_dict(state["sampler"])
        self._position = (int(state["sampler"]["epoch"]), int(state["sampler"]["batch_index"]))
        if "scaler" in state and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.guard.load_state_dict(state["guard"])
        self.step = int(state["step"])
        self.load_extra_state(state)
        self.last_checkpoint = str(path)
        self.log.info("resumed from %s at step %d", path, self.step)

    # the loop ------------------------------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train until run.max_steps updates or run.max_minutes: validate every val_every, checkpoint (and export)
        every checkpoint_every and when time is up; then a final checkpoint and validation unless the last step
        already had them. Writes RUN_DIR/summary.json and returns it."""
        c, clock = self.config.run, Clock()
        batches = self.batches()
        bar = progress_bar(c.max_steps, disable=not self.is_main, initial=self.step, desc=self.name)
        last_val: dict[str, float] = {}
        saved_at, validated_at = self.step, None
        while self.step < c.max_steps:
            logs = self.train_step(batches)
            bar.update(1)
            if logs is not None:
                self.metrics.log(logs, step=self.step, kind="train")
                bar.set_postfix(refresh=False, **self.postfix(logs))  # shown at the next redraw (rate-limited)
            if self.step % c.val_every == 0:
                last_val, validated_at = self.validate(), self.step
                self.metrics.log(last_val, step=self.step, kind="val")
            out_of_time = c.max_minutes is not None and clock.minutes() >= c.max_minutes
            if self.step % c.checkpoint_every == 0 or out_of_time:
                self.save()
                saved_at = self.step
            if out_of_time:
                self.log.info("stopping after %.1f minutes at step %d (--max-minutes)", clock.minutes(), self.step)
                break
        bar.close()
        if saved_at != self.step:
            self.save()
        if validated_at != self.step:
            last_val = self.validate()
            self.metrics.log(last_val, step=self.step, kind="val")
        summary = {"step": self.step, "minutes": clock.minutes(), **self.summary(last_val)}
        if self.is_main:
            atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        self.metrics.close()
        return summary
