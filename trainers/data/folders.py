"""Folder datasets of videos and images: scanning, held-out split, captions, bad-file skipping, multi-folder.

Layout: any folder tree of videos (``.mp4 .webm .avi .mkv .mpg .mpeg .mov .gif``) and images (``.jpg .jpeg
.png .webp``), extensions case-insensitive, hidden files/folders (name starting with ".") ignored. Captions come
from ``metadata.jsonl`` at the root (Hugging Face videofolder style: ``{"file_name": "a/b.mp4", "text": "..."}``)
or from a sidecar ``NAME.txt`` next to ``NAME.mp4``; per file, a metadata.jsonl entry wins over a sidecar.

Rectangular batches: a video gives a ``num_frames``-frame clip, an image a 1-frame clip. ``ResumableBatchSampler``
groups indices by ``dataset.kinds`` ("video" / "image"), so every batch is homogeneous; mixed image + video
training alternates homogeneous batches in a seeded order (``trainers.data.batches``).

Randomness and resume: the epoch's batch order depends only on ``(seed, epoch)``; a sample's augmentation (temporal
start, spatial crop, flip) only on ``(seed, epoch, index)``. The sampler yields ``SampleKey(epoch, index,
batch_index)`` tuples, so DataLoader workers (which hold copies of the dataset) need no shared state, and resuming
needs two integers: ``sampler.state_dict() == {"epoch": e, "batch_index": b}``. Because DataLoader prefetches, read
the position from the *consumed* batch: ``sampler.set_position(batch["epoch"], batch["batch_index"] + 1)``.

Bad files: every file is probed once (PyAV header + first-frame decode; Pillow ``verify`` for images) into the
dataset index (``trainers.data.index``: built by ``magvit2-index DIR`` or by the first construction, reused by every
rank and restart; files changed since are probed again). Unreadable, corrupt and too-short files are skipped with
one ``logging`` WARNING each (logger ``trainers.data.folders``) and counted in ``dataset.stats``; above
``max_bad_fraction`` a ``DataQualityError`` lists them. A file that fails later (changed on disk, or a header that
promises more frames than the file holds) gives a ``FailedSample`` that ``collate`` drops, reporting
``num_skipped``/``skipped`` in the batch; call ``dataset.record_skipped(batch)`` in the main process to warn once
per file and count it (counters inside workers would be invisible). Load-time failures count towards
``max_bad_fraction`` too, and after ``MAX_LOAD_ATTEMPTS`` failed loads a file is given up (later items for it are
failed without decoding). A loop that gets nothing loadable raises ``nothing_loadable(dataset, what)``. Scanning and
captions: ``trainers.data.scan``. Tar shards (``magvit2-pack``): ``trainers.data.shards.ShardDataset``, a subclass
that overrides only where the file list (``_load_entries``) and the bytes (``_read``) come from.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from magvit2.pixels import from_uint8
from trainers.data.index import IndexEntry, index_path, load_index
from trainers.data.samples import DatasetStats, FailedSample, SampleKey, check_positive_int
from trainers.data.scan import METADATA_FILE, load_captions, scan_media_files, split_files
from trainers.data.video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, VideoInfo, VideoReadError, read_clip
from trainers.rng import make_generator

__all__ = ["MAX_FAILED_BATCHES", "MAX_LOAD_ATTEMPTS", "METADATA_FILE", "DataQualityError", "MultiFolderDataset",
           "VideoFolderDataset", "folder_datasets", "load_captions", "nothing_loadable", "scan_media_files",
           "size_note", "split_files"]

logger = logging.getLogger(__name__)

_SAMPLE_KEY = 101  # purpose tag for derive_seed (the split uses 102, the sampler 103)
MAX_LOAD_ATTEMPTS = 3  # failed loads of one file before it is given up
MAX_FAILED_BATCHES = 50  # all-failed batches in a row after which a training loop stops


class DataQualityError(ValueError):
    """Too many unusable files in a dataset folder, or nothing loadable at all."""


def nothing_loadable(dataset: Any, what: str) -> DataQualityError:
    """The error a loop raises when `what` (e.g. "50 batches in a row") gave no loadable clip."""
    stats = dataset.stats
    failures = "; ".join(f"{p} ({r})" for p, r in stats.runtime_failures[:5])
    return DataQualityError(f"no loadable clips: {what} failed to decode ({stats.num_runtime_failures} load failures "
                            f"in {len(stats.runtime_failures)} files, {stats.num_skipped} files skipped when "
                            f"probed){': ' + failures if failures else ''}")


class VideoFolderDataset(Dataset):
    """Clips from a folder of videos and images.

    Args:
        root: dataset folder (searched recursively).
        num_frames: frames per video clip (>= 1; the caller keeps it 1 + k*f for the tokenizer). Images: 1 frame.
        image_size: output ``(height, width)`` (an int means square).
        frame_stride: temporal stride between taken frames; a video needs ``1 + (num_frames - 1) * stride`` frames.
        random_crop: random temporal start and spatial crop; otherwise start at frame 0 and center-crop.
            Always off for ``split="val"``.
        hflip: random horizontal flip (train only).
        seed: base seed of the per-sample randomness (and of the split).
        max_bad_fraction: raise ``DataQualityError`` if more than this fraction of files is unusable.
        split: None (all files), "train" or "val".
        val_fraction: fraction of files held out for "val" (see ``split_files``).
        val_files: explicit relative paths of the val files (instead of ``val_fraction``).
        include_images: also use images (as 1-frame clips).
        captions: require a caption for every file (``ValueError`` listing some that lack one). Captions that
            exist are returned either way; an empty caption counts as missing.
        probe_workers: threads used to probe the files the dataset index lacks (or that changed).
        index_file: the dataset index (``trainers.data.index``); default ``root/.magvit2/index.json``, or the per-user
            cache for a folder we cannot write (``trainers.data.index.index_path``).

    Items (``dataset[SampleKey(epoch, index, batch_index)]`` or ``dataset[index]`` with ``dataset.epoch``):
        ``{"video": float (3, t, h, w) in [-1, 1], "caption": str, "path": str (relative to root), "index": int,
        "epoch": int, "batch_index": int}``, or a ``FailedSample`` if decoding fails.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        num_frames: int,
        image_size: int | tuple[int, int],
        frame_stride: int = 1,
        random_crop: bool = True,
        hflip: bool = False,
        seed: int = 0,
        max_bad_fraction: float = 0.05,
        split: str | None = None,
        val_fraction: float = 0.0,
        val_files: Sequence[str] | None = None,
        include_images: bool = True,
        captions: bool = False,
        probe_workers: int = 4,
        index_file: str | os.PathLike | None = None,
        caption_column: str = "text",
    ) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise FileNotFoundError(f"dataset folder does not exist: {self.root}")
        if not self.root.is_dir():
            raise NotADirectoryError(f"dataset path is not a directory: {self.root}")
        check_positive_int("num_frames", num_frames)
        check_positive_int("frame_stride", frame_stride)
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or any(not isinstance(s, int) or s < 1 for s in size):
            raise ValueError(f"image_size must be a positive int or (height, width); got {image_size!r}")
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1]; got {max_bad_fraction}")
        if split not in (None, "train", "val"):
            raise ValueError(f"split must be None, 'train' or 'val'; got {split!r}")
        self.num_frames, self.image_size, self.frame_stride = num_frames, size, frame_stride
        self.frames_needed = 1 + (num_frames - 1) * frame_stride
        self.seed, self.split, self.epoch = seed, split, 0
        self.max_bad_fraction = max_bad_fraction
        self.random_crop = random_crop and split != "val"
        self.hflip = hflip and split != "val"

        entries = {e.path: e for e in self._load_entries(probe_workers, index_file)
                   if include_images or Path(e.path).suffix.lower() not in IMAGE_EXTENSIONS}
        if caption_column != "text":  # the index holds the default captions; another column is read here
            entries = self._with_caption_column(entries, caption_column)
        files = sorted(entries)
        if not files:
            exts = ", ".join(VIDEO_EXTENSIONS + (IMAGE_EXTENSIONS if include_images else ()))
            raise ValueError(f"no video/image files under {self.root} (searched recursively for {exts})")
        files = self._select_split(files, split, val_fraction, val_files, seed)
        if captions:
            missing = [p for p in files if not entries[p].caption]
            if missing:
                raise ValueError(f"captions=True but {len(missing)} of {len(files)} files have no caption (no "
                                 f"{METADATA_FILE} entry and no NAME.txt sidecar), e.g. {missing[:5]}")

        self.stats = DatasetStats(num_files=len(files))
        self.paths: list[str] = []
        self.infos: list[VideoInfo] = []
        self.kinds: list[str] = []  # "video" (num_frames frames) or "image" (1 frame); batches never mix kinds
        self.captions: list[str] = []
        for rel in files:
            entry = entries[rel]
            is_image = Path(rel).suffix.lower() in IMAGE_EXTENSIONS
            reason = entry.error
            if not reason and not is_image and entry.frames < self.frames_needed:
                reason = (f"too short: {entry.frames} frames, need {self.frames_needed} "
                          f"(num_frames={self.num_frames}, frame_stride={self.frame_stride})")
            if reason:
                logger.warning("skipping %s: %s", rel, reason)
                self.stats.skipped.append((rel, reason))
                continue
            self.paths.append(rel)
            self.infos.append(entry.info)
            self.captions.append(entry.caption)
            self.kinds.append("image" if is_image or num_frames == 1 else "video")
            self.stats.num_images += is_image
            self.stats.num_videos += not is_image
        self.stats.num_skipped = len(self.stats.skipped)
        self._warned: set[str] = {p for p, _ in self.stats.skipped}
        self._load_failures: dict[str, int] = {}  # failed loads per file (main process, via record_skipped)
        self._given_up: set[str] = set()  # files failed MAX_LOAD_ATTEMPTS times: not decoded again

        bad = self.stats.num_skipped / len(files)
        if bad > max_bad_fraction:
            listing = "; ".join(f"{p} ({r})" for p, r in self.stats.skipped[:20])
            more = f"; ... and {self.stats.num_skipped - 20} more" if self.stats.num_skipped > 20 else ""
            raise DataQualityError(f"{self.stats.num_skipped} of {len(files)} files under {self.root} are unusable "
                                   f"({bad:.1%} > max_bad_fraction={max_bad_fraction}): {listing}{more}")
        if not self.paths:
            raise ValueError(f"no usable video/image files under {self.root}: all {len(files)} were skipped")

    def _with_caption_column(self, entries: dict[str, IndexEntry], column: str) -> dict[str, IndexEntry]:
        """`entries` with their captions from `column` of metadata.jsonl (or NAME.txt sidecars)."""
        captions = load_captions(self.root, sorted(entries), column=column)
        return {p: replace(e, caption=captions.get(p, "")) for p, e in entries.items()}

    def _load_entries(self, probe_workers: int, index_file: str | os.PathLike | None) -> list[IndexEntry]:
        """Every media file with its header facts, caption and ``error`` ("" when usable): the dataset index.
        ``ShardDataset`` overrides this (and ``_read``) to read a packed folder instead."""
        self.index_file = Path(index_file) if index_file is not None else index_path(self.root)
        return load_index(self.root, index_file, workers=probe_workers).entries  # the one source of files

    def _read(self, index: int, start: int, generator: torch.Generator | None) -> np.ndarray:
        """Frames ``uint8 (T, h, w, 3)`` of sample ``index`` (see ``read_clip``); raises VideoReadError/OSError."""
        return read_clip(self.root / self.paths[index], self.image_size, start=start, num_frames=self.num_frames,
                         stride=self.frame_stride, generator=generator, info=self.infos[index])

    @staticmethod
    def _select_split(
        files: list[str], split: str | None, val_fraction: float, val_files: Sequence[str] | None, seed: int
    ) -> list[str]:
        if val_files is not None:
            val = sorted({Path(p).as_posix() for p in val_files})
            unknown = sorted(set(val) - set(files))
            if unknown:
                raise ValueError(f"val_files not found among the dataset's files: {unknown[:5]}")
            val_set = set(val)
            train = [p for p in files if p not in val_set]
        else:
            train, val = split_files(files, val_fraction, seed)
        if split == "val" and not val:
            raise ValueError("split='val' needs val_fraction > 0 or val_files")
        chosen = {None: files, "train": train, "val": val}[split]
        if not chosen:
            raise ValueError(f"split={split!r} has no files (of {len(files)})")
        return chosen

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for plain integer indices (``SampleKey`` carries its own)."""
        self.epoch = int(epoch)

    def __getitem__(self, key: int | tuple[int, ...]) -> dict[str, Any] | FailedSample:
        epoch, index, batch_index = SampleKey(*key) if isinstance(key, tuple) else (self.epoch, int(key), -1)
        if not 0 <= index < len(self.paths):
            raise IndexError(f"index {index} out of range for a dataset of {len(self.paths)}")
        rel, info = self.paths[index], self.infos[index]  # the sample's randomness is shared by every subclass
        if rel in self._given_up:
            return FailedSample(rel, f"given up after {MAX_LOAD_ATTEMPTS} failed loads", index, epoch, batch_index)
        gen = make_generator(self.seed, _SAMPLE_KEY, epoch, index)  # draws, in order: start, crop, flip
        is_video = Path(rel).suffix.lower() not in IMAGE_EXTENSIONS
        start = 0
        if is_video and self.random_crop:
            start = int(torch.randint(0, info.num_frames - self.frames_needed + 1, (1,), generator=gen))
        try:
            frames = self._read(index, start, gen if self.random_crop else None)
        except (VideoReadError, OSError) as exc:
            return FailedSample(rel, getattr(exc, "reason", str(exc)), index, epoch, batch_index)
        video = from_uint8(frames)  # (3, t, h, w) in [-1, 1]
        if self.hflip and bool(torch.rand((), generator=gen) < 0.5):
            video = video.flip(-1)
        return {"video": video, "caption": self.captions[index], "path": rel, "index": index,
                "epoch": epoch, "batch_index": batch_index}

    def record_skipped(self, batch: dict[str, Any]) -> None:
        """Count a collated batch's runtime decode failures; warn once per file; give a file up after
        MAX_LOAD_ATTEMPTS failures. Call in the main process. Raises ``DataQualityError`` when the files skipped
        at construction plus those that failed at load time exceed ``max_bad_fraction``."""
        for rel, reason in batch.get("skipped", ()):
            self.stats.num_runtime_failures += 1
            self._load_failures[rel] = self._load_failures.get(rel, 0) + 1
            if self._load_failures[rel] >= MAX_LOAD_ATTEMPTS and rel not in self._given_up:
                self._given_up.add(rel)
                self.stats.given_up.append(rel)
            if rel not in self._warned:
                self._warned.add(rel)
                self.stats.runtime_failures.append((rel, reason))
                logger.warning("skipping %s at load time: %s", rel, reason)
        bad = self.stats.num_skipped + len(self.stats.runtime_failures)
        if bad / self.stats.num_files > self.max_bad_fraction:
            listing = "; ".join(f"{p} ({r})" for p, r in self.stats.runtime_failures[:10])
            raise DataQualityError(f"{bad} of {self.stats.num_files} files under {self.root} are unusable "
                                   f"({bad / self.stats.num_files:.1%} > max_bad_fraction={self.max_bad_fraction}): "
                                   f"{self.stats.num_skipped} failed when probed, {len(self.stats.runtime_failures)} "
                                   f"at load time: {listing}")


class MultiFolderDataset(Dataset):
    """Several `VideoFolderDataset`s as one (e.g. `--data photos/ digits/`). Indices run over the folders in order;
    items keep their folder-relative `path`, prefixed with the folder's position (`"1:clip.mp4"`)."""

    def __init__(self, datasets: Sequence[VideoFolderDataset]) -> None:
        if not datasets:
            raise ValueError("MultiFolderDataset needs at least one dataset")
        self.datasets = list(datasets)
        self.offsets = [0]
        for ds in self.datasets:
            self.offsets.append(self.offsets[-1] + len(ds))
        self.kinds = [k for ds in self.datasets for k in ds.kinds]
        self.captions = [c for ds in self.datasets for c in ds.captions]
        self.paths = [f"{i}:{p}" for i, ds in enumerate(self.datasets) for p in ds.paths]

    @property
    def stats(self) -> DatasetStats:
        merged = DatasetStats()
        for ds in self.datasets:
            for name in ("num_files", "num_videos", "num_images", "num_skipped", "num_runtime_failures"):
                setattr(merged, name, getattr(merged, name) + getattr(ds.stats, name))
            merged.skipped += [(f"{ds.root}/{p}", r) for p, r in ds.stats.skipped]
            merged.runtime_failures += [(f"{ds.root}/{p}", r) for p, r in ds.stats.runtime_failures]
            merged.given_up += [f"{ds.root}/{p}" for p in ds.stats.given_up]
        return merged

    def __len__(self) -> int:
        return self.offsets[-1]

    def _locate(self, index: int) -> tuple[int, int]:
        for i in range(len(self.datasets)):
            if index < self.offsets[i + 1]:
                return i, index - self.offsets[i]
        raise IndexError(f"index {index} out of range for a dataset of {len(self)}")

    def __getitem__(self, key: int | tuple[int, ...]) -> dict[str, Any] | FailedSample:
        epoch, index, batch_index = SampleKey(*key) if isinstance(key, tuple) else (0, int(key), -1)
        which, local = self._locate(index)
        item = self.datasets[which][SampleKey(epoch, local, batch_index)]
        if isinstance(item, FailedSample):
            return FailedSample(f"{which}:{item.path}", item.reason, index, epoch, batch_index)
        return {**item, "path": f"{which}:{item['path']}", "index": index}

    def record_skipped(self, batch: dict[str, Any]) -> None:
        for rel, reason in batch.get("skipped", ()):
            which, _, path = rel.partition(":")
            self.datasets[int(which)].record_skipped({"skipped": [(path, reason)]})


def size_note(dataset: VideoFolderDataset | MultiFolderDataset) -> str | None:
    """One line saying how files of another frame size become the model's (None when all already are): every frame
    is resized on its short side to cover the model's size, then cropped; and how to train at another size."""
    parts = getattr(dataset, "datasets", [dataset])
    h, w = parts[0].image_size
    sizes = Counter(f"{i.width}x{i.height}" for ds in parts for i in ds.infos if (i.height, i.width) != (h, w))
    if not sizes:
        return None
    total = sum(len(ds.infos) for ds in parts)
    shown = ", ".join(f"{size} ({n})" for size, n in sizes.most_common(3)) + (", ..." if len(sizes) > 3 else "")
    crop = "randomly" if parts[0].random_crop else "center"
    return (f"{sum(sizes.values())} of {total} files are not {w}x{h} (width x height: {shown}): each frame is resized "
            f"on its short side to cover {w}x{h}, then {crop} cropped; to train at another size pass --resolution N "
            "(or --preset: tiny 16, demo 32, base and paper 128)")


def folder_datasets(dirs: Sequence[str | os.PathLike], split: str | None, **kwargs: Any
                    ) -> VideoFolderDataset | MultiFolderDataset:
    """One dataset over several folders. For split='val', folders whose split comes out empty are left out. A folder
    holding ``shards.json`` (``magvit2-pack``) gives a ``trainers.data.shards.ShardDataset``."""
    from trainers.data.shards import ShardDataset, is_shard_folder  # shards subclasses VideoFolderDataset

    datasets = []
    for d in dirs:
        try:
            cls = ShardDataset if is_shard_folder(d) else VideoFolderDataset
            datasets.append(cls(d, split=split, **kwargs))
        except ValueError as e:
            if split == "val" and "has no files" in str(e):
                continue
            raise
    if not datasets:
        raise ValueError(f"no validation clips in {[str(d) for d in dirs]}: raise data.val_fraction or give a separate validation folder")
    return datasets[0] if len(datasets) == 1 else MultiFolderDataset(datasets)
