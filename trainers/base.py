"""The base trainer both training loops share: accelerator, run folder, EMA, non-finite guard, metrics, the loop
(`fit`); checkpoints (save / restore, with the data position) and the export of the trained model come from
`trainers.run_checkpoints`.

Distribution belongs to accelerate: the models and the data loader go through `accelerator.prepare` (DDP, and the
loader's global batches split across processes, `split_batches=True`); every decision that ends or skips a step
(time up, SIGTERM, the non-finite guard, a checkpoint that cannot be read) is reduced over processes so all of them
do the same thing. Optimizers are not wrapped: one GradScaler serves the GAN's two optimizers (accelerate's
AcceleratedOptimizer would update it once per optimizer); `update` unscales every group, and either all of them
step or none does.

The subclass contract. A subclass builds its models, optimizers and data in `__init__` (after `super().__init__`),
then calls `self.start()`. It provides:

* `checkpointed` {group: module} and `optimizers` {group: optimizer}: what a checkpoint holds (one safetensors file
  per group, optimizer state flattened by `trainers.checkpointing.flatten_state`);
* `ema`: the `ema_pytorch.EMA` of the trained model (updated by `update` after every applied step);
* `loader`: a DataLoader whose batch sampler is a `ResumableBatchSampler` (the data position of a checkpoint), and
  `train_set`, its dataset (`record_skipped(batch)` counts load failures; `stats` for the summary). A batch is a
  dict with `index` (b,) (the rows this process loaded; 0 rows when all its clips failed), `epoch`, `batch_index`,
  optionally `num_skipped` / `skipped`; `batches()` adds `rows` = (offset, total): this process's rows within the
  global batch that was actually loaded (all processes' `index` lengths, summed);
* `train_step(batches) -> logs | None`: update number `self.step`, nanoGPT-style: for each of `self.grad_accum`
  micro-batches `self.next_batch(batches)`, forward, `self.backward(loss)`; then exactly one `self.update(...)`
  with the step's optimizer groups, which clips, decides (guard, fp16 overflow, stop), steps, updates the EMA and
  counts the step. Returns its log values (tensors are fine: they are read once, at a log step) when
  `self.logs_due(ok)`, else None;
* `validate() -> metrics`; `resolved_config()` (written to config.yaml and every checkpoint) and
  `check_resume(state, path)`; `write_export(folder)`: the trained model as a `from_pretrained` folder at
  RUN_DIR/<export_name>; `summary(last_val)`, `postfix(logs)`: what `fit` reports. Optional: `extra_state()` /
  `load_extra_state(state)`, `export_modules()` (what the export holds, for the disk-space check; default the EMA).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from magvit2.serialization import atomic_write_text
from trainers.argnames import KEYWORDS, ArgNames
from trainers.checkpointing import CheckpointManager
from trainers.configs import dump_yaml
from trainers.data.batches import ResumableBatchSampler
from trainers.data.remote import fetch_shards, is_remote
from trainers.disk_space import check_disk_space
from trainers.guards import NonFiniteGuard
from trainers.horizon import ScheduleHorizon
from trainers.logging import MetricsLogger, as_floats, get_logger, progress_bar
from trainers.optim import OptimizerGroup, clip_gradients, set_lr
from trainers.process_group import ProcessGroupRun
from trainers.publish import check_push
from trainers.rank_zero import on_local_main, same_outcome
from trainers.run_checkpoints import CheckpointedRun
from trainers.run_setup import Clock, absolute, make_accelerator, prepare_run_dir
from trainers.stopping import TrainingStopped, catch_sigterm, restore_sigterm


class Trainer(ProcessGroupRun, CheckpointedRun):
    """What both trainers share; see the module docstring for what a subclass provides."""

    name = "train"  # progress-bar label
    export_name = "model"  # RUN_DIR/<export_name>: the exported from_pretrained folder
    checkpointed: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    loader: torch.utils.data.DataLoader

    def __init__(self, config: Any, run_dir: str | os.PathLike, resume: str | None, logger_name: str,
                 names: ArgNames = KEYWORDS) -> None:
        self.config = config
        self.names = names  # how errors spell the inputs: the caller's flags or keywords
        self.accelerator, launcher_accum = make_accelerator(config.run, absolute(run_dir))
        acc = self.accelerator
        self.device, self.is_main = acc.device, acc.is_main_process
        self.world_size, self.rank = acc.num_processes, acc.process_index
        self.rank_key = (self.rank,) if self.rank else ()  # per-process seeds; process 0 draws what one process does
        self.run_dir = self.on_every_process(lambda: prepare_run_dir(run_dir, resume, self.is_main, names))
        self.log = get_logger(logger_name, is_main=self.is_main)
        self.ckpt = CheckpointManager(self.run_dir, keep_last=config.run.keep_last, is_main=self.is_main,
                                      resume_hint=names.give("resume", "latest"))
        # fail before any heavy work
        self.resume_path = (self.on_every_process(lambda: absolute(self.ckpt.resolve(resume))) if resume is not None
                            else None)
        self.guard = NonFiniteGuard(config.run.nonfinite)
        self.step = 0
        self.last_checkpoint = "none"
        self.stop_requested = False  # set by SIGTERM; acted on at the end of the step, by every process
        self.stop_agreed = False  # every process's stop decision for this step (time up or SIGTERM anywhere)
        self.sigterm_agreed = False  # ... and whether a SIGTERM anywhere was why
        self.clock: Clock | None = None  # the wall clock of `fit`, for run.max_minutes
        self.fit_start_step = 0  # the step `fit` started from (this invocation's step rate)
        # micro-batches per update: the config's, else the launcher's (accelerate launch --gradient_accumulation_steps)
        self.grad_accum = config.grad_accum or launcher_accum

    def start(self) -> None:
        """End of a subclass's `__init__`: resolve run.max_epochs, open the metrics (and the trackers, on the first
        record), then restore the checkpoint or write config.yaml."""
        run = self.config.run
        check_push(run)
        if run.max_epochs is not None:  # diffusers' --num_train_epochs: the step limit from the data size
            steps = math.ceil(run.max_epochs * len(self.sampler) / self.grad_accum)
            self.log.info("run.max_epochs %d: %d global batches per epoch, %d per update: %d updates (run.max_steps)",
                          run.max_epochs, len(self.sampler), self.grad_accum, steps)
            self.config = dataclasses.replace(self.config, run=dataclasses.replace(run, max_steps=steps))
        run = self.config.run
        self.horizon = ScheduleHorizon(run.schedule_horizon, run.max_steps, run.max_minutes)
        same_outcome(lambda: self.is_main and check_disk_space(
            self.ckpt, self.checkpointed, self.optimizers, self.export_modules(), self.run_dir / self.export_name,
            self.names["run_dir"], self.names["keep_last"]))  # before any step: the whole run fits, or one line
        self.push_error: Exception | None = None
        self.metrics = MetricsLogger(self.run_dir, is_main=self.is_main, accelerator=self.accelerator,
                                     project_name=run.wandb_project or run.tracker_project_name,
                                     config=self.resolved_config())
        self._position = tuple(self.sampler.state_dict().values())
        if self.resume_path is not None:
            self.restore(self.resume_path)
        elif self.is_main:
            dump_yaml({**self.resolved_config(), "launch": self.launch()}, self.run_dir / "config.yaml")

    def launch(self) -> dict[str, Any]:
        """How this run was launched, as the accelerator resolved it (flags > launcher config > defaults)."""
        acc = self.accelerator
        return {"distributed_type": str(acc.distributed_type.value), "num_processes": self.world_size,
                "mixed_precision": acc.mixed_precision, "device": str(self.device), "grad_accum": self.grad_accum,
                "global_batch_size": self.sampler.batch_size}

    def local_data(self, source: str | os.PathLike | None) -> Path | None:
        """A data folder as an absolute local path: a URL or `pipe:` source of packed shards is fetched into the shard
        cache first (`trainers.data.remote`): one process per machine downloads while the others of that machine wait
        for it without a collective; then every process learns whether any download failed and all raise the same
        error (`trainers.rank_zero`)."""
        if source is None:
            return None
        if not is_remote(source):
            return absolute(source)
        folder = Path(same_outcome(lambda: on_local_main(lambda: fetch_shards(str(source)), f"the download of {source}",
                                                         share=str)))
        self.log.info("shards from %s are read from %s", source, folder)
        return folder

    @property
    def sampler(self) -> ResumableBatchSampler:
        """Our sampler inside the (prepared) loader: the global batches and the data position."""
        sampler = self.loader.batch_sampler
        while not isinstance(sampler, ResumableBatchSampler):  # accelerate's BatchSamplerShard wraps it
            sampler = sampler.batch_sampler
        return sampler

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

    def hub_export(self) -> tuple[Any, dict[str, Any]]:
        """(the exported model, its training record) for `push_to_hub`: an object with the public `push_to_hub`."""
        raise NotImplementedError

    def summary(self, last_val: dict[str, float]) -> dict[str, Any]:
        return dict(last_val)

    def postfix(self, logs: dict[str, float]) -> dict[str, str]:
        return {}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def export_modules(self) -> list[nn.Module]:
        """What `write_export` saves, for the disk-space estimate (default: the EMA)."""
        return [self.checkpointed["ema"]] if "ema" in self.checkpointed else []

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # data --------------------------------------------------------------------------------------------------------

    def batches(self) -> Iterator[dict[str, Any]]:
        """Batches forever, epoch after epoch, from the sampler's stored position, each with `rows` = (offset,
        total) added (see the module docstring). Load failures are counted by the dataset; a global batch that any
        process could load nothing of is dropped by every process. When nothing loadable remains
        (MAX_FAILED_BATCHES dropped batches in a row, or a pass over the data without one good batch) the run stops
        with a `DataQualityError` instead of spinning. One collective per batch carries every process's decision."""
        from trainers.data.folders import MAX_FAILED_BATCHES, DataQualityError, nothing_loadable

        failed_in_a_row = 0
        while True:
            good = 0
            for batch in self.loader:
                error = None
                if batch.get("num_skipped"):
                    try:  # counts load failures; too many raise, on every process together (below)
                        self.train_set.record_skipped(batch)
                    except DataQualityError as e:
                        error = e
                rows = len(batch["index"])
                too_many_bad, counts = self._agree_on_batch(error is not None, rows)
                if too_many_bad:
                    raise error or DataQualityError("another process found too many unreadable files (its error "
                                                    "lists them)")
                if min(counts) > 0:  # every process has rows to train on
                    failed_in_a_row, good = 0, good + 1
                    yield {**batch, "rows": (sum(counts[: self.rank]), sum(counts))}
                    continue
                failed_in_a_row += 1
                if failed_in_a_row >= MAX_FAILED_BATCHES:
                    raise nothing_loadable(self.train_set, f"{failed_in_a_row} batches in a row")
            if good == 0:
                raise nothing_loadable(self.train_set, "every batch of a pass over the training data")

    def _agree_on_batch(self, too_many_bad: bool, rows: int) -> tuple[bool, list[int]]:
        """(any process found too many bad files, the rows each process loaded): one all-reduce of a small vector
        (slot 0: the flag; slot 1 + r: process r's rows)."""
        if self.world_size == 1:
            return too_many_bad, [rows]
        v = torch.zeros(1 + self.world_size, dtype=torch.float64, device=self.device)
        v[0], v[1 + self.rank] = float(too_many_bad), float(rows)
        dist.all_reduce(v)
        values = v.tolist()
        return values[0] > 0, [int(x) for x in values[1:]]

    def next_batch(self, batches: Iterator[dict[str, Any]]) -> dict[str, Any]:
        """The next batch; the consumed data position (the DataLoader may have prefetched further) moves past it."""
        batch = next(batches)
        self._position = (batch["epoch"], batch["batch_index"] + 1)
        return batch

    # one update ----------------------------------------------------------------------------------------------------

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of one micro-batch's loss, divided by the micro-batches per update (once: the accelerator's own
        accumulation is 1, see `make_accelerator`), scaled by the GradScaler under fp16."""
        self.accelerator.backward(loss / self.grad_accum)

    def update(self, phase: str, groups: list[OptimizerGroup], losses: dict[str, torch.Tensor]) -> bool:
        """The tail of update `self.step`, in the one order that is right under fp16 and on many processes:

        1. unscale every group's gradients (fp16), then clip each group to its norm;
        2. decide, the same on every process, with one host sync (and one small all-reduce on several processes):
           a non-finite loss anywhere -> the guard raises or skips; a non-finite gradient norm -> under fp16 an
           overflow (no group steps, the scale halves), otherwise the guard's business; time up or SIGTERM anywhere
           -> `self.stop_agreed` (acted on by `fit` after this step);
        3. all groups step at their LRs, or none does; the GradScaler updates on every step that unscaled (a skipped
           one too, else the next `unscale_` fails); the EMA follows an applied step only;
        4. every optimizer's gradients are zeroed and `self.step` counts the update.

        Returns True when the optimizers stepped. The groups' pre-clip gradient norms are left in
        `self.grad_norms` {group name: tensor} for logging."""
        scaler = self.accelerator.scaler
        if scaler is not None:
            for g in groups:
                scaler.unscale_(g.optimizer)
        norms = {g.name: clip_gradients(g.params, g.max_norm) for g in groups}
        finite = [torch.isfinite(v.detach()).all().to(self.device) for v in losses.values()]
        loss_bad = ~torch.stack(finite).all()
        norm_bad = ~torch.isfinite(torch.stack([n.float().to(self.device) for n in norms.values()])).all()
        local = torch.stack([loss_bad, norm_bad]).float()
        time_up = (self.config.run.max_minutes is not None and self.clock is not None
                   and self.clock.minutes() >= self.config.run.max_minutes)
        wants_stop = 2.0 if self.stop_requested else float(time_up)  # the max says whether any process had SIGTERM
        horizon = self.horizon.signal(self.step, self.fit_start_step, self.clock.minutes() if self.clock else 0.0)
        local = torch.cat([local, torch.tensor([wants_stop, *horizon], device=self.device)])
        agreed = local.clone()
        if self.world_size > 1:
            dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
        *flags, stop_any, ready_any, neg_estimate = torch.cat([local[:3], agreed]).tolist()
        loss_bad_here, _, _, loss_bad_any, norm_bad_any = (bool(x) for x in flags)
        self.stop_agreed, self.sigterm_agreed = stop_any > 0, stop_any == 2
        if (steps := self.horizon.agree(ready_any, neg_estimate, self.step)) is not None:
            self.log.info("step %d: the LR schedule decays over %d steps, what fits in run.max_minutes %.4g at "
                          "this rate (run.schedule_horizon)", self.step + 1, steps, self.config.run.max_minutes)
        overflow = scaler is not None and norm_bad_any
        ok = True
        if loss_bad_any or (norm_bad_any and scaler is None):  # rare: the guard names the values, raises or skips
            norm = None if scaler is not None else torch.stack([n.float() for n in norms.values()]).max()
            ok = self.guard.check(self.step, phase, losses, norm, last_checkpoint=self.last_checkpoint,
                                  failed_elsewhere=not loss_bad_here and not (norm_bad_any and scaler is None))
        else:
            self.guard.passed(phase)
        ok = ok and not overflow
        if ok:
            for g in groups:  # gradients are finite (checked above): a plain step, no second inf check
                set_lr(g.optimizer, g.lr)
                g.optimizer.step()
        if scaler is not None:
            scaler.update()  # halves the scale when any group's gradients overflowed
        if ok:
            self.ema.update()
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        self.grad_norms = norms
        self.step += 1
        return ok

    def logs_due(self, ok: bool) -> bool:
        """Log every run.log_every updates, and every skipped one (call after `update`)."""
        return self.step % self.config.run.log_every == 0 or not ok

    # the loop ------------------------------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train until run.max_steps updates or run.max_minutes: validate every val_every, checkpoint (and export)
        every checkpoint_every and when time is up; then a final checkpoint and validation unless the last step
        already had them. Writes RUN_DIR/summary.json and returns it; after a SIGTERM (on any process), raises
        `trainers.stopping.TrainingStopped` on every process once all that is written."""
        c = self.config.run
        clock = self.clock = Clock()
        self.fit_start_step = self.step
        if c.max_minutes is not None:  # two limits: say plainly that the step limit may come first
            self.log.info("the run stops at whichever comes first: %.4g minutes or step %d (run.max_steps; "
                          "--max-steps raises it)", c.max_minutes, c.max_steps)
        batches = self.batches()
        previous = catch_sigterm(self.request_stop)
        bar = progress_bar(c.max_steps, disable=not self.is_main, initial=self.step, desc=self.name)
        last_val: dict[str, float] = {}
        saved_at, validated_at = self.step, None
        while self.step < c.max_steps:
            logs = self.train_step(batches)
            bar.update(1)
            if logs is not None:  # the same steps on every process (the guard's decision is shared)
                epoch, batch_index = self._position  # the data position reached: global batches of the epoch
                logs = {**self.mean_over_processes(as_floats(logs)), "epoch": float(epoch),
                        "batch_index": float(batch_index)}
                self.metrics.log(logs, step=self.step, kind="train")
                bar.set_postfix(refresh=False, **self.postfix(logs))  # shown at the next redraw (rate-limited)
            if self.step % c.val_every == 0:
                last_val, validated_at = self.validate(), self.step
                self.log_validation(last_val)
            stop = self.stop_agreed  # decided by every process together in `update`
            if self.step % c.checkpoint_every == 0 or stop:
                self.save()
                saved_at = self.step
            if stop:
                why = "SIGTERM" if self.sigterm_agreed else "--max-minutes"
                self.log.info("stopping after %.1f minutes at step %d (%s)", clock.minutes(), self.step, why)
                break
        bar.close()
        batches.close()  # ends the DataLoader iterator: its workers shut down now, not at interpreter exit
        restore_sigterm(previous)
        if saved_at != self.step:
            self.save()
        if validated_at != self.step:
            last_val = self.validate()
            self.log_validation(last_val)
        summary = {"step": self.step, "minutes": clock.minutes(), "world_size": self.world_size,
                   **self.summary(last_val)}
        if self.is_main:
            atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        self.metrics.close()
        if c.push_to_hub and self.any_process(self.push_error is not None):  # decided together: nobody waits
            raise ValueError(f"training finished ({self.run_dir / self.export_name}) but the upload to "
                             f"{c.hub_model_id} failed: {self.push_error or 'on the main process'}")
        if self.any_process(self.stop_requested):  # a SIGTERM anywhere: every process ends alike, all saved
            raise TrainingStopped(self.step, self.run_dir)
        return summary

    def request_stop(self) -> None:
        """SIGTERM's handler during `fit`: stop cleanly at the end of this step (checkpoint, export, summary), then
        raise `TrainingStopped`."""
        self.stop_requested = True

    def log_validation(self, values: dict[str, float]) -> None:
        """A validation's numbers to metrics.jsonl and the trackers, and its samples (RUN_DIR/samples/step-N/*.gif,
        if it wrote any) to the trackers that take media."""
        self.metrics.log(values, step=self.step, kind="val")
        self.metrics.log_samples(self.run_dir / "samples" / f"step-{self.step:08d}", self.step)
