"""Model folders: `config.json` (kind, format version, package version, config) + `model.safetensors`.

No pickle anywhere: weights are safetensors, configs are JSON. Files are written atomically (temporary file in the
same folder, then `os.replace`), so an interrupted save never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def package_version() -> str:
    try:
        return metadata.version("magvit2-maskgit")
    except metadata.PackageNotFoundError:
        return "unknown"


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_model_dir(directory: str | Path, kind: str, config: dict[str, Any], state_dict: dict[str, torch.Tensor],
                   extra: dict[str, Any] | None = None) -> Path:
    """Write a model folder. `kind` names the class so loading the wrong folder fails clearly."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}  # clone: no shared storage
    header = {"_kind": kind, "_format_version": FORMAT_VERSION, "_package_version": package_version()}
    payload = {**header, **(extra or {}), "config": config}
    _atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    _atomic_write(directory / CONFIG_NAME, lambda p: p.write_text(json.dumps(payload, indent=2) + "\n"))
    return directory


def read_model_config(directory: str | Path, kind: str) -> dict[str, Any]:
    """The parsed `config.json` of a model folder, checked for kind and format version."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"model folder not found: {directory}")
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {directory} (expected a folder written by save_pretrained)")
    try:
        payload = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_path} is not valid JSON: {e}") from e
    if payload.get("_kind") != kind:
        raise ValueError(f"{directory} holds a {payload.get('_kind')!r}, not a {kind!r}")
    version = payload.get("_format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{config_path}: format version {version} is not supported (this package reads "
                         f"{FORMAT_VERSION}); upgrade magvit2-maskgit or re-export the model")
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
    return payload["config"], state


def resolve_model_dir(path: str | Path, kind: str, run_subdir: str) -> Path:
    """A model folder given either itself or a training run folder holding it at `run_subdir/`."""
    path = Path(path)
    for candidate in (path, path / run_subdir):
        config = candidate / CONFIG_NAME
        if config.is_file():
            try:
                if json.loads(config.read_text()).get("_kind") == kind:
                    return candidate
            except json.JSONDecodeError:
                pass
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    raise FileNotFoundError(f"{path} is neither a {kind} folder (config.json + model.safetensors) nor a run folder "
                            f"with {run_subdir}/")
