"""Checkpoints of a training run: `save` (state + tensors, written by the main process, every process waits), the
export of the trained model, and `restore` (weights, optimizers, data position, guard, scaler, counters). A mixin
of `trainers.base.Trainer`, whose attributes it uses (`checkpointed`, `optimizers`, `ckpt`, `sampler`, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magvit2.serialization import atomic_dir, load_state_strict
from trainers.checkpointing import CheckpointCorruptError, flatten_state, unflatten_state
from trainers.disk_space import out_of_space_says
from trainers.publish import push_export


class CheckpointedRun:
    """`save` / `export` / `restore` for `Trainer`."""

    def save(self) -> None:
        """A checkpoint of step `self.step` (written by the main process; every process waits for it), then the
        export of the model. The data position is the global batch reached in the epoch, with the global batch size
        and the number of processes, so any process count with the same global batch resumes exactly."""
        tensors = {name: module.state_dict() for name, module in self.checkpointed.items()}
        epoch, batch_index = self._position
        sampler = {"epoch": epoch, "batch_index": batch_index, "global_batch_size": self.sampler.batch_size,
                   "samples_in_epoch": batch_index * self.sampler.batch_size, "world_size": self.world_size}
        state = {"step": self.step, "sampler": sampler, "guard": self.guard.state_dict(),
                 "schedule_horizon": self.horizon.state_dict(),
                 "config": self.resolved_config(), **self.extra_state()}
        for name, optimizer in self.optimizers.items():
            tensors[name], state[f"{name}_meta"] = flatten_state(optimizer.state_dict())
        if self.accelerator.scaler is not None:
            state["scaler"] = self.accelerator.scaler.state_dict()
        if self.is_main:  # every process holds identical state; one writes it
            self.last_checkpoint = str(self.ckpt.save(self.step, tensors, state))
            self.export()
            self.log.info("step %d: checkpoint %s", self.step, self.last_checkpoint)
            if self.config.run.push_to_hub:
                self.push_error = push_export(*self.hub_export(), self.config.run.hub_model_id, self.step, self.log,
                                              self.run_dir / self.export_name)
        self.accelerator.wait_for_everyone()

    def export(self) -> Path | None:
        """The trained model as a from_pretrained folder at RUN_DIR/<export_name>/ (atomically; main process)."""
        if not self.is_main:
            return None
        folder = self.run_dir / self.export_name
        with out_of_space_says(f"the export {folder} (step {self.step})", self.last_checkpoint,
                               self.names.give("resume", "latest")):
            return atomic_dir(self.write_export, folder)

    def restore(self, path: Path) -> None:
        """Continue from a checkpoint: weights, optimizers, data position, guard, scaler, counters. The main process
        verifies the files' hashes; a checkpoint any process cannot use stops every process."""
        tensors, state = self.on_every_process(lambda: self._read_checkpoint(path))
        for name, module in self.checkpointed.items():
            load_state_strict(module, tensors[name], path / f"{name}.safetensors", f"saved {name} weights")
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(unflatten_state(tensors[name], state[f"{name}_meta"]))
        position = state["sampler"]
        self.sampler.load_state_dict({"epoch": position["epoch"], "batch_index": position["batch_index"]})
        self._position = (int(position["epoch"]), int(position["batch_index"]))
        if "scaler" in state and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.guard.load_state_dict(state["guard"])
        self.horizon.load_state_dict(state.get("schedule_horizon"))
        self.step = int(state["step"])
        self.load_extra_state(state)
        self.last_checkpoint = str(path)
        saved_world = position.get("world_size", 1)
        self.log.info("resumed from %s at step %d (saved on %d process%s, resumed on %d)", path, self.step,
                      saved_world, "es" * (saved_world != 1), self.world_size)

    def _read_checkpoint(self, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        tensors, state = self.ckpt.load(path, verify=self.is_main)
        try:
            self.check_resume(state, path)
        except (KeyError, TypeError) as e:  # a state.json without the keys this trainer writes
            raise CheckpointCorruptError(f"{path / 'state.json'}: no usable {e} entry (written by another trainer "
                                         "or an older version?)") from None
        for name in [*self.checkpointed, *self.optimizers]:
            if name not in tensors:
                raise CheckpointCorruptError(f"{path}: no {name}.safetensors (written by another trainer?)")
        for name in self.optimizers:
            if f"{name}_meta" not in state:
                raise CheckpointCorruptError(f"{path / 'state.json'}: no {name}_meta entry (the optimizer's state)")
        saved = state["sampler"].get("global_batch_size", self.sampler.batch_size)
        if saved != self.sampler.batch_size:
            per_process = saved // self.world_size if saved % self.world_size == 0 else None
            hint = (f"pass {self.names.give('batch_size', per_process)} to keep it on {self.world_size} process(es)"
                    if per_process
                    else f"use a process count that divides {saved}")
            raise ValueError(f"{path} was trained with a global batch of {saved} clips (batch_size x processes); this "
                             f"run's is {self.sampler.batch_size}: {hint}, so the data order continues exactly")
        return tensors, state
