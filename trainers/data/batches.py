"""Resumable, homogeneous batch sampling for the datasets of `trainers.data`, and the DataLoader that uses it."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from trainers.data.samples import SampleKey, check_positive_int, collate
from trainers.rng import make_generator

__all__ = ["ResumableBatchSampler", "build_dataloader", "default_num_workers"]

logger = logging.getLogger(__name__)

_SAMPLER_KEY = 103  # purpose tag for derive_seed


class ResumableBatchSampler(Sampler[list[SampleKey]]):
    """Homogeneous batches in an order that depends only on ``(seed, epoch)``; resumable from two integers.

    Each epoch: within each kind, indices are permuted (``shuffle``) and cut into batches (the incomplete tail is
    dropped with ``drop_last``), then all batches are permuted together. ``batch_size`` is the GLOBAL batch: a
    data-parallel run hands this sampler to ``accelerator.prepare`` with ``split_batches=True``, which gives process
    ``r`` of ``W`` the slice ``[r * batch_size / W, (r + 1) * batch_size / W)`` of every batch. So every process
    trains on the same kind (all videos or all images) at every step, the global batches do not depend on ``W``, and
    the position ``(epoch, batch_index)`` means the same thing on any number of processes.
    ``batch_index`` counts this rank's batches. ``__iter__`` runs from the stored position to the end of that
    epoch and then moves the position to ``(epoch + 1, 0)``; iterate again for the next epoch.
    """

    def __init__(
        self,
        kinds: Sequence[str],
        batch_size: int,
        seed: int,
        drop_last: bool = True,
        shuffle: bool = True,
    ) -> None:
        check_positive_int("batch_size", batch_size)
        self.batch_size, self.seed, self.drop_last, self.shuffle = batch_size, seed, drop_last, shuffle
        self.groups: dict[str, list[int]] = {}
        for i, kind in enumerate(kinds):
            self.groups.setdefault(kind, []).append(i)
        per_kind = {k: (len(v) // batch_size if drop_last else math.ceil(len(v) / batch_size))
                    for k, v in sorted(self.groups.items())}
        self._num_batches = sum(per_kind.values())
        counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(self.groups.items()))
        if self._num_batches == 0:
            raise ValueError(f"{len(kinds)} usable samples ({counts}) give no full batch of batch_size={batch_size}"
                             f" (drop_last={drop_last}, all processes together); need at least {batch_size} "
                             "samples of one kind, or a smaller batch_size")
        for kind, n in per_kind.items():
            if n == 0:
                logger.warning("the %d %s samples are fewer than batch_size=%d and will never be used",
                               len(self.groups[kind]), kind, batch_size)
        self.epoch, self.batch_index = 0, 0

    def __len__(self) -> int:
        """Batches per epoch."""
        return self._num_batches

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The batches (lists of dataset indices) of ``epoch``; a pure function of (seed, epoch)."""
        gen = make_generator(self.seed, _SAMPLER_KEY, epoch)
        batches: list[list[int]] = []
        for _, indices in sorted(self.groups.items()):
            order = torch.tensor(indices)
            if self.shuffle:
                order = order[torch.randperm(len(order), generator=gen)]
            chunks = [order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
            batches.extend(c for c in chunks if len(c) == self.batch_size or not self.drop_last)
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
        return batches

    def set_position(self, epoch: int, batch_index: int) -> None:
        """Next batch to yield: ``batch_index`` of ``epoch`` (``batch_index == len(self)`` means the next epoch)."""
        if epoch < 0 or not 0 <= batch_index <= self._num_batches:
            raise ValueError(f"position must have epoch >= 0 and 0 <= batch_index <= {self._num_batches}; "
                             f"got ({epoch}, {batch_index})")
        self.epoch, self.batch_index = int(epoch), int(batch_index)
        if self.batch_index == self._num_batches:
            self.epoch, self.batch_index = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batch_index"}`` of the next batch to yield (plain ints, JSON-able)."""
        self.set_position(self.epoch, self.batch_index)  # normalise an epoch-end position
        return {"epoch": self.epoch, "batch_index": self.batch_index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.set_position(int(state["epoch"]), int(state["batch_index"]))

    def __iter__(self) -> Iterator[list[SampleKey]]:
        self.set_position(self.epoch, self.batch_index)
        epoch = self.epoch
        batches = self.epoch_batches(epoch)
        for b in range(self.batch_index, len(batches)):
            self.batch_index = b + 1  # this batch counts as consumed once handed out
            yield [SampleKey(epoch, i, b) for i in batches[b]]
        self.epoch, self.batch_index = epoch + 1, 0


def default_num_workers(cap: int = 8) -> int:
    """DataLoader workers when the config leaves them unset: the CPUs this process may use (``sched_getaffinity``:
    cgroups and taskset respected, as torch's own check does) shared among this machine's processes
    (``LOCAL_WORLD_SIZE``, set by torchrun / accelerate launch), at most ``cap``; 0 (load in the main process) when
    there are more processes than CPUs. Never more than torch's "suggested max number of worker" check allows."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(0, min(cap, cpus // local_processes))


def build_dataloader(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int | None = 0,
    pin_memory: bool | None = None,
    collate_fn: Callable[[list], dict] = collate,
    prefetch_factor: int = 2,
) -> DataLoader:
    """A DataLoader over ``dataset`` with a ``ResumableBatchSampler`` (``loader.batch_sampler``) and ``collate_fn``.

    ``num_workers=None`` means ``default_num_workers()``; ``pin_memory=None`` means "when CUDA is available". With
    workers, they persist across epochs and each keeps ``prefetch_factor`` batches in flight. Batches do not depend
    on the worker count: every sample's randomness comes from ``(seed, epoch, index)`` (the ``SampleKey``).
    Persistent workers keep the dataset copy they started with: a file ``record_skipped`` gives up on in the main
    process is still tried (and fails, and is counted) in them.
    """
    sampler = ResumableBatchSampler(dataset.kinds, batch_size, seed, drop_last=drop_last, shuffle=shuffle)
    workers = default_num_workers() if num_workers is None else int(num_workers)
    if workers < 0:
        raise ValueError(f"num_workers must be >= 0 or None; got {num_workers}")
    pin = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
    extra = {"persistent_workers": True, "prefetch_factor": prefetch_factor} if workers > 0 else {}
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=workers, pin_memory=pin,
                      **extra)
