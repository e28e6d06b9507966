"""What a model path means: the one rule for every `from_pretrained` and every command's model flag (`--tokenizer`,
`--model`, `--init-from`).

`name_or_path` (and `subfolder=`) names a root folder:

* a local path that exists: that folder (a local folder wins over a Hub repo spelled the same);
* otherwise a Hub repo id ('owner/name'): its snapshot in huggingface_hub's cache, downloaded unless cached, never
  when offline (`magvit2.hub.download_snapshot`; `subfolder=` fetches only that part);
* `subfolder=` (local or Hub) then descends into the root.

Inside the root, the model is at the first of its kind's `locations` that holds one: "" (the root itself, a
`save_pretrained` folder), then where this package puts one: a tokenizer run's export `tokenizer/`, a pipeline's
`tokenizer/` and `transformer/`, a MaskGit run's export `pipeline/` (and `pipeline/tokenizer/`, ...). A folder holds
a kind when its config file (`config.json`; a pipeline's `pipeline.json`) names it (`_kind`).

Training checkpoints (a trainer's `--init-from CHECKPOINT`) are not models: `trainers.model_sources` handles them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from magvit2.checks import read_json
from magvit2.hub import download_snapshot, is_repo_id
from magvit2.serialization import CONFIG_NAME


@dataclass(frozen=True)
class ModelKind:
    """A kind of saved model: the `_kind` its config file names, that file, and where (relative to a folder the user
    names) this package puts one besides the folder itself."""

    name: str  # "VideoTokenizer"
    config_name: str = CONFIG_NAME
    locations: tuple[str, ...] = ()  # e.g. ("tokenizer", "pipeline/tokenizer")
    what: str = "model"  # for messages: "tokenizer", "pipeline", ...


@dataclass(frozen=True)
class ModelLocation:
    folder: Path  # the folder holding the model's config and weights
    repo_id: str | None  # the Hub repo it came from (None: a local path)
    root: Path  # what `name_or_path` (+ subfolder) named: a local folder or a Hub snapshot


def _check_subfolder(subfolder: str | None) -> str | None:
    if subfolder in (None, ""):
        return None
    parts = PurePosixPath(str(subfolder).replace("\\", "/")).parts
    if not isinstance(subfolder, str) or not parts or PurePosixPath(subfolder).is_absolute() or ".." in parts:
        raise ValueError(f"subfolder must be a relative folder inside the model folder or repo (e.g. 'tokenizer'); "
                         f"got {subfolder!r}")
    return "/".join(parts)


def _kind_of(folder: Path, config_name: str) -> str | None:
    """The `_kind` that `folder/config_name` names, or None when there is no such file."""
    path = folder / config_name
    if not path.is_file():
        return None
    payload = read_json(path, config_name)
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: expected a JSON object (written by save_pretrained); got "
                         f"{type(payload).__name__}")
    return str(payload.get("_kind"))


def resolve_model_path(name_or_path: str | os.PathLike, kind: ModelKind, *, subfolder: str | None = None,
                       revision: str | None = None, cache_dir: str | os.PathLike | None = None,
                       token: str | bool | None = None, local_files_only: bool | None = None,
                       force_download: bool = False) -> ModelLocation:
    """The folder holding a `kind` model that `name_or_path` names (module docstring). FileNotFoundError (a
    `HubModelNotFoundError` for a repo id that cannot be had) or ValueError name what was given and what was
    expected."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise ValueError(f"expected a {kind.what} folder, run folder or Hub repo id; got {name_or_path!r}")
    sub = _check_subfolder(subfolder)
    source = str(name_or_path)
    path = Path(name_or_path).expanduser()
    repo_id = None
    if path.exists():
        root = path
    elif is_repo_id(source):
        repo_id = source
        root = download_snapshot(source, subfolder=sub, revision=revision, cache_dir=cache_dir, token=token,
                                 local_files_only=local_files_only, force_download=force_download)
    else:
        raise FileNotFoundError(f"{source} does not exist (expected a {kind.what} folder, a run folder holding "
                                f"one, or a Hugging Face Hub repo id 'owner/name')")
    if sub is not None:
        root = root / sub
        if not root.is_dir():
            raise FileNotFoundError(f"{source} has no subfolder {sub!r}")
    found: dict[str, str] = {}
    for location in ("", *kind.locations):
        folder = root / location if location else root
        name = _kind_of(folder, kind.config_name) if folder.is_dir() else None
        if name == kind.name:
            return ModelLocation(folder, repo_id, root)
        if name is not None:
            found[location or "."] = name
    where = f"{source}" + (f" (subfolder {sub!r})" if sub else "")
    places = ", ".join(f"{loc}/" for loc in kind.locations)
    if found:  # a model of another kind: a wrong value rather than a missing file
        holds = ", ".join(f"a {v!r}" + (f" at {k}/" if k != "." else "") for k, v in found.items())
        raise ValueError(f"{where} holds {holds}, not a {kind.name!r} (expected {kind.config_name} naming it there"
                         f"{' or in ' + places if places else ''})")
    raise FileNotFoundError(f"{where} is not a {kind.what}: no {kind.config_name} naming {kind.name!r} in it"
                            f"{' or in ' + places if places else ''}")
