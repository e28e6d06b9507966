"""The one home of persistence: atomic writes, model folders, strict config and state loading.

* Atomic writes: a file is written under a hidden temporary name in its own folder, fsynced, then `os.replace`d onto
  its final name (`atomic_write`, `atomic_write_text`); a folder is built beside its destination and renamed in
  (`atomic_dir`). An interrupted save never leaves a half-written file or folder under the final name.
* Model folders: `config.json` (kind, format version, package version, config) + `model.safetensors`; no pickle.
  What a model path means (a folder, a run folder, a Hub repo id) is `magvit2.model_paths`.
* Strict loading: `config_from_dict` builds a config dataclass, refusing unknown keys and values of the wrong type
  (`magvit2.checks`); `load_state_strict` loads a state dict and names every missing, unexpected or mis-shaped
  tensor; `load_model_dir` refuses NaN/Inf weights, naming the tensor.
* Staging folders of killed saves (`<name>.tmp-<pid>`, `<name>.old-<pid>` of dead processes) are removed by the next
  `atomic_dir` of that name, or by `remove_stale_staging`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from magvit2.checks import check_keys, check_value, config_fields, dataclass_in, nonfinite_tensors, read_json

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def package_version() -> str:
    try:
        return metadata.version("magvit2-maskgit")
    except metadata.PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------------------------------------------------
# atomic writes


def fsync_path(path: str | os.PathLike, directory: bool = False) -> None:
    """fsync a file (errors raise) or a directory (best effort: some filesystems refuse it)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory and hasattr(os, "O_DIRECTORY") else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds, fsync it and rename it onto `path`.

    On any exception the temporary file is removed and `path` is untouched. The parent folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent, directory=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


_STAGING = re.compile(r"^(?P<name>[^/]+)\.(?:tmp|old)-(?P<pid>\d+)$")  # what atomic_dir names its staging folders
logger = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (ours always does)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_staging(parent: str | os.PathLike, names: Iterable[str] | None = None) -> list[Path]:
    """Remove the `<name>.tmp-<pid>` / `<name>.old-<pid>` folders that `atomic_dir` left in `parent` when process
    `pid` was killed mid-save: only folders of that pattern (for `name` in `names`, or any name when None), never a
    symlink or a file, and only when `pid` is dead. Returns what was removed."""
    parent = Path(parent)
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    wanted = None if names is None else set(names)
    for entry in parent.iterdir():
        match = _STAGING.match(entry.name)
        if (not match or (wanted is not None and match.group("name") not in wanted) or entry.is_symlink()
                or not entry.is_dir() or pid_alive(int(match.group("pid")))):
            continue
        logger.warning("removing %s, left by an interrupted save (process %s is gone)", entry, match.group("pid"))
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def atomic_dir(write_fn: Callable[[Path], Any], dest: str | os.PathLike) -> Path:
    """Build a folder atomically: `write_fn(tmp)` fills `<dest>.tmp-<pid>`, which then replaces `dest`.

    An existing `dest` is renamed to `<dest>.old-<pid>`, the new one renamed in, and the old one deleted; if
    `write_fn` fails, `dest` is untouched and the temporary folder removed. Staging folders of `dest` left by killed
    processes are removed first (`remove_stale_staging`).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(dest.parent, [dest.name])
    tmp, old = dest.with_name(f"{dest.name}.tmp-{os.getpid()}"), dest.with_name(f"{dest.name}.old-{os.getpid()}")
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        tmp.mkdir()
        write_fn(tmp)
        for path in tmp.rglob("*"):
            if path.is_file():
                fsync_path(path)
        if dest.exists():
            os.replace(dest, old)
        try:
            os.replace(tmp, dest)
        except BaseException:
            if old.exists() and not dest.exists():
                os.replace(old, dest)  # put the previous version back
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    fsync_path(dest.parent, directory=True)
    return dest


# ---------------------------------------------------------------------------------------------------------------
# strict configs and state dicts


def _tuples(value: Any) -> Any:
    """JSON/YAML lists -> tuples, recursively (configs hold tuples); mappings keep their type."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def config_from_dict(cls: type, data: Mapping[str, Any] | None, where: str | None = None) -> Any:
    """Build config dataclass `cls` from a (partial) mapping, strictly: unknown keys raise ValueError listing the known
    ones; every value is checked against the field's type hint (`magvit2.checks.check_value`: ints are ints, floats
    finite, booleans booleans, sections mappings); nested dataclass fields recurse; lists become tuples. The
    dataclass's own `__post_init__` then validates the values."""
    where = where or cls.__name__
    data = {} if data is None else data
    known, hints = config_fields(cls)
    check_keys(data, known, where)
    kwargs = {}
    for name, value in data.items():
        sub = dataclass_in(hints[name])
        if sub is not None and isinstance(value, Mapping):
            value = config_from_dict(sub, value, f"{where}.{name}")
        else:
            check_value(value, hints[name], f"{where}.{name}")
            if not isinstance(value, Mapping):
                value = _tuples(value)
        kwargs[name] = value
    missing = sorted(name for name, f in known.items() if name not in kwargs and f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)
    if missing:
        raise ValueError(f"{where} needs {missing}")
    return cls(**kwargs)


def config_to_dict(obj: Any) -> Any:
    """A (nested) config dataclass as plain JSON/YAML types (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [config_to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: config_to_dict(v) for k, v in obj.items()}
    return obj


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str | os.PathLike,
                      what: str = "weights") -> None:
    """`module.load_state_dict(state)` that refuses any mismatch with one message naming `source`, `what` and the
    keys: missing, unexpected, or "key K has shape S, this model expects S'"."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"key {k} has shape {tuple(state[k].shape)}, this model expects {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = ([f"missing {missing[:6]}"] if missing else []) + ([f"unexpected {unexpected[:6]}"] if unexpected
                                                                   else []) + shapes[:3]
        raise ValueError(f"{source}: the {what} do not match this model (another config?): {'; '.join(parts)}")
    module.load_state_dict(dict(state), strict=True)


# ---------------------------------------------------------------------------------------------------------------
# model folders


def save_model_dir(directory: str | Path, kind: str, config: dict[str, Any], state_dict: Mapping[str, torch.Tensor],
                   extra: dict[str, Any] | None = None) -> Path:
    """Write a model folder. `kind` names the class so loading the wrong folder fails clearly."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}  # clone: no shared storage
    header = {"_kind": kind, "_format_version": FORMAT_VERSION, "_package_version": package_version()}
    payload = {**header, **(extra or {}), "config": config}
    with atomic_write(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    atomic_write_text(directory / CONFIG_NAME, json.dumps(payload, indent=2) + "\n")
    return directory


def read_model_config(directory: str | Path, kind: str) -> dict[str, Any]:
    """The parsed `config.json` of a model folder, checked for kind and format version."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"model folder not found: {directory}")
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {directory} (expected a folder written by save_pretrained)")
    payload = read_json(config_path, CONFIG_NAME)
    if not isinstance(payload, dict) or payload.get("_kind") != kind:
        found = payload.get("_kind") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{directory} holds a {found!r}, not a {kind!r}")
    version = payload.get("_format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{config_path}: format version {version} is not supported (this package reads "
                         f"{FORMAT_VERSION}); upgrade magvit2-maskgit or re-export the model")
    if not isinstance(payload.get("config"), dict):
        raise ValueError(f"{config_path}: 'config' must be a JSON object; got {type(payload.get('config')).__name__}")
    return payload


def load_model_dir(directory: str | Path, kind: str, map_location: str | torch.device = "cpu"
                   ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a model folder -> (config dict, state dict). Pickle files are never loaded."""
    directory = Path(directory)
    payload = read_model_config(directory, kind)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        pickles = [p.name for p in directory.glob("*.bin")] + [p.name for p in directory.glob("*.pt*")]
        hint = f" (found {pickles}: pickle checkpoints are not loaded; convert them to safetensors)" if pickles else ""
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {directory}{hint}")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"could not read {weights}: {e} (truncated or corrupted file?)") from e
    bad = nonfinite_tensors(state)
    if bad:
        raise ValueError(f"{weights}: non-finite weights in {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''} "
                         "(saved from a diverged run?); refusing to load them")
    return payload["config"], state


def stored_dtype(directory: str | Path) -> torch.dtype:
    """The dtype most of a model folder's floating weights are stored in (read from the safetensors header only)."""
    from safetensors import safe_open

    counts: dict[torch.dtype, int] = {}
    with safe_open(str(Path(directory) / WEIGHTS_NAME), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open has keys(), no __iter__
            dtype = f.get_slice(key).get_dtype()
            torch_dtype = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
                           "F64": torch.float64}.get(dtype)
            if torch_dtype is not None:
                counts[torch_dtype] = counts.get(torch_dtype, 0) + 1
    return max(counts, key=counts.get) if counts else torch.float32
