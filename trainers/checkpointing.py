"""Atomic, verifiable training checkpoints: safetensors + JSON, never pickle.

Layout (torchtitan style; a checkpoint exists only once its completion marker does)::

    run_dir/checkpoints/step-00000012/
        model.safetensors  optimizer.safetensors  ...   one file per tensor group
        state.json                                      JSON trainer state (step, epoch, sampler, ...)
        COMPLETE.json                                   written last: step, files, sizes, sha256

``save`` writes into ``step-00000012.tmp-<pid>`` next to the target, fsyncs every file, writes ``COMPLETE.json``,
renames the directory into place and fsyncs the parent, then prunes older checkpoints. A crash at any point
leaves either the old set of checkpoints or the new one; stale ``*.tmp-<pid>`` directories of dead processes are
removed on the next start. Only the main process should save (callers guard with ``is_main``).

``load`` trusts nothing it reads: ``COMPLETE.json`` must list plain file names (a ``../`` entry or a symlink out of
the folder is refused) with sizes and sha256 (``read_marker``); tensors must be finite; ``state.json`` must hold a
consistent step and, for a trainer's checkpoint, the data position and guard (``check_state``). Every problem is a
``CheckpointCorruptError`` naming the file.

Optimizer and GradScaler state go through ``flatten_state`` (``trainers.state_flatten``): tensors into a
safetensors group, everything else (ints, floats, tuples, int-keyed dicts) into JSON with type tags, so
``optimizer.load_state_dict`` gets back an identical structure.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from magvit2.checks import inside, nonfinite_tensors, plain_name, read_json
from magvit2.serialization import fsync_path, pid_alive
from trainers.disk_space import disk_full, no_space, resume_advice
from trainers.state_flatten import flatten_state, unflatten_state

__all__ = [
    "CheckpointCorruptError", "CheckpointError", "CheckpointManager", "CheckpointNotFoundError",
    "CheckpointWriteError", "NonFiniteCheckpointError", "NotEnoughSpaceError", "flatten_state", "unflatten_state"
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MARKER = "COMPLETE.json"
RUN_MARKER = ".magvit2-run"  # written into a run folder the trainers create: only such folders are reused
STATE_FILE = "state.json"
_STEP_DIR = re.compile(r"^step-(\d{8})$")
_STAGING_DIR = re.compile(r"^step-\d{8}\.(tmp|old)-(\d+)$")  # only what save() itself creates
_GROUP_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class CheckpointError(Exception):
    """Base class of checkpoint errors."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No (complete) checkpoint where one was asked for."""


class CheckpointCorruptError(CheckpointError):
    """A checkpoint's files do not match its ``COMPLETE.json`` or cannot be parsed."""


class CheckpointWriteError(CheckpointError, OSError):
    """Saving failed (e.g. disk full); the previous checkpoint is intact and the staging directory is gone."""


class NonFiniteCheckpointError(CheckpointError, ValueError):
    """Refused to save tensors that contain NaN or Inf."""


class NotEnoughSpaceError(CheckpointError, OSError):
    """The run folder's disk cannot hold the checkpoints this run keeps (checked before the first step)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _remove_stale_staging(parent: Path) -> None:
    """Remove ``*.tmp-<pid>`` / ``*.old-<pid>`` directories in ``parent`` left by dead processes (ours only)."""
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        match = _STAGING_DIR.match(entry.name)
        if match and entry.is_dir() and not pid_alive(int(match.group(2))):
            logger.warning("removing stale checkpoint staging directory %s (left by a crashed save)", entry)
            shutil.rmtree(entry, ignore_errors=True)


def _tensors_for_saving(group: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, storage-unshared copies (safetensors refuses shared storage)."""
    out, seen = {}, set()
    for key, value in tensors.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise TypeError(f"group {group!r}: expected str -> Tensor, got {key!r} -> {type(value).__name__}")
        t = value.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in seen:
            t = t.clone()
        seen.add(ptr)
        out[key] = t
    return out


def _nonfinite_entries(tensors: Mapping[str, Mapping[str, torch.Tensor]]) -> list[str]:
    return [f"{group}/{entry}" for group, part in tensors.items() for entry in nonfinite_tensors(part)]


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_marker(path: Path) -> dict[str, Any]:
    """The checked ``COMPLETE.json`` of checkpoint folder ``path``: a JSON object with an int ``step`` >= 0 and a
    non-empty ``files`` mapping plain file names (never a path: nothing outside the folder is read) to
    ``{"size": int >= 0, "sha256": 64 hex digits}``, ``state.json`` among them."""
    where = path / MARKER
    try:
        marker = read_json(where, MARKER)
    except (OSError, ValueError) as exc:
        raise CheckpointCorruptError(f"{where} is unreadable: {exc}") from exc
    if not isinstance(marker, dict):
        raise CheckpointCorruptError(f"{where}: expected a JSON object; got {type(marker).__name__}")
    files = marker.get("files")
    if not isinstance(files, dict) or not files:
        raise CheckpointCorruptError(f"{where}: 'files' must list the checkpoint's files with sizes and sha256; got "
                                     f"{files!r:.80}")
    for name, meta in files.items():
        if not plain_name(name):
            raise CheckpointCorruptError(f"{where}: entry {name!r:.80} is not a plain file name in the checkpoint "
                                         "folder (paths are refused)")
        if not (isinstance(meta, dict) and _is_count(meta.get("size")) and isinstance(meta.get("sha256"), str)
                and re.fullmatch(r"[0-9a-f]{64}", meta["sha256"])):
            raise CheckpointCorruptError(f"{where}: entry {name!r} needs an int 'size' >= 0 and a hex 'sha256'; got "
                                         f"{meta!r:.120}")
    if STATE_FILE not in files:
        raise CheckpointCorruptError(f"{where}: lists no {STATE_FILE}")
    if not _is_count(marker.get("step")):
        raise CheckpointCorruptError(f"{where}: 'step' must be an int >= 0; got {marker.get('step')!r:.40}")
    return marker


# the data position: global batch `batch_index` of `epoch`; the global batch size, the samples of the epoch already
# consumed and the number of processes that wrote it (trainers.run_checkpoints.CheckpointedRun.save)
_SAMPLER_KEYS = {"epoch", "batch_index", "global_batch_size", "samples_in_epoch", "world_size"}


def check_state(state: Any, where: Path, step: int) -> None:
    """A checkpoint's ``state.json``: a JSON object; ``step`` (when present) an int equal to the marker's; a
    trainer's state (one with ``config`` or ``guard``) also needs ``sampler`` ``{epoch, batch_index}`` (ints >= 0),
    ``guard`` and ``config`` objects."""
    if not isinstance(state, dict):
        raise CheckpointCorruptError(f"{where}: expected a JSON object; got {type(state).__name__}")
    trainer = "config" in state or "guard" in state
    if ("step" in state or trainer) and (not _is_count(state.get("step")) or state["step"] != step):
        raise CheckpointCorruptError(f"{where}: 'step' must be the int {step} that {MARKER} records; got "
                                     f"{state.get('step')!r:.40}")
    if "sampler" in state or trainer:
        sampler = state.get("sampler")
        if not (isinstance(sampler, dict) and {"epoch", "batch_index"} <= set(sampler) <= _SAMPLER_KEYS
                and all(_is_count(v) for v in sampler.values())):
            raise CheckpointCorruptError(f"{where}: 'sampler' must be {{\"epoch\": int >= 0, \"batch_index\": "
                                         f"int >= 0, ...}} (the data position; optional keys "
                                         f"{sorted(_SAMPLER_KEYS - {'epoch', 'batch_index'})}); got {sampler!r:.80}")
    if trainer:
        guard = state.get("guard")
        if not (isinstance(guard, dict) and _is_count(guard.get("total_skipped"))
                and isinstance(guard.get("consecutive"), dict)
                and all(_is_count(v) for v in guard["consecutive"].values())):
            raise CheckpointCorruptError(f"{where}: 'guard' must be {{\"total_skipped\": int, \"consecutive\": "
                                         f"{{phase: int}}}}; got {guard!r:.80}")
        if not isinstance(state.get("config"), dict):
            raise CheckpointCorruptError(f"{where}: 'config' must be a JSON object; got {state.get('config')!r:.60}")
        for key, value in state.items():
            if key.endswith("_step") and not _is_count(value):
                raise CheckpointCorruptError(f"{where}: {key!r} must be an int >= 0; got {value!r:.40}")


class CheckpointManager:
    """Save, find, verify and load checkpoints under ``run_dir/checkpoints``.

    Construct it with ``is_main=False`` on other ranks: they can ``latest``/``load`` but never write or clean up
    (a staging directory of another node's live process looks dead from here).

    ``keep_last`` (>= 1) complete checkpoints are kept; older ones are pruned only after a new one is complete.
    torchtitan requires ``keep_latest_k >= 2`` because its saves can be asynchronous: the newest checkpoint may still
    be in flight while the older one is the only complete one. Our saves are synchronous and atomic (the new one is
    complete before anything is pruned), so 1 is safe; 2 (or more) still guards against a checkpoint that was written
    intact but holds bad weights, so prefer >= 2 when disk allows.
    """

    def __init__(self, run_dir: str | os.PathLike, keep_last: int = 3, is_main: bool = True,
                 resume_hint: str | None = None) -> None:
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
            raise ValueError(f"keep_last must be an int >= 1; got {keep_last!r}")
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "checkpoints"
        self.keep_last = keep_last
        self.is_main = is_main  # other ranks may find and load checkpoints, never write, prune or clean up
        self.resume_hint = resume_hint  # how the caller resumes, for a save that fails (e.g. "--resume latest")
        self._reported: set[str] = set()  # incomplete directories already warned about
        if is_main:
            _remove_stale_staging(self.dir)

    @staticmethod
    def step_name(step: int) -> str:
        return f"step-{step:08d}"

    # ------------------------------------------------------------------------------------------------ discovery

    def list_complete(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of every complete checkpoint, oldest first; incomplete directories are logged, skipped."""
        found = []
        if not self.dir.is_dir():
            return found
        for entry in self.dir.iterdir():
            match = _STEP_DIR.match(entry.name)
            if not match or not entry.is_dir():
                continue
            if (entry / MARKER).is_file():
                found.append((int(match.group(1)), entry))
            elif entry.name not in self._reported:
                self._reported.add(entry.name)
                logger.warning("ignoring incomplete checkpoint %s (no %s)", entry, MARKER)
        return sorted(found)

    def latest(self) -> Path | None:
        """The newest complete checkpoint directory, or None."""
        complete = self.list_complete()
        return complete[-1][1] if complete else None

    def resolve(self, spec: str | os.PathLike | int) -> Path:
        """``"latest"``, a step number, or a checkpoint directory path -> a complete checkpoint directory."""
        if spec == "latest":
            path = self.latest()
            if path is None:
                raise CheckpointNotFoundError(f"no complete checkpoint in {self.dir}")
            return path
        path = self.dir / self.step_name(spec) if isinstance(spec, int) else Path(spec)
        if not path.is_absolute() and not path.exists() and (self.dir / path).is_dir():
            path = self.dir / path  # a bare directory name such as "step-00000012"
        if not path.is_dir():
            raise CheckpointNotFoundError(f"checkpoint directory does not exist: {path}")
        if not (path / MARKER).is_file():
            raise CheckpointCorruptError(f"{path} is not a complete checkpoint (no {MARKER}; the save was "
                                         "interrupted or the directory is not a checkpoint)")
        return path

    # ------------------------------------------------------------------------------------------------ saving

    def save(self, step: int, tensors: Mapping[str, Mapping[str, torch.Tensor]], state: Mapping[str, Any]) -> Path:
        """Atomically write ``step-<step>/`` with one ``<group>.safetensors`` per group plus ``state.json``.

        Raises ``NonFiniteCheckpointError`` (before writing anything) if a floating tensor has NaN/Inf, and
        ``CheckpointWriteError`` if writing fails (the previous checkpoint is intact, no staging directory remains).
        """
        if not self.is_main:
            raise RuntimeError("CheckpointManager(is_main=False) cannot save; only the main process writes")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0; got {step!r}")
        for group in tensors:
            if not _GROUP_NAME.match(group) or group in ("state", "COMPLETE"):
                raise ValueError(f"bad tensor group name {group!r}: use letters, digits, '_', '-', '.'")
        bad = _nonfinite_entries(tensors)
        if bad:
            raise NonFiniteCheckpointError(f"refusing to save step-{step:08d}: non-finite values in "
                                           f"{', '.join(bad[:10])}" + (" ..." if len(bad) > 10 else ""))
        state_bytes = json.dumps(dict(state), indent=1, sort_keys=True).encode("utf-8")  # TypeError if not JSON-able

        name = self.step_name(step)
        target = self.dir / name
        staging = self.dir / f"{name}.tmp-{os.getpid()}"
        previous = self.latest()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            _remove_stale_staging(self.dir)
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir()
            files: dict[str, dict[str, Any]] = {}
            for group, group_tensors in tensors.items():
                path = staging / f"{group}.safetensors"
                safetensors.torch.save_file(_tensors_for_saving(group, group_tensors), str(path),
                                            metadata={"format": "pt"})
                fsync_path(path)
            (staging / STATE_FILE).write_bytes(state_bytes)
            fsync_path(staging / STATE_FILE)
            for path in sorted(staging.iterdir()):
                files[path.name] = {"size": path.stat().st_size, "sha256": _sha256(path)}
            marker = {"format_version": FORMAT_VERSION, "step": step, "time": time.time(), "files": files}
            (staging / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True))
            fsync_path(staging / MARKER)
            fsync_path(staging, directory=True)
            if target.exists():  # re-saving a step: move the old one aside, then swap
                old = self.dir / f"{name}.old-{os.getpid()}"
                os.replace(target, old)
                os.replace(staging, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, target)
            fsync_path(self.dir, directory=True)
        except BaseException as exc:
            old = self.dir / f"{name}.old-{os.getpid()}"
            if old.is_dir() and not target.exists():
                os.replace(old, target)  # interrupted mid-swap: put the previous version of this step back
            shutil.rmtree(staging, ignore_errors=True)
            if disk_full(exc):
                raise no_space(CheckpointWriteError, f"no space left on the device while writing checkpoint {name} "
                               f"in {self.dir} (removed); {resume_advice(previous, self.resume_hint)}") from exc
            if not isinstance(exc, OSError):
                raise
            kept = f"previous checkpoint {previous.name} is intact" if previous else "there is no previous checkpoint"
            message = f"{type(exc).__name__}: {exc} while writing {name} in {self.dir}; {kept}"
            raise (CheckpointWriteError(exc.errno, message) if exc.errno else CheckpointWriteError(message)) from exc
        self._prune(keep=target)
        return target

    def _prune(self, keep: Path) -> None:
        complete = [(s, p) for s, p in self.list_complete() if p != keep]  # never prune what was just written
        for _, path in complete[: max(0, len(complete) + 1 - self.keep_last)]:
            logger.info("pruning old checkpoint %s (keep_last=%d)", path, self.keep_last)
            shutil.rmtree(path, ignore_errors=True)

    # ------------------------------------------------------------------------------------------------ loading

    def load(
        self, path: str | os.PathLike | int = "latest", verify: bool = True
    ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
        """Load ``(tensors by group, state)`` from a checkpoint (``"latest"``, a step, or a path), on CPU.

        With ``verify`` every file listed in ``COMPLETE.json`` must exist with the recorded size and sha256.
        Raises ``CheckpointCorruptError`` naming the file otherwise. Only safetensors and JSON are read.
        """
        path = self.resolve(path)
        marker = read_marker(path)
        listed: dict[str, dict[str, Any]] = marker["files"]
        for fname, meta in listed.items():
            fpath = path / fname
            if not fpath.is_file():
                raise CheckpointCorruptError(f"{fpath} is listed in {MARKER} but missing")
            if not inside(fpath, path):
                raise CheckpointCorruptError(f"{fpath} is a symlink that leads out of the checkpoint (to "
                                             f"{fpath.resolve()}); refusing to read it")
            size = fpath.stat().st_size
            if size != meta["size"]:
                raise CheckpointCorruptError(f"{fpath} has {size} bytes but {MARKER} records {meta['size']} "
                                             "(truncated or modified)")
            if verify and _sha256(fpath) != meta["sha256"]:
                raise CheckpointCorruptError(f"{fpath} does not match the sha256 in {MARKER} (corrupted)")
        tensors = {}
        for fname in sorted(listed):
            if fname.endswith(".safetensors"):
                try:
                    tensors[fname[: -len(".safetensors")]] = safetensors.torch.load_file(str(path / fname))
                except Exception as exc:  # safetensors raises its own SafetensorError
                    raise CheckpointCorruptError(f"cannot parse {path / fname}: {exc}") from exc
        bad = _nonfinite_entries(tensors)
        if bad:
            raise CheckpointCorruptError(f"{path}: non-finite values in {', '.join(bad[:5])}; refusing to load them")
        try:
            state = read_json(path / STATE_FILE, STATE_FILE)
        except (OSError, ValueError) as exc:
            raise CheckpointCorruptError(f"cannot parse {path / STATE_FILE}: {exc}") from exc
        check_state(state, path / STATE_FILE, marker["step"])
        return tensors, state
