"""Tar shards (the webdataset layout) as a map-style training input: ``ShardDataset``.

A packed folder (``magvit2-pack DIR OUT``, ``trainers.commands.pack``) holds ``shard-00000.tar ...`` whose members
follow webdataset's naming (``<key>.mp4`` / ``<key>.png`` ..., ``<key>.txt`` caption, ``<key>.json`` with path,
frames, fps, width, height), so ``webdataset.WebDataset`` streams them as they are, plus ``shards.json``::

    {"format": "magvit2-shards", "version": 1, "source": "/abs/DIR",
     "shards": [{"file": "shard-00000.tar", "count": 2, "samples": [
         {"key": "00000000", "path": "a.mp4", "kind": "video", "frames": 9, "fps": 8.0, "width": 64,
          "height": 48, "caption": "a cat", "members": {"mp4": [1536, 20480], "txt": [...], "json": [...]}}]}],
     "skipped": [["bad.mp4", "why it was unusable when packed"]]}

``members`` maps each member's extension to ``[byte offset of its data in the tar, size]``. Random access by that
index, not ``wids``: wids re-indexes every tar when it opens it and decodes by its own rules, while our sampler needs
``dataset[SampleKey]`` from any worker, which a seek + read of the recorded offsets gives with no new dependency.

``ShardDataset`` is a ``VideoFolderDataset`` whose file list comes from ``shards.json`` instead of the dataset
index and whose bytes come from the tar: everything else is shared (train/val split by sample path, too-short
clips skipped, per-sample randomness from ``(seed, epoch, index)``, ``FailedSample`` + ``record_skipped`` for a
member that fails to decode), so the same files give the same global batches packed or not. Shards at a URL or
behind a `pipe:` command are fetched into a local cache first (``trainers.data.remote``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from magvit2.checks import plain_name, read_utf8, read_json
from trainers.data.folders import VideoFolderDataset
from trainers.data.index import IndexEntry
from trainers.data.video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, VideoReadError, read_clip

__all__ = ["SHARDS_FILE", "SHARDS_FORMAT", "SHARDS_VERSION", "ShardDataset", "is_shard_folder", "read_manifest"]

SHARDS_FILE, SHARDS_FORMAT, SHARDS_VERSION = "shards.json", "magvit2-shards", 1
_MEDIA = {e.lstrip(".") for e in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS}


def is_shard_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / SHARDS_FILE).is_file()


def _bad(path: Path, why: str) -> ValueError:
    return ValueError(f"{path}: corrupt shard manifest ({why}); pack the folder again with magvit2-pack")


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_sample(path: Path, where: str, s: Any) -> None:
    if not isinstance(s, dict):
        raise _bad(path, f"{where} is not an object")
    types = {"key": str, "path": str, "kind": str, "caption": str, "members": dict, "fps": (int, float)}
    for name, kind in types.items():
        if not isinstance(s.get(name), kind):
            raise _bad(path, f"{where}.{name} must be {getattr(kind, '__name__', 'a number')}; got {s.get(name)!r:.60}")
    for name in ("frames", "width", "height"):
        if not _int(s.get(name)):
            raise _bad(path, f"{where}.{name} must be an int >= 0; got {s.get(name)!r:.60}")
    rel = s["path"]
    if not rel or rel.startswith("/") or ".." in rel.split("/"):
        raise _bad(path, f"{where}.path {rel!r} is not a relative path inside the dataset")
    ext = Path(rel).suffix.lower().lstrip(".")
    if ext not in _MEDIA or s["kind"] != ("image" if f".{ext}" in IMAGE_EXTENSIONS else "video"):
        raise _bad(path, f"{where}: path {rel!r} / kind {s['kind']!r} is not a video or image")
    loc = s["members"].get(ext)
    if not (isinstance(loc, list) and len(loc) == 2 and all(_int(v) for v in loc)):
        raise _bad(path, f"{where}.members.{ext} must be [offset, size]; got {loc!r:.60}")


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``folder/shards.json``; ``ValueError`` naming the file and the key when it is malformed."""
    path = Path(folder) / SHARDS_FILE
    try:
        data = read_json(path, "shard manifest")
    except ValueError as exc:
        raise _bad(path, f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != SHARDS_FORMAT:
        raise _bad(path, f"not a {SHARDS_FORMAT} file")
    if data.get("version") != SHARDS_VERSION:
        raise _bad(path, f"version {data.get('version')!r}; this code reads version {SHARDS_VERSION}")
    shards, skipped = data.get("shards"), data.get("skipped")
    if not isinstance(shards, list) or not isinstance(skipped, list):
        raise _bad(path, "'shards' and 'skipped' must be lists")
    if not all(isinstance(r, list) and len(r) == 2 and all(isinstance(v, str) for v in r) for r in skipped):
        raise _bad(path, "'skipped' must hold [path, reason] pairs")
    seen: set[str] = set()
    for i, shard in enumerate(shards):
        if not isinstance(shard, dict) or not plain_name(shard.get("file")) or not isinstance(
                shard.get("samples"), list) or shard.get("count") != len(shard["samples"]):
            raise _bad(path, f"shards[{i}] must be {{file: a name in the folder, count, samples: [...count]}}")
        for j, sample in enumerate(shard["samples"]):
            _check_sample(path, f"shards[{i}].samples[{j}]", sample)
            if sample["path"] in seen:
                raise _bad(path, f"shards[{i}].samples[{j}].path {sample['path']!r} appears twice")
            seen.add(sample["path"])
    return data


class ShardDataset(VideoFolderDataset):
    """Clips from a packed folder (``shards.json`` + tar shards); the arguments and items of ``VideoFolderDataset``
    (``probe_workers`` and ``index_file`` are unused: the manifest was written at pack time). ``path`` is the
    sample's path in the original folder, so splits and batches equal those of the unpacked folder."""

    def _load_entries(self, probe_workers: int, index_file: str | os.PathLike | None) -> list[IndexEntry]:
        manifest = read_manifest(self.root)
        self.index_file = self.root / SHARDS_FILE
        self._members: dict[str, tuple[str, str, int, int]] = {}  # path -> (shard file, member name, offset, size)
        entries = []
        for shard in manifest["shards"]:
            tar = self.root / shard["file"]
            if not tar.is_file():
                raise FileNotFoundError(f"{self.index_file} lists {shard['file']}, which is not in {self.root}")
            length = tar.stat().st_size
            for s in shard["samples"]:
                ext = Path(s["path"]).suffix.lower().lstrip(".")
                offset, size = s["members"][ext]
                if offset + size > length:
                    raise _bad(self.index_file, f"{s['path']} lies at bytes [{offset}, {offset + size}) of "
                                                f"{shard['file']}, which has {length}")
                self._members[s["path"]] = (shard["file"], f"{s['key']}.{ext}", offset, size)
                entries.append(IndexEntry(s["path"], size, 0, s["frames"], float(s["fps"]), s["width"], s["height"],
                                          s["caption"]))
        return entries + [IndexEntry(rel, -1, -1, error=reason) for rel, reason in manifest["skipped"]]

    def _with_caption_column(self, entries: dict[str, IndexEntry], column: str) -> dict[str, IndexEntry]:
        raise ValueError(f"data.caption_column {column!r}: packed shards ({self.root}) hold the captions they were "
                         "packed with (the folder's text / caption); pack from a folder whose metadata.jsonl has them")

    def _read(self, index: int, start: int, generator: torch.Generator | None) -> np.ndarray:
        shard, member, offset, size = self._members[self.paths[index]]
        name = self.root / shard / member  # names the member in errors; its suffix says image or video
        with open(self.root / shard, "rb") as fp:
            fp.seek(offset)
            data = fp.read(size)
        if len(data) != size:
            raise VideoReadError(name, f"shard truncated: {len(data)} of {size} bytes at offset {offset}")
        return read_clip(name, self.image_size, start=start, num_frames=self.num_frames, stride=self.frame_stride,
                         generator=generator, info=self.infos[index], data=data)
