"""What a trainer's processes do together: agree on a flag, sum or average values, fail together, and end the
process group cleanly (`close`). Mixed into `trainers.base.Trainer`, which provides `world_size`, `device` and
`accelerator`; every method is a collective (call it on every process)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


class ProcessGroupRun:
    """Collectives over a trainer's processes (one process: no communication)."""

    world_size: int
    device: torch.device
    accelerator: Any

    def any_process(self, flag: bool) -> bool:
        """True on every process when `flag` is True on any (one collective; call it on every process)."""
        if self.world_size == 1:
            return bool(flag)
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def sum_over_processes(self, values: list[float]) -> list[float]:
        """Element-wise sums of `values` over processes (validation counts and totals)."""
        if self.world_size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def mean_over_processes(self, logs: dict[str, float]) -> dict[str, float]:
        """Logged values averaged over processes (each process's losses are means over its share of the batch)."""
        if self.world_size == 1:
            return logs
        keys = sorted(logs)
        sums = self.sum_over_processes([float(logs[k]) for k in keys])
        return {k: v / self.world_size for k, v in zip(keys, sums)}

    def on_every_process(self, fn: Any) -> Any:
        """`fn()`, raising on every process when it raised on any (no process is left waiting in a collective)."""
        error = None
        try:
            result = fn()
        except Exception as e:  # re-raised below, on every process
            error, result = e, None
        if self.any_process(error is not None):
            raise error or RuntimeError("another process failed at start-up; its error names the problem")
        return result

    # attributes holding what `prepare_ddp` returned (DDP wrappers); `close` puts the bare modules back
    ddp_attributes: tuple[str, ...] = ()

    def close(self) -> None:
        """End the run's distributed state (every process waits, then the process group is destroyed, so no
        process exits while another still talks to it). Call once after `fit` in a launched script.

        The DDP wrappers go first, while the process group is still registered: a wrapper's C++ reducer that drops
        the group's last reference destroys it holding the GIL, and gloo's destructor then waits for its worker
        thread, which may need the GIL to free the last collective's tensors: a rare hang at exit (pytorch#56297).
        Dropped from Python (destroy_process_group), the group is destroyed without the GIL."""
        self.accelerator.wait_for_everyone()
        for name in self.ddp_attributes:
            setattr(self, name, self.accelerator.unwrap_model(getattr(self, name), keep_torch_compile=False))
        self.accelerator.free_memory()  # the accelerator's own references to the wrappers; collects them
        self.accelerator.end_training()
