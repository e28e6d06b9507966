"""What a dataset folder holds: the media files (recursive scan), the held-out split, and the captions.

* `scan_media_files`: follows symlinked folders but never into a folder it has already visited (a link back to
  `.` would otherwise make the scan endless and copy clips into both splits); the skipped links are reported in one
  warning. A file whose name is not valid UTF-8 is skipped (one warning lists them), not the whole folder.
* `load_captions`: sidecar `NAME.txt` files, overridden by `metadata.jsonl` entries. Every line of `metadata.jsonl`
  is checked: a JSON object whose `file_name` is a relative path inside the folder and whose `text` (or `caption`)
  is a string; a file named twice is an error. Any problem is a `ValueError` naming the file and the line; entries
  naming files that do not exist are reported in one warning.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from magvit2.checks import read_utf8
from trainers.data.video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from trainers.rng import derive_seed

__all__ = ["METADATA_FILE", "load_captions", "scan_media_files", "split_files"]

logger = logging.getLogger("trainers.data.folders")

_SPLIT_KEY = 102  # purpose tag for derive_seed (folders uses 101, the sampler 103)
METADATA_FILE = "metadata.jsonl"


def _shown(names: Sequence[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def scan_media_files(root: str | os.PathLike, include_images: bool = True,
                     dir_mtimes: dict[str, int] | None = None) -> list[str]:
    """Relative POSIX paths of all media files under ``root`` (recursive, sorted, hidden entries skipped).

    Symlinked folders are followed once: a folder already visited (by its device and inode) is not entered again.
    ``dir_mtimes``, when given, is filled with each scanned folder's mtime (relative path, "" for ``root``), which
    changes whenever a file is added, removed or renamed in it (``trainers.data.index`` uses it).
    """
    root = Path(root)
    exts = set(VIDEO_EXTENSIONS) | (set(IMAGE_EXTENSIONS) if include_images else set())
    found: list[str] = []
    looped: list[str] = []
    bad_names: list[str] = []
    root_stat = os.stat(root)
    visited = {(root_stat.st_dev, root_stat.st_ino)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        if dir_mtimes is not None:
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            dir_mtimes["" if rel_dir == "." else rel_dir] = os.stat(dirpath).st_mtime_ns
        keep = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            full = os.path.join(dirpath, name)
            try:
                st = os.stat(full)
            except OSError:  # a broken link
                continue
            if (st.st_dev, st.st_ino) in visited:
                looped.append(Path(full).relative_to(root).as_posix())
                continue
            visited.add((st.st_dev, st.st_ino))
            keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in exts:
                continue
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                bad_names.append(ascii(rel))
                continue
            found.append(rel)
    if looped:
        logger.warning("not following %d symlinked folder(s) under %s that lead to folders already scanned (a link "
                       "loop?): %s", len(looped), root, _shown(sorted(looped)))
    if bad_names:
        logger.warning("skipping %d file(s) under %s whose names are not valid UTF-8 (rename them): %s",
                       len(bad_names), root, _shown(sorted(bad_names)))
    return sorted(found)


def split_files(paths: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic held-out split by file: ``(train, val)``, both sorted.

    Files are ranked by a seeded hash of their relative path and the first ``max(1, round(n * val_fraction))``
    go to val, so a file's side does not depend on listing order, and adding files moves few others.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    if val_fraction == 0.0:
        return sorted(paths), []
    num_val = max(1, round(len(paths) * val_fraction))
    if num_val >= len(paths):
        raise ValueError(f"val_fraction={val_fraction} leaves no training files out of {len(paths)}")
    ranked = sorted(paths, key=lambda p: (derive_seed(seed, _SPLIT_KEY, *p.encode("utf-8")), p))
    return sorted(ranked[num_val:]), sorted(ranked[:num_val])


def _metadata_entry(line: str, where: str, column: str | None = None) -> tuple[str, str]:
    """One metadata.jsonl line -> (relative POSIX path, caption), checked. The caption is `column`'s value, or by
    default `text` (else `caption`)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: invalid JSON ({exc})") from None
    keys = ("text", "caption") if column is None else (column,)
    if not isinstance(record, dict) or "file_name" not in record or not any(k in record for k in keys):
        raise ValueError(f'{where}: expected {{"file_name": ..., "{keys[0]}": ...}}; got {line.strip()[:120]}')
    name, text = record["file_name"], next(record[k] for k in keys if k in record)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: file_name must be a non-empty string; got {name!r:.80}")
    if not isinstance(text, str):
        raise ValueError(f"{where}: text must be a string; got {type(text).__name__} {text!r:.80}")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\0" in name:
        raise ValueError(f"{where}: file_name {name!r:.80} is outside the dataset folder (use a path relative to it)")
    rel = path.as_posix().removeprefix("./")
    if rel in ("", "."):
        raise ValueError(f"{where}: file_name {name!r:.80} names the folder itself, not a file")
    return rel, text.strip()


def load_captions(root: str | os.PathLike, paths: Sequence[str], column: str | None = None) -> dict[str, str]:
    """Captions for ``paths`` (relative): sidecar ``NAME.txt`` files, overridden by ``metadata.jsonl`` entries (their
    ``column`` key; by default ``text``, else ``caption``).

    Raises ``ValueError`` naming the file and line for a malformed, duplicate or outside-the-folder entry.
    """
    root = Path(root)
    captions: dict[str, str] = {}
    for rel in paths:
        sidecar = (root / rel).with_suffix(".txt")
        if sidecar.is_file():
            captions[rel] = sidecar.read_text(encoding="utf-8", errors="replace").strip()
    meta = root / METADATA_FILE
    if not meta.is_file():
        return captions
    first_line: dict[str, int] = {}
    missing: list[str] = []
    for lineno, line in enumerate(read_utf8(meta, METADATA_FILE).splitlines(), 1):
        if not line.strip():
            continue
        rel, text = _metadata_entry(line, f"{meta}:{lineno}", column)
        if rel in first_line:
            raise ValueError(f"{meta}:{lineno}: {rel!r} already has a caption on line {first_line[rel]}; give each "
                             "file one entry")
        first_line[rel] = lineno
        if not (root / rel).exists():
            missing.append(rel)
        captions[rel] = text
    if missing:
        logger.warning("%s: %d entries name files that are not in the folder: %s", meta, len(missing),
                       _shown(missing))
    return captions
