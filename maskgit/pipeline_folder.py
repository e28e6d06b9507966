"""The pipeline folder format: names, and reading / writing `pipeline.json`.

Layout written by `TextToVideoPipeline.save_pretrained` (no pickle anywhere)::

    pipeline.json        kind, format version, package version, text encoder {spec, max_length, dim}, defaults
    tokenizer/           config.json + model.safetensors  (VideoTokenizer.save_pretrained)
    transformer/         config.json + model.safetensors  (MaskGitTransformer.save_pretrained)

`pipeline.json` is written last (atomically) and removed first on re-save, so a folder that has it is complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from magvit2.serialization import atomic_write_text, package_version

from .pipeline_settings import PipelineDefaults
from .text import TextEncoder

PIPELINE_KIND = "TextToVideoPipeline"
PIPELINE_FORMAT_VERSION = 1
PIPELINE_CONFIG = "pipeline.json"
TOKENIZER_DIR = "tokenizer"
TRANSFORMER_DIR = "transformer"
_NAMED_TEXT_ENCODERS = ("default", "minilm", "tiny")


def portable_spec(spec: str) -> str:
    """A text-encoder spec that rebuilds from any working directory (local folders become absolute paths)."""
    if spec in _NAMED_TEXT_ENCODERS or spec.startswith("tiny:"):
        return spec
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.is_dir() else spec


def write_pipeline_config(directory: str | os.PathLike, text_encoder: TextEncoder,
                          defaults: PipelineDefaults) -> Path:
    """Writes `directory/pipeline.json` atomically (the text encoder's portable spec, max_length and dim, and the
    sampling defaults); returns its path."""
    payload = {
        "_kind": PIPELINE_KIND,
        "_format_version": PIPELINE_FORMAT_VERSION,
        "_package_version": package_version(),
        "text_encoder": {"spec": portable_spec(text_encoder.spec),
                         "max_length": int(text_encoder.max_length), "dim": int(text_encoder.dim)},
        "defaults": defaults.to_dict(),
    }
    return atomic_write_text(Path(directory) / PIPELINE_CONFIG, json.dumps(payload, indent=2) + "\n")


def read_pipeline_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The checked contents of `directory/pipeline.json` (kind, format version, known keys only)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"pipeline folder not found: {directory}")
    path = directory / PIPELINE_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"no {PIPELINE_CONFIG} in {directory} (expected a folder written by "
                                f"TextToVideoPipeline.save_pretrained)")
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(payload, dict) or payload.get("_kind") != PIPELINE_KIND:
        raise ValueError(f"{path} describes a {payload.get('_kind') if isinstance(payload, dict) else None!r}, "
                         f"not a {PIPELINE_KIND!r}")
    if payload.get("_format_version") != PIPELINE_FORMAT_VERSION:
        raise ValueError(f"{path}: format version {payload.get('_format_version')!r} is not supported (this package "
                         f"reads {PIPELINE_FORMAT_VERSION}); upgrade magvit2-maskgit or re-export the pipeline")
    expected = {"_kind", "_format_version", "_package_version", "text_encoder", "defaults"}
    unknown = sorted(set(payload) - expected)
    missing = sorted(expected - set(payload) - {"_package_version"})
    if unknown or missing:
        raise ValueError(f"{path}: unknown keys {unknown}, missing keys {missing}")
    text = payload["text_encoder"]
    if not isinstance(text, dict) or set(text) != {"spec", "max_length", "dim"}:
        raise ValueError(f"{path}: text_encoder must hold exactly spec, max_length and dim; got {text!r}")
    return payload
