"""SIGTERM, a scheduler's pre-emption: the trainer finishes its step, checkpoints, exports and writes its summary,
then `fit` raises `TrainingStopped` on every process. Uncaught, it ends the process as the signal asked (exit status
143, no traceback), so code that chains stages (`make demo`, the quality harness, a user's script) never goes on
with a part-trained model; a caller that wants otherwise catches it."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_STATUS = 128 + signal.SIGTERM  # what a shell reports for a process the signal ended


class TrainingStopped(SystemExit):
    """A SIGTERM stopped training after step `step`; everything was saved in `run_dir` (resume "latest" goes on)."""

    def __init__(self, step: int, run_dir: Path) -> None:
        super().__init__(EXIT_STATUS)
        self.step, self.run_dir = step, Path(run_dir)

    def __str__(self) -> str:
        return (f"stopped by SIGTERM after step {self.step}; saved in {self.run_dir} (--resume latest goes on from "
                "there)")


def catch_sigterm(on_signal: Callable[[], None]) -> Any:
    """Call `on_signal()` on SIGTERM instead of ending the process; returns the handler it replaced, for
    `restore_sigterm` (None off the main thread, where Python cannot set handlers: nothing is replaced)."""
    try:
        return signal.signal(signal.SIGTERM, lambda signum, frame: on_signal())
    except ValueError:
        return None


def restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
