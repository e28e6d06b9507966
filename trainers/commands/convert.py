"""Convert released tokenizer weights into our tokenizer folders (the work behind `magvit2-convert`).

Open-MAGVIT2: a Lightning `.ckpt` (its `state_dict` holds `encoder.*`, `decoder.*`, `loss.*` and the EMA copies
`model_ema.*`), a bare state dict saved with `torch.save`, or a `.safetensors` file -> a `VideoTokenizer` folder
(`config.json` + `model.safetensors`) that `magvit2-tokenize`, `magvit2-reconstruct`, `magvit2-train-maskgit` and
the pipeline load like any other. Pickle files are read with `torch.load(weights_only=True)` only.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from magvit2.open_magvit2 import OpenMagvit2Tokenizer
from magvit2.open_magvit2_config import OpenMagvit2Config
from magvit2.presets import open_magvit2_preset_config
from magvit2.serialization import atomic_dir

DEFAULT_PRESET = "video"  # their released video tokenizer


def read_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """A checkpoint's contents: `.safetensors` via safetensors, anything else via `torch.load(weights_only=True)`
    (never unrestricted unpickling). Unreadable or refused files raise ValueError saying what to do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"could not read {path} as safetensors: {e}") from e
    with path.open("rb") as f:
        head = f.read(1)
    archive = zipfile.is_zipfile(path)  # torch.save writes a zip archive (before torch 1.6, a bare pickle)
    if not archive and head != b"\x80":
        raise ValueError(f"{path} is not a torch checkpoint (neither a complete torch.save archive nor a pickle; "
                         "truncated?) and not .safetensors")
    try:  # mmap: a Lightning checkpoint's optimizer state is never read into memory
        return torch.load(path, map_location="cpu", weights_only=True, mmap=archive)
    except _UNPICKLING_ERROR as e:
        raise ValueError(f"{path}: torch.load(weights_only=True) refused this file ({_first_reason(e)}); this "
                         "converter never unpickles arbitrary objects. If you trust the file, re-save just its "
                         "tensors, e.g. torch.save(ckpt['state_dict'], 'state.pt'), or as .safetensors, and convert "
                         "that") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable torch checkpoint (truncated or corrupted?): "
                         f"{_first_reason(e)}") from e


# what torch.load(weights_only=True) raises for a file that needs more than tensors (pickle's error type, reached
# through torch so that nothing here imports an unpickler)
_UNPICKLING_ERROR = torch.serialization.pickle.UnpicklingError


def _first_reason(error: BaseException) -> str:
    """The informative sentence of a torch.load error (after 'WeightsUnpickler error:' when there is one)."""
    text = str(error)
    _, found, after = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (after if found else text).splitlines() if line.strip()]
    return lines[0].split(". ")[0] if lines else type(error).__name__


def open_magvit2_config(preset: str | None = None, config_path: str | Path | None = None) -> OpenMagvit2Config:
    """The architecture to convert into: a preset (default: their released video model) or a JSON file holding
    either their own config (`{"ddconfig": {...}, "n_embed": 262144, "embed_dim": 18}`) or ours
    (`OpenMagvit2Config.to_dict()`)."""
    if preset is not None and config_path is not None:
        raise ValueError("pass either a preset or a config file, not both")
    if config_path is None:
        return open_magvit2_preset_config(preset or DEFAULT_PRESET)
    path = Path(config_path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object; got {type(data).__name__}")
    if "ddconfig" not in data:
        return OpenMagvit2Config.from_dict(data)
    unknown = sorted(set(data) - {"ddconfig", "n_embed", "embed_dim"})
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown} beside ddconfig; expected n_embed, embed_dim")
    config = OpenMagvit2Config.from_ddconfig(data["ddconfig"], n_embed=data.get("n_embed"))
    if data.get("embed_dim", config.z_channels) != config.z_channels:
        raise ValueError(f"{path}: embed_dim {data['embed_dim']} != z_channels {config.z_channels}; this converter "
                         "handles LFQ without projections only")
    return config


def convert_open_magvit2(checkpoint: str | Path, out_dir: str | Path, ema: bool = False, preset: str | None = None,
                         config_path: str | Path | None = None) -> dict[str, Any]:
    """Read an Open-MAGVIT2 checkpoint, load it strictly into an `OpenMagvit2Tokenizer` and write the tokenizer folder
    `out_dir` (atomically; it must not exist or be empty). Returns a summary (folder, config, codebook, shapes)."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty folder; choose a new output folder")
    config = open_magvit2_config(preset, config_path)
    state = read_checkpoint(checkpoint)
    tokenizer = OpenMagvit2Tokenizer.from_open_magvit2(state, config, ema=ema, source=str(checkpoint))
    atomic_dir(tokenizer.save_pretrained, out)
    num_frames = 1 + 4 * tokenizer.time_compression
    return {"out": str(out), "config": config.to_dict(), "ema": ema, "codebook_size": tokenizer.codebook_size,
            "num_parameters": sum(p.numel() for p in tokenizer.parameters()), "num_frames": num_frames,
            "latent_shape": list(tokenizer.latent_shape(num_frames))}
