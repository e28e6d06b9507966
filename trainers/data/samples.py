"""What a dataset item is, and how items become batches: `SampleKey` (what the sampler asks for), `FailedSample`
(a file that failed to decode: dropped and counted), `DatasetStats`, and `collate`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

__all__ = ["DatasetStats", "FailedSample", "SampleKey", "check_positive_int", "collate"]


class SampleKey(NamedTuple):
    """What the sampler hands to ``__getitem__``: which sample, for which epoch, in which batch."""

    epoch: int
    index: int
    batch_index: int = -1


@dataclass(frozen=True)
class FailedSample:
    """Sentinel returned by ``__getitem__`` when a file fails to decode; ``collate`` drops and counts it."""

    path: str
    reason: str
    index: int
    epoch: int = 0
    batch_index: int = -1


@dataclass
class DatasetStats:
    """Counts for one dataset (one split). ``skipped`` holds ``(relative path, reason)`` from construction."""

    num_files: int = 0
    num_videos: int = 0
    num_images: int = 0
    num_skipped: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    num_runtime_failures: int = 0  # failed loads while iterating (a file may fail several times)
    runtime_failures: list[tuple[str, str]] = field(default_factory=list)  # (path, first reason), once per file
    given_up: list[str] = field(default_factory=list)  # files no longer decoded after repeated failures


def check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value!r}")


def collate(items: Sequence[dict[str, Any] | FailedSample]) -> dict[str, Any]:
    """Stack a homogeneous list of items; drop ``FailedSample``s and report them.

    Returns ``{"video": float (b, 3, t, h, w) or None if every item failed, "caption": list[str], "path":
    list[str], "index": LongTensor (b,), "num_skipped": int, "skipped": list[(path, reason)], "epoch": int,
    "batch_index": int}`` where ``epoch``/``batch_index`` locate the batch for resuming (-1 if unknown).
    """
    if not items:
        raise ValueError("collate got an empty list")
    good = [it for it in items if not isinstance(it, FailedSample)]
    bad = [it for it in items if isinstance(it, FailedSample)]
    shapes = sorted({tuple(it["video"].shape) for it in good})
    if len(shapes) > 1:
        raise ValueError(f"cannot batch clips of different shapes {shapes}; use ResumableBatchSampler, whose "
                         "batches are all videos or all images")
    first = items[0]
    epoch, batch_index = (first.epoch, first.batch_index) if isinstance(first, FailedSample) else (
        first["epoch"], first["batch_index"])
    return {
        "video": torch.stack([it["video"] for it in good]) if good else None,  # (b, 3, t, h, w)
        "caption": [it["caption"] for it in good],
        "path": [it["path"] for it in good],
        "index": torch.tensor([it["index"] for it in good], dtype=torch.long),
        "num_skipped": len(bad),
        "skipped": [(it.path, it.reason) for it in bad],
        "epoch": epoch,
        "batch_index": batch_index,
    }
