"""Run a console command with faults injected by monkeypatching, for the kill -9 / broken-restore tests (production
code has no test switches).

    python tests/faults.py [--crash-at K] [--break-restore optimizer|sampler] MODULE [ARGS...]

--crash-at K: SIGKILL the process once K updates are done (when update K asks for its first batch).
--break-restore: make the resume forget the optimizer state or the data position (negative controls).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--crash-at", type=int)
    p.add_argument("--break-restore", choices=("optimizer", "sampler"))
    p.add_argument("module")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    import torch

    from trainers.base import Trainer
    from trainers.data.batches import ResumableBatchSampler

    if a.crash_at is not None:
        next_batch = Trainer.next_batch

        def crash_then_next_batch(self, batches):
            if self.step == a.crash_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return next_batch(self, batches)

        Trainer.next_batch = crash_then_next_batch
    if a.break_restore == "optimizer":
        torch.optim.Optimizer.load_state_dict = lambda self, state: None
    elif a.break_restore == "sampler":
        ResumableBatchSampler.load_state_dict = lambda self, state: None
    return importlib.import_module(a.module).main(a.args)


if __name__ == "__main__":
    sys.exit(main())
