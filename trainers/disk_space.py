"""Disk space and training runs: what a run's checkpoints and export need (`checkpoint_bytes`, `check_disk_space`:
refused before the first step, in one line naming need vs free), and a full disk while writing said in one line
naming what was being written, the last complete checkpoint and how to resume (`disk_full`, `out_of_space_says`;
`CheckpointManager.save` uses them too)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from trainers.checkpointing import CheckpointManager

__all__ = ["check_disk_space", "checkpoint_bytes", "disk_full", "no_space", "out_of_space_says", "resume_advice"]


def disk_full(exc: BaseException) -> bool:
    """True for "no space left on device" / "disk quota exceeded": an OSError, or a library's own error that carries
    the OS error in its message (safetensors raises `SafetensorError: ... No space left on device (os error 28)`)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return any(s in text for s in ("No space left on device", "Disk quota exceeded", f"(os error {errno.ENOSPC})",
                                   f"(os error {errno.EDQUOT})"))


def no_space(cls: type[OSError], message: str) -> OSError:
    """`cls(message)` with errno ENOSPC (str() is the message alone, without "[Errno 28]")."""
    error = cls(message)
    error.errno = errno.ENOSPC
    return error


def resume_advice(last_complete: str | os.PathLike | None, resume_hint: str | None) -> str:
    """What to do after a full disk: which checkpoint is intact and how to continue from it."""
    if last_complete is None or str(last_complete) == "none":
        return "there is no complete checkpoint yet: free space, then start the run again"
    how = f"continue with {resume_hint}" if resume_hint else "resume from it"
    return f"the last complete checkpoint is {Path(last_complete).name} (intact): free space, then {how}"


@contextlib.contextmanager
def out_of_space_says(writing: str, last_complete: str | os.PathLike | None,
                      resume_hint: str | None = None) -> Iterator[None]:
    """Inside the block, a full disk (`disk_full`) becomes one `CheckpointWriteError` line naming what was being
    written, the last complete checkpoint and how to resume (`resume_hint`, e.g. "--resume latest")."""
    try:
        yield
    except Exception as exc:
        if not disk_full(exc):
            raise
        from trainers.checkpointing import CheckpointWriteError

        raise no_space(CheckpointWriteError, f"no space left on the device while writing {writing}; "
                                             f"{resume_advice(last_complete, resume_hint)}") from exc


def _state_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values() if isinstance(t, torch.Tensor))


def checkpoint_bytes(modules: Mapping[str, torch.nn.Module], optimizers: Mapping[str, torch.optim.Optimizer]) -> int:
    """About the bytes one checkpoint of these takes on disk: every module's state_dict tensors, and each optimizer's
    state as it is, or before its first step two tensors like each of its parameters (AdamW's exp_avg and
    exp_avg_sq), plus 2% and 256 KiB for safetensors headers and state.json."""
    total = sum(_state_bytes(m) for m in modules.values())
    for optimizer in optimizers.values():
        held = [t for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor)]
        if held:
            total += sum(t.numel() * t.element_size() for t in held)
        else:
            total += 2 * sum(p.numel() * p.element_size() for g in optimizer.param_groups for p in g["params"])
    return int(total * 1.02) + (256 << 10)


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"  # not reached


def check_disk_space(manager: CheckpointManager, modules: Mapping[str, torch.nn.Module],
                     optimizers: Mapping[str, torch.optim.Optimizer], exported: Sequence[torch.nn.Module] = (),
                     export_dir: str | os.PathLike | None = None, run_dir_name: str = "the run folder",
                     keep_last_name: str = "keep_last") -> int:
    """Refuse (`NotEnoughSpaceError`, one line naming need vs free) a run whose disk cannot hold what it will write:
    up to `keep_last + 1` checkpoints at once (the newest is complete before the oldest goes) less those already
    there, and the export of `exported` (two while one replaces the other). Returns the bytes needed."""
    from trainers.checkpointing import NotEnoughSpaceError

    one = checkpoint_bytes(modules, optimizers)
    existing = len(manager.list_complete())
    new = max(1, manager.keep_last + 1 - existing)
    export = sum(_state_bytes(m) for m in exported)
    exports = 1 if export_dir is not None and Path(export_dir).is_dir() else 2
    need = new * one + exports * export
    where = manager.run_dir if manager.run_dir.exists() else manager.run_dir.parent
    free = shutil.disk_usage(where).free
    if free < need:
        raise no_space(
            NotEnoughSpaceError, f"{_size(free)} free under {manager.run_dir}, but this run needs about {_size(need)}: "
            f"{new} checkpoint(s) of {_size(one)} (model, EMA, optimizer state, discriminator; keep_last="
            f"{manager.keep_last} + 1 being written{f', {existing} already there' if existing else ''}) and "
            f"{exports} export(s) of {_size(export)}; free space, choose {run_dir_name} on a bigger disk, or lower "
            f"{keep_last_name}")
    return need
