"""The dataset index: what each media file of a folder holds, probed once and reused by every rank and restart.

``DIR/.magvit2/index.json`` (hidden, so the media scan never sees it; ``magvit2-index DIR`` builds it, and so does
the first ``VideoFolderDataset`` that finds none) holds one row per media file::

    {"format": "magvit2-dataset-index", "version": 1, "root": "/abs/DIR", "complete": true,
     "dirs": {"": mtime_ns, "sub": mtime_ns, ...}, "metadata": [size, mtime_ns] | null,
     "fields": ["path", "size", "mtime_ns", "frames", "fps", "width", "height", "caption", "error"],
     "entries": [["sub/a.mp4", 12345, 1700000000000000000, 120, 24.0, 640, 360, "a cat", ""], ...]}

``error`` is "" for a usable file, else why not (the probe's reason). Trust rules (``load_index``):

* a row whose file changed (size or mtime) is re-probed, never trusted; a file gone since is unusable ("missing");
* a folder whose mtime changed (files added, removed or renamed in it) triggers a rescan that keeps every row
  still fresh and probes only new or changed files; a changed ``metadata.jsonl`` re-reads the captions;
  (a ``NAME.txt`` sidecar edited in place is not noticed: run ``magvit2-index DIR``, which re-reads every caption);
* an index built for another folder is refused, and a corrupt one names the file and the command to run.

The index is the one source of a dataset's file list. Builds are parallel (processes for the command, threads in
a dataset) and resumable: a build writes what it has probed every ``checkpoint_seconds`` (``"complete": false``),
and the next build reuses those rows. Every write is atomic.

Where it lives (``index_path``): ``DIR/.magvit2/index.json`` when that folder can be written; for a folder we cannot
write (a read-only mount, NFS exported read-only, squashfs, no permission) a per-user cache keyed by the folder's
resolved path, ``$MAGVIT2_INDEX_CACHE`` (default ``~/.cache/magvit2/index``) ``/<sha256(path)[:16]>/index.json``,
said once in the log; an index already inside such a folder is still read. Every process computes the same path.
Under ``torch.distributed`` rank 0 builds or refreshes and writes while the other ranks wait for it without a
collective (``trainers.rank_zero.on_main``: a long build is not cut short by the process-group timeout), then read
its file; a machine that cannot see that file (a per-machine cache) builds its own copy once, on its local rank 0.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import astuple, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from magvit2.checks import read_json
from magvit2.serialization import atomic_write_text
from trainers.rank_zero import distributed, on_local_main, on_main
from trainers.data.scan import METADATA_FILE, load_captions, scan_media_files
from trainers.data.video_io import IMAGE_EXTENSIONS, VideoInfo, VideoReadError, probe_image, probe_video

__all__ = ["INDEX_FORMAT", "DatasetIndex", "IndexEntry", "build_index", "cached_index_path", "default_index_path",
           "index_path", "load_index", "probe_entry", "read_index", "write_index"]

logger = logging.getLogger(__name__)

INDEX_FORMAT, INDEX_VERSION = "magvit2-dataset-index", 1
_HEAD = f'{{"format":"{INDEX_FORMAT}"'.encode()  # how every index file this code writes begins
MISSING = "missing: the file was removed after it was indexed"


@dataclass(frozen=True)
class IndexEntry:
    """One media file as probed: header facts, caption, and ``error`` ("" when usable)."""

    path: str
    size: int
    mtime_ns: int
    frames: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    caption: str = ""
    error: str = ""

    @property
    def usable(self) -> bool:
        return not self.error

    @property
    def info(self) -> VideoInfo:
        return VideoInfo(num_frames=self.frames, height=self.height, width=self.width, fps=self.fps)


FIELDS = tuple(f.name for f in fields(IndexEntry))
_TYPES = {f.name: {"str": str, "int": int, "float": (int, float)}[f.type] for f in fields(IndexEntry)}


@dataclass
class DatasetIndex:
    root: Path  # resolved
    entries: list[IndexEntry]
    dirs: dict[str, int]  # folder (relative, "" = root) -> mtime_ns when scanned
    metadata: list[int] | None  # [size, mtime_ns] of metadata.jsonl, None when there is none
    complete: bool = True
    probed: int = field(default=0, compare=False)  # files probed by the call that returned this (not stored)
    saved: Path | None = field(default=None, compare=False)  # where that call wrote it (None: nowhere; not stored)

    def to_json(self) -> str:
        return json.dumps({"format": INDEX_FORMAT, "version": INDEX_VERSION, "root": str(self.root),
                           "complete": self.complete, "dirs": self.dirs, "metadata": self.metadata,
                           "fields": list(FIELDS), "entries": [list(astuple(e)) for e in self.entries]},
                          ensure_ascii=False, separators=(",", ":"))


def default_index_path(root: str | os.PathLike) -> Path:
    """``root/.magvit2/index.json``: the index's place inside a folder we can write."""
    return Path(root) / ".magvit2" / "index.json"


def index_cache() -> Path:
    """Where indexes of folders we cannot write live: ``$MAGVIT2_INDEX_CACHE``, default ``~/.cache/magvit2/index``."""
    return Path(os.environ.get("MAGVIT2_INDEX_CACHE", Path.home() / ".cache" / "magvit2" / "index")).expanduser()


def cached_index_path(root: str | os.PathLike) -> Path:
    """The cache's index file for folder ``root``, keyed by its resolved path (the same on every process)."""
    key = hashlib.sha256(str(Path(root).resolve()).encode("utf-8")).hexdigest()[:16]
    return index_cache() / key / "index.json"


def index_path(root: str | os.PathLike) -> Path:
    """Where the index of ``root`` is written: inside the folder when we may create files there, else the cache.
    ``os.access`` asks the kernel, which says no for a read-only mount even to root (EROFS) as well as for missing
    permissions; every process gets the same answer."""
    own = default_index_path(Path(root).resolve())
    folder = own.parent if own.parent.is_dir() else own.parent.parent
    return own if os.access(folder, os.W_OK) else cached_index_path(root)


def _signature(path: Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def probe_entry(root: str, rel: str) -> IndexEntry:
    """Stat and probe one file (header + first-frame decode; Pillow ``verify`` for images). Never raises for a bad
    file: the reason goes into ``error``. Top-level so process pools can run it."""
    path = Path(root) / rel
    sig = _signature(path)
    if sig is None:
        return IndexEntry(rel, -1, -1, error=MISSING)
    try:
        info = probe_image(path) if path.suffix.lower() in IMAGE_EXTENSIONS else probe_video(path, check_decode=True)
    except (VideoReadError, OSError) as exc:
        return IndexEntry(rel, *sig, error=getattr(exc, "reason", str(exc)) or type(exc).__name__)
    return IndexEntry(rel, *sig, frames=info.num_frames, fps=info.fps, width=info.width, height=info.height)


def _corrupt(path: Path, root: Path, why: str) -> ValueError:
    return ValueError(f"dataset index {path} is corrupt ({why}); run `magvit2-index {root} --rebuild` (or delete "
                      "it: the next run rebuilds it)")


def read_index(path: str | os.PathLike, root: str | os.PathLike) -> DatasetIndex:
    """Read and check an index file for folder ``root``. Raises ``FileNotFoundError`` when there is none,
    ``ValueError`` naming the file when it is corrupt or was built for another folder."""
    path, root = Path(path), Path(root).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no dataset index at {path}")
    try:
        data = read_json(path, "dataset index")
    except (json.JSONDecodeError, ValueError) as exc:
        raise _corrupt(path, root, f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
        raise _corrupt(path, root, f"not a {INDEX_FORMAT} file")
    if data.get("version") != INDEX_VERSION or data.get("fields") != list(FIELDS):
        raise _corrupt(path, root, f"version {data.get('version')!r} / fields {data.get('fields')!r}; this code "
                                   f"writes version {INDEX_VERSION} with fields {list(FIELDS)}")
    if data.get("root") != str(root):
        raise ValueError(f"dataset index {path} was built for the folder {data.get('root')!r}, not {str(root)!r}; "
                         f"refusing to use it: run `magvit2-index {root} --rebuild`")
    dirs, meta, rows = data.get("dirs"), data.get("metadata"), data.get("entries")
    if not isinstance(dirs, dict) or not all(isinstance(v, int) for v in dirs.values()):
        raise _corrupt(path, root, "'dirs' must map folders to integer mtimes")
    if meta is not None and not (isinstance(meta, list) and len(meta) == 2 and all(isinstance(v, int) for v in meta)):
        raise _corrupt(path, root, "'metadata' must be null or [size, mtime_ns]")
    if not isinstance(rows, list) or not isinstance(data.get("complete"), bool):
        raise _corrupt(path, root, "'entries' must be a list and 'complete' a bool")
    entries = []
    for i, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == len(FIELDS)
                and all(isinstance(v, _TYPES[k]) and not isinstance(v, bool) for k, v in zip(FIELDS, row))):
            raise _corrupt(path, root, f"entry {i} is not [{', '.join(FIELDS)}] with the right types: {row!r:.120}")
        rel = row[0]
        if rel.startswith("/") or ".." in rel.split("/"):
            raise _corrupt(path, root, f"entry {i} names {rel!r}, outside the folder")
        entries.append(IndexEntry(*row))
    return DatasetIndex(root, entries, dirs, meta, data["complete"])


def write_index(index: DatasetIndex, path: str | os.PathLike) -> Path:
    """Write atomically, refusing to replace a file that is not a dataset index."""
    path = Path(path)
    if path.exists():
        with open(path, "rb") as fp:
            head = fp.read(len(_HEAD))
        if head != _HEAD:
            raise FileExistsError(f"{path} exists and is not a dataset index; not overwriting it (move it away)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, index.to_json())


def _dirs_changed(index: DatasetIndex) -> bool:
    for rel, mtime in index.dirs.items():
        sig = _signature(index.root / rel)
        if sig is None or sig[1] != mtime:
            return True
    return False


def _fresh(entry: IndexEntry, root: Path) -> bool:
    sig = _signature(root / entry.path)
    return sig is not None and sig == [entry.size, entry.mtime_ns]


def _with_captions(root: Path, entries: list[IndexEntry]) -> list[IndexEntry]:
    captions = load_captions(root, [e.path for e in entries])
    return [replace(e, caption=captions.get(e.path, "")) for e in entries]


def _executor(workers: int, processes: bool) -> Executor:
    if processes:
        return ProcessPoolExecutor(max_workers=workers)
    return ThreadPoolExecutor(max_workers=workers)


def _probe_all(root: Path, rels: list[str], workers: int, processes: bool,
               on_block: Callable[[list[IndexEntry]], None]) -> list[IndexEntry]:
    """Probe ``rels`` (in parallel when workers > 1), handing each finished block to ``on_block``."""
    out: list[IndexEntry] = []
    block = max(64, 64 * workers)
    pool = _executor(workers, processes) if workers > 1 and len(rels) > 1 else None
    try:
        for start in range(0, len(rels), block):
            chunk = rels[start: start + block]
            if pool is None:
                got = [probe_entry(str(root), rel) for rel in chunk]
            else:
                got = list(pool.map(probe_entry, [str(root)] * len(chunk), chunk, chunksize=16 if processes else 1))
            out += got
            on_block(out)
    finally:
        if pool is not None:
            pool.shutdown()
    return out


def build_index(root: str | os.PathLike, path: str | os.PathLike | None = None, workers: int = 4,
                processes: bool = True, previous: DatasetIndex | None = None, checkpoint_seconds: float = 60.0,
                progress: Callable[[int, int], None] | None = None, save_errors: str = "raise") -> DatasetIndex:
    """Scan ``root`` and probe every media file not already fresh in ``previous`` (or in the index at ``path``,
    even a partial one); write the result to ``path`` (None: do not write). Returns the complete index (its
    ``saved`` attribute: where it was written, or None). ``save_errors="warn"``: a write that fails (read-only, full
    disk) is logged once and the build goes on without saving; ``"raise"``: the OSError propagates."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"dataset folder does not exist or is not a folder: {root}")
    if path is not None and previous is None:
        try:
            previous = read_index(path, root)
        except FileNotFoundError:
            previous = None
    if path is not None:
        try:  # before the scan: creating it changes root's mtime
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            path = _unsaved(path, exc, save_errors)
    dirs: dict[str, int] = {}
    meta = _signature(root / METADATA_FILE)
    files = scan_media_files(root, include_images=True, dir_mtimes=dirs)
    known = {e.path: e for e in (previous.entries if previous else ())}
    kept = {rel: known[rel] for rel in files if rel in known and _fresh(known[rel], root)}
    todo = [rel for rel in files if rel not in kept]
    if kept and todo:
        logger.info("index of %s: %d files unchanged, %d to probe", root, len(kept), len(todo))
    last_write = [time.monotonic()]

    target = [Path(path) if path is not None else None]

    def save(index: DatasetIndex) -> None:
        if target[0] is not None:
            try:
                write_index(index, target[0])
            except OSError as exc:
                target[0] = _unsaved(target[0], exc, save_errors)

    def checkpoint(done: list[IndexEntry]) -> None:
        if progress is not None:
            progress(len(kept) + len(done), len(files))
        if time.monotonic() - last_write[0] >= checkpoint_seconds and len(done) < len(todo):
            save(DatasetIndex(root, [*kept.values(), *done], dirs, meta, complete=False))
            last_write[0] = time.monotonic()

    probed = {e.path: e for e in _probe_all(root, todo, workers, processes, checkpoint)}
    entries = _with_captions(root, [kept.get(rel) or probed[rel] for rel in files])
    index = DatasetIndex(root, entries, dirs, meta, complete=True, probed=len(todo))
    save(index)
    index.saved = target[0]
    return index


def _unsaved(path: str | os.PathLike, exc: OSError, save_errors: str) -> None:
    """A failed index write: raise (``save_errors="raise"``) or log it and carry on without saving."""
    if save_errors == "raise" or isinstance(exc, FileExistsError):  # never replace a file that is not an index
        raise exc
    logger.warning("cannot write the dataset index %s (%s); probing without saving it (set MAGVIT2_INDEX_CACHE to a "
                   "writable folder, or run `magvit2-index DIR --index PATH`)", path, exc)
    return None


def _refresh(index: DatasetIndex, workers: int) -> tuple[DatasetIndex, bool]:
    """Re-probe the rows whose file changed; re-read captions when metadata.jsonl changed. (index, changed)."""
    root = index.root
    stale = {e.path: e for e in index.entries
             if not _fresh(e, root) and not (e.error == MISSING and _signature(root / e.path) is None)}
    meta = _signature(root / METADATA_FILE)
    if not stale and meta == index.metadata:
        return index, False
    if stale:
        logger.info("index of %s: %d files changed since indexed; probing them again", root, len(stale))
    probed = {e.path: replace(e, caption=stale[e.path].caption)
              for e in _probe_all(root, list(stale), workers, False, lambda _: None)}
    entries = [probed.get(e.path, e) for e in index.entries]
    if meta != index.metadata:
        entries = _with_captions(root, entries)
    return DatasetIndex(root, entries, index.dirs, meta, complete=True, probed=len(stale)), True


_reported: set[Path] = set()  # folders whose index location was already logged by this process


def _load_or_build(root: Path, path: Path, workers: int, also: Path | None = None) -> DatasetIndex:
    """The index at ``path`` (else at ``also``: one a read-only folder already holds), refreshed, or built; written
    to ``path`` when it changed (a failed write is logged, not fatal). ``saved`` says where it is on disk."""
    index, where = None, path
    for candidate in (path, also):
        if candidate is not None and index is None:
            try:
                index, where = read_index(candidate, root), candidate
            except FileNotFoundError:
                pass
    if index is not None and index.complete and not _dirs_changed(index):
        index, changed = _refresh(index, workers)
        index.saved = _try_write(index, path) if changed else where
    else:
        if index is None:
            logger.info("no dataset index at %s: probing every file of %s once (later runs reuse it; "
                        "`magvit2-index %s` builds it in parallel beforehand)", path, root, root)
        index = build_index(root, path, workers=workers, processes=False, previous=index, save_errors="warn")
    if also is not None and index.saved is not None and root not in _reported:  # one line per folder and process
        _reported.add(root)
        logger.warning("dataset folder %s is not writable: its index is kept at %s (MAGVIT2_INDEX_CACHE moves the "
                       "cache)", root, index.saved)
    return index


def _try_write(index: DatasetIndex, path: Path) -> Path | None:
    try:
        return write_index(index, path)
    except FileExistsError:
        raise
    except OSError as exc:
        logger.warning("cannot update the dataset index %s (%s)", path, exc)
        return None


def load_index(root: str | os.PathLike, path: str | os.PathLike | None = None, workers: int = 4) -> DatasetIndex:
    """The fresh index of ``root``: read, refreshed or built (see the module doc), at ``path`` (default:
    ``index_path(root)``). Under ``torch.distributed`` with several processes rank 0 does the work and writes while
    the others wait without a collective, then read its file."""
    root = Path(root).resolve()
    own = default_index_path(root)
    path = Path(path) if path is not None else index_path(root)
    also = own if path == cached_index_path(root) and own != path else None

    def build() -> DatasetIndex:
        return _load_or_build(root, path, workers, also)

    if not distributed():
        return build()
    what = f"the dataset index of {root}"
    shared = on_main(build, what, share=lambda index: str(index.saved) if index.saved else None)
    if isinstance(shared, DatasetIndex):  # rank 0
        return shared
    if shared is None:  # rank 0 could not save it anywhere: this process probes too
        return _load_or_build(root, path, workers, also)
    if Path(shared).is_file():
        return read_index(shared, root)
    # not visible on this machine (a per-machine cache): its local rank 0 builds a copy here for its processes
    logger.warning("the dataset index rank 0 wrote (%s) is not visible on this machine; building it here", shared)
    local = on_local_main(build, what, share=lambda index: str(index.saved) if index.saved else None)
    if isinstance(local, DatasetIndex):
        return local
    return read_index(local, root) if local else _load_or_build(root, path, workers, also)


def summary(index: DatasetIndex) -> dict[str, Any]:
    bad = [e for e in index.entries if not e.usable]
    return {"files": len(index.entries), "usable": len(index.entries) - len(bad),
            "unusable": [(e.path, e.error) for e in bad]}
