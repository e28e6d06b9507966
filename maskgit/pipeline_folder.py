"""The pipeline folder format: names, reading / writing `pipeline.json`, and loading a folder's components.

Layout written by `TextToVideoPipeline.save_pretrained` (no pickle anywhere)::

    pipeline.json        kind, format version, package version, text encoder {spec, max_length, dim}, defaults
    model_index.json     diffusers' index: _class_name, _magvit2_maskgit_version, each component as [library, class]
                         (informational: what loads is pipeline.json; folders without it, written before it existed,
                         load the same)
    tokenizer/           config.json + model.safetensors  (VideoTokenizer's folder)
    transformer/         config.json + model.safetensors  (MaskGitTransformer's folder)
    README.md            the model card (`magvit2.model_card`); sample.gif when the run had one

`pipeline.json` is written last (atomically) and removed first on re-save, so a folder that has it is complete.

Loading stays inside the folder: `tokenizer/` and `transformer/` (and their files) must not lead out of it through
a symlink, and a text-encoder spec that is a local folder must lie inside it, unless the caller allows outside
paths (`component_dir`, `text_encoder_source`). Named encoders ('default', 'tiny:32') and hub names are fine.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from magvit2.checks import check_config_dict, inside, read_json
from magvit2.model_card import CardSpec
from magvit2.model_paths import ModelKind
from magvit2.serialization import CONFIG_NAME, WEIGHTS_NAME, atomic_write_text, package_version
from magvit2.tokenizer import VideoTokenizer

from .pipeline_settings import PipelineDefaults
from .text import DEFAULT_TEXT_ENCODER_ID, TextEncoder, build_text_encoder
from .transformer import MaskGitTransformer

PIPELINE_KIND = "TextToVideoPipeline"
PIPELINE_FORMAT_VERSION = 1
PIPELINE_CONFIG = "pipeline.json"
MODEL_INDEX = "model_index.json"
VERSION_KEY = "_magvit2_maskgit_version"  # model_index.json's counterpart of diffusers' `_diffusers_version`
TOKENIZER_DIR = "tokenizer"
TRANSFORMER_DIR = "transformer"
# a pipeline folder, or a MaskGit run folder holding its export at pipeline/ (`magvit2.model_paths`)
PIPELINE_MODEL_KIND = ModelKind(PIPELINE_KIND, PIPELINE_CONFIG, locations=("pipeline",), what="text-to-video pipeline")
_NAMED_TEXT_ENCODERS = ("default", "minilm", "tiny")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
OUTSIDE_HINT = ("pass allow_outside_paths=True (magvit2-generate --allow-outside-paths) only if you trust the "
                "pipeline folder")


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
    payload = read_json(path, PIPELINE_CONFIG)
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
        raise ValueError(f"{path}: text_encoder must hold exactly spec, max_length and dim; got {text!r:.200}")
    if not isinstance(text["spec"], str) or not text["spec"].strip():
        raise ValueError(f"{path}: text_encoder.spec must be a non-empty string; got {text['spec']!r:.80}")
    for key, limit in (("max_length", 1 << 16), ("dim", 1 << 16)):
        value = text[key]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
            raise ValueError(f"{path}: text_encoder.{key} must be an int in [1, {limit}]; got {value!r:.80}")
    try:
        check_config_dict(PipelineDefaults, payload["defaults"], "defaults")
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return payload


def component_dir(directory: str | os.PathLike, name: str, allow_outside_paths: bool = False) -> Path:
    """`directory/name` (tokenizer/ or transformer/), checked: a folder, and (unless `allow_outside_paths`) neither
    it nor its config.json / model.safetensors leads out of the pipeline folder through a symlink."""
    directory = Path(directory)
    sub = directory / name
    if not sub.is_dir():
        raise FileNotFoundError(f"pipeline folder {directory} has no {name}/ subfolder (incomplete save?)")
    if not allow_outside_paths:
        for path in (sub, sub / CONFIG_NAME, sub / WEIGHTS_NAME):
            if (path.exists() or path.is_symlink()) and not inside(path, directory):
                raise ValueError(f"{path} is a symlink that leads out of the pipeline folder (to "
                                 f"{path.resolve()}); refusing to follow it: {OUTSIDE_HINT}")
    return sub


def text_encoder_source(directory: str | os.PathLike, spec: str, allow_outside_paths: bool = False) -> str:
    """The text-encoder spec of a pipeline folder's `pipeline.json`, made safe to build: a named encoder ('default',
    'tiny:32') or a hub name is returned as is; a local folder must lie inside the pipeline folder (a relative spec
    is taken relative to it) unless `allow_outside_paths`."""
    directory = Path(directory)
    if spec in _NAMED_TEXT_ENCODERS or spec.startswith("tiny:"):
        return spec
    where = f"{directory / PIPELINE_CONFIG}: text_encoder.spec {spec!r:.120}"
    path = Path(spec).expanduser()
    local = directory / path if not path.is_absolute() else path
    if not path.is_absolute() and (local.exists() or local.is_symlink()):
        if inside(local, directory) or allow_outside_paths:
            return str(local)
        raise ValueError(f"{where} leads out of the pipeline folder (to {local.resolve()}); {OUTSIDE_HINT}")
    looks_like_path = path.is_absolute() or spec.startswith(("~", ".")) or path.exists()
    if looks_like_path:
        if allow_outside_paths:
            return spec
        raise ValueError(f"{where} is a folder outside the pipeline folder; {OUTSIDE_HINT}")
    if _HUB_NAME.match(spec):
        return spec
    raise ValueError(f"{where} is neither a named encoder, a hub name (org/name) nor a folder inside the pipeline")


def text_encoder_hub_id(encoder: TextEncoder) -> str | None:
    """The Hugging Face Hub id of a pipeline's text encoder: the default MiniLM's, or the hub name it was built
    from; None for the test-only tiny encoder and local folders."""
    if encoder.spec in ("default", "minilm") or encoder.spec == DEFAULT_TEXT_ENCODER_ID:
        return DEFAULT_TEXT_ENCODER_ID
    if encoder.spec.startswith("tiny") or Path(encoder.spec).expanduser().exists():
        return None
    return encoder.spec if _HUB_NAME.match(encoder.spec) and "/" in encoder.spec else None


def write_model_index(directory: str | os.PathLike, components: dict[str, Any], text_encoder: TextEncoder) -> Path:
    """`model_index.json` as diffusers writes it: the pipeline class, our version, each component as [library,
    class] (and, since the text encoder is referenced rather than stored, its Hub id or spec)."""
    payload: dict[str, Any] = {"_class_name": PIPELINE_KIND, VERSION_KEY: package_version()}
    for name, module in components.items():
        payload[name] = [type(module).__module__.split(".")[0], type(module).__name__]
    payload["text_encoder_name_or_path"] = text_encoder_hub_id(text_encoder) or text_encoder.spec
    return atomic_write_text(Path(directory) / MODEL_INDEX, json.dumps(payload, indent=2) + "\n")


def check_model_index(directory: str | os.PathLike) -> None:
    """A folder's `model_index.json`, when it has one, must name this pipeline class (a diffusers folder does not)."""
    path = Path(directory) / MODEL_INDEX
    if not path.is_file():
        return
    payload = read_json(path, MODEL_INDEX)
    name = payload.get("_class_name") if isinstance(payload, dict) else None
    if name != PIPELINE_KIND:
        raise ValueError(f"{path} names {name!r}, not {PIPELINE_KIND!r}: a pipeline of another library (diffusers?) "
                         "cannot be loaded by magvit2-maskgit")


def pipeline_config(pipe: Any) -> dict[str, Any]:
    """`TextToVideoPipeline.config`: what `model_index.json` holds plus the text encoder's settings, the frame
    size, the longest single window and the sampling defaults."""
    h, w = pipe.tokenizer.config.image_size
    text = pipe.text_encoder
    return {"_class_name": PIPELINE_KIND, VERSION_KEY: package_version(),
            **{name: [type(m).__module__.split(".")[0], type(m).__name__] for name, m in pipe.components.items()},
            "text_encoder_name_or_path": text_encoder_hub_id(text) or text.spec,
            "text_encoder_max_length": text.max_length, "text_dim": text.dim, "height": h, "width": w,
            "max_num_frames": pipe.max_num_frames, "defaults": pipe.defaults.to_dict()}


def pipeline_card_spec(pipe: Any) -> CardSpec:
    """What a pipeline's model card says (`magvit2.model_card`): its parts (the tokenizer's Hub repo and the text
    encoder's Hub id when known), the Hub models it derives from, config, and how to run it."""
    tok, text, transformer = pipe.tokenizer, pipe.text_encoder, pipe.transformer
    text_id = text_encoder_hub_id(text)
    tok_from = f"[{tok.hub_repo_id}](https://huggingface.co/{tok.hub_repo_id})" if tok.hub_repo_id else \
        "trained for this pipeline"
    h, w = tok.config.image_size
    c = transformer.config
    return CardSpec(
        kind="text-to-video pipeline (MAGVIT-v2 video tokenizer + text-conditioned MaskGit transformer)",
        import_line="import torch\nfrom maskgit import TextToVideoPipeline, export_to_video",
        class_name="TextToVideoPipeline", tags=["text-to-video", "maskgit", "magvit2", "video"],
        pipeline_tag="text-to-video", install="pip install 'magvit2-maskgit[text]'",
        base_model=[b for b in (tok.hub_repo_id, transformer.base_model) if b],
        config={"tokenizer": tok.config.to_dict(), "transformer": c.to_dict(),
                "text_encoder": {"name_or_path": text_id or text.spec, "max_length": text.max_length,
                                 "dim": text.dim},
                "defaults": pipe.defaults.to_dict()},
        components=[("tokenizer", f"`{type(tok).__name__}`, {h}x{w} frames, {tok.codebook_size} codes; {tok_from}"),
                    ("text_encoder", f"[{text_id}](https://huggingface.co/{text_id})" if text_id else f"`{text.spec}`"),
                    ("transformer", f"`MaskGitTransformer`, depth {c.depth}, width {c.dim}, latent grid (t', h', w') "
                                    f"{tuple(c.latent_shape)}")],
        usage=f"frames = pipe(\"a prompt\", generator=torch.Generator().manual_seed(0)).frames[0]  "
              f"# ({pipe.max_num_frames}, {h}, {w}, 3) in [0, 1]\n"
              f"export_to_video(frames, \"video.mp4\", fps={pipe.defaults.fps:g})")


def load_components(directory: Path, *, from_hub: bool, device: Any, text_encoder: TextEncoder | None = None,
                    allow_outside_paths: bool = False, allow_pickle_text_encoder: bool = False
                    ) -> tuple[VideoTokenizer, TextEncoder, MaskGitTransformer, PipelineDefaults]:
    """(tokenizer, text_encoder, transformer, defaults) of a pipeline folder, the arguments of
    `TextToVideoPipeline(...)` (modules on the CPU; the text encoder built on `device` unless one is given, which
    must give the stored width); the keywords as `TextToVideoPipeline.from_pretrained` documents them."""
    payload = read_pipeline_config(directory)
    check_model_index(directory)
    # a Hub cache snapshot's files are links into the repo's blobs/ (checked by magvit2.hub)
    tokenizer_dir, transformer_dir = (component_dir(directory, sub, allow_outside_paths or from_hub)
                                      for sub in (TOKENIZER_DIR, TRANSFORMER_DIR))
    defaults = PipelineDefaults.from_dict(payload["defaults"])
    tokenizer = VideoTokenizer.from_pretrained(tokenizer_dir)
    transformer = MaskGitTransformer.from_pretrained(transformer_dir)
    if text_encoder is None:
        text = payload["text_encoder"]
        spec = text_encoder_source(directory, text["spec"], allow_outside_paths)
        text_encoder = build_text_encoder(spec, max_length=text["max_length"], device=device,
                                          allow_pickle=allow_pickle_text_encoder)
        if text_encoder.dim != text["dim"]:
            raise ValueError(f"text encoder {text['spec']!r} gives {text_encoder.dim}-d embeddings; the pipeline "
                             f"was saved with {text['dim']}-d ones")
    return tokenizer, text_encoder, transformer, defaults
