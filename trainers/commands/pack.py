"""magvit2-pack's work: a media folder -> webdataset tar shards + ``shards.json`` (format: ``trainers.data.shards``).

The file list and captions come from the dataset index (``trainers.data.index``: built or refreshed here), so files
that cannot be read are left out and listed (in the result and in ``shards.json``'s ``skipped``). Tars are written
with the stdlib ``tarfile`` (each through ``atomic_write``), then read back once to record every member's data
offset and size; ``shards.json`` is written last and atomically, so a folder without it is an unfinished pack.
OUT must be new or empty: a pack never writes over files it did not create.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

from magvit2.serialization import atomic_write, atomic_write_text
from trainers.data.index import IndexEntry, load_index
from trainers.data.samples import check_positive_int
from trainers.data.shards import SHARDS_FILE, SHARDS_FORMAT, SHARDS_VERSION
from trainers.data.video_io import IMAGE_EXTENSIONS

__all__ = ["pack_folder"]


def _add(tar: tarfile.TarFile, name: str, data: bytes | Path, mtime: int) -> None:
    """One member from bytes, or streamed from a file (a large video is never held in memory whole)."""
    info = tarfile.TarInfo(name)
    info.mtime, info.mode = mtime, 0o644
    if isinstance(data, Path):
        with open(data, "rb") as fp:
            info.size = os.fstat(fp.fileno()).st_size
            tar.addfile(info, fp)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _write_shard(path: Path, root: Path, rows: list[tuple[str, IndexEntry]]) -> list[dict[str, Any]]:
    """One tar of ``rows`` (key, entry); returns the manifest's samples with every member's [offset, size]."""
    samples = []
    with atomic_write(path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for key, e in rows:
                ext = Path(e.path).suffix.lower().lstrip(".")
                meta = {"path": e.path, "frames": e.frames, "fps": e.fps, "width": e.width, "height": e.height}
                mtime = max(0, e.mtime_ns // 1_000_000_000)
                _add(tar, f"{key}.{ext}", root / e.path, mtime)
                _add(tar, f"{key}.txt", e.caption.encode("utf-8"), mtime)
                _add(tar, f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"), mtime)
                kind = "image" if f".{ext}" in IMAGE_EXTENSIONS else "video"
                samples.append({"key": key, "path": e.path, "kind": kind, "frames": e.frames, "fps": e.fps,
                                "width": e.width, "height": e.height, "caption": e.caption, "members": {}})
        with tarfile.open(tmp, "r") as tar:  # where each member's data landed
            where = {m.name: [m.offset_data, m.size] for m in tar.getmembers()}
    for s in samples:
        ext = Path(s["path"]).suffix.lower().lstrip(".")
        s["members"] = {x: where[f"{s['key']}.{x}"] for x in (ext, "txt", "json")}
    return samples


def pack_folder(src: str | os.PathLike, out: str | os.PathLike, shard_size: int = 1000,
                include_images: bool = False, workers: int = 4) -> dict[str, Any]:
    """Pack the usable videos (and images with ``include_images``) of ``src`` into ``out``.

    Returns ``{"shards": [file names], "samples": n, "skipped": [(path, reason)], "manifest": Path}``.
    Raises ``NotADirectoryError`` for a missing ``src``, ``FileExistsError`` for a non-empty ``out``, ``ValueError``
    when nothing is usable.
    """
    check_positive_int("shard_size", shard_size)
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise NotADirectoryError(f"dataset folder does not exist or is not a folder: {src}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder; pack into a new folder")
    if out.resolve() == src.resolve() or out.resolve().is_relative_to(src.resolve()):
        raise ValueError(f"OUT ({out}) must not be inside the dataset folder {src}")
    index = load_index(src, workers=workers)
    chosen = [e for e in index.entries if include_images or Path(e.path).suffix.lower() not in IMAGE_EXTENSIONS]
    usable = sorted((e for e in chosen if e.usable), key=lambda e: e.path)
    skipped = sorted((e.path, e.error) for e in chosen if not e.usable)
    if not usable:
        kinds = "video/image" if include_images else "video (images need --include-images)"
        raise ValueError(f"no usable {kinds} files under {src} ({len(skipped)} unusable)")
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for n, first in enumerate(range(0, len(usable), shard_size)):
        rows = [(f"{i:08d}", usable[i]) for i in range(first, min(first + shard_size, len(usable)))]
        name = f"shard-{n:05d}.tar"
        samples = _write_shard(out / name, src, rows)
        shards.append({"file": name, "count": len(samples), "samples": samples})
    manifest = {"format": SHARDS_FORMAT, "version": SHARDS_VERSION, "source": str(index.root), "shards": shards,
                "skipped": [list(s) for s in skipped]}
    path = atomic_write_text(out / SHARDS_FILE, json.dumps(manifest, ensure_ascii=False, indent=1))
    return {"shards": [s["file"] for s in shards], "samples": len(usable), "skipped": skipped, "manifest": path}
