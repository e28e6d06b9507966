"""Run a console command with faults injected by monkeypatching, for the kill -9 / broken-restore tests (production
code has no test switches).

    python tests/faults.py [--crash-at K] [--break-restore optimizer|sampler] MODULE [ARGS...]

--crash-at K: SIGKILL the process once K updates are done (when update K asks for its first batch).
--sigterm-at K[:R]: SIGTERM (a scheduler's pre-emption) likewise, on process R only when given.
--break-restore: make the resume forget the optimizer state or the data position (negative controls).
--fail-images-on-rank R: on process R every image fails to decode at load time (the other processes read them).
--slow-index S: rank 0 takes S seconds more over its first dataset index (a large folder).
--fill-disk-after K:FILE: once checkpoint K is saved, FILE fills its file system but for 64 KiB (a disk filling up).
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
    p.add_argument("--sigterm-at")
    p.add_argument("--break-restore", choices=("optimizer", "sampler"))
    p.add_argument("--fail-images-on-rank", type=int)
    p.add_argument("--slow-index", type=float)
    p.add_argument("--fill-disk-after")
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
    if a.sigterm_at is not None:
        at, _, rank = a.sigterm_at.partition(":")
        next_batch = Trainer.next_batch

        def sigterm_then_next_batch(self, batches):
            if self.step == int(at) and rank in ("", os.environ.get("RANK", "0")):
                os.kill(os.getpid(), signal.SIGTERM)  # delivered now: the handler runs before the next line
            return next_batch(self, batches)

        Trainer.next_batch = sigterm_then_next_batch
    if a.break_restore == "optimizer":
        torch.optim.Optimizer.load_state_dict = lambda self, state: None
    elif a.break_restore == "sampler":
        ResumableBatchSampler.load_state_dict = lambda self, state: None
    if a.fail_images_on_rank is not None and int(os.environ.get("RANK", "0")) == a.fail_images_on_rank:
        import trainers.data.folders as folders
        from trainers.data.video_io import IMAGE_EXTENSIONS, VideoReadError

        read_clip = folders.read_clip

        def failing_read_clip(path, *args, **kwargs):
            if Path(path).suffix.lower() in IMAGE_EXTENSIONS:
                raise VideoReadError(path, "injected load failure")
            return read_clip(path, *args, **kwargs)

        folders.read_clip = failing_read_clip
    if a.slow_index is not None and int(os.environ.get("RANK", "0")) == 0:
        import time

        import trainers.data.index as index

        load_or_build = index._load_or_build

        def slow_load_or_build(*args, **kwargs):
            index._load_or_build = load_or_build  # once
            time.sleep(a.slow_index)
            return load_or_build(*args, **kwargs)

        index._load_or_build = slow_load_or_build
    if a.fill_disk_after is not None:
        import shutil

        after, filler = a.fill_disk_after.split(":", 1)
        save = Trainer.save

        def save_then_fill(self):
            save(self)
            if self.step == int(after):
                with open(filler, "wb") as f:
                    f.truncate(0)
                    left = shutil.disk_usage(Path(filler).parent).free - (64 << 10)
                    while left > 0:
                        left -= f.write(b"\0" * min(left, 1 << 20))

        Trainer.save = save_then_fill
    return importlib.import_module(a.module).main(a.args)


if __name__ == "__main__":
    sys.exit(main())
