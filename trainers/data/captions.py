"""Captions and prompts: the stage-two caption bank, prompt files, and prompt -> file-name slugs.

`CaptionBank` runs the frozen text encoder once per unique caption at startup when they fit its cache (a batch's
text is then assembled from the bank by right-padding, no encoder call per step); for more captions than that it
embeds per batch into a bounded LRU cache. It knows no model: the trainer hands it the encoder's `encode` function
and wraps what `embed` returns (data code never imports `maskgit`).
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import torch

from magvit2.checks import read_utf8

logger = logging.getLogger(__name__)


class Encoded(Protocol):
    """What a text encoder's `encode(captions)` returns (e.g. `maskgit.text.TextEmbedding`)."""

    embeds: torch.Tensor  # (k, m, d)
    mask: torch.Tensor  # (k, m) bool, True = real token


class CaptionBank:
    """Frozen text embeddings of captions, computed once each while they fit a bounded cache.

    `encode(captions)` is the frozen encoder (`TextEncoder.encode`), returning `embeds (k, m, d)` and `mask (k, m)`.
    Each caption keeps only its real tokens `(m_i, d)` on the CPU; `embed(captions)` right-pads a batch to its
    longest caption: `(embeds (b, m, d), mask (b, m) bool)` (the trainer wraps them in `TextEmbedding`). Up to `cache_size` unique captions, all of them
    are embedded at construction (`chunk` per encoder call) and never again. Beyond that (a million-clip dataset),
    nothing is embedded at construction: a batch's captions are embedded when they are missing (one encoder call per
    batch) and kept in a least-recently-used cache of `cache_size` entries, so memory stays bounded. In that mode an
    embedding is computed inside whichever batch first needs it; encoders whose output depends on the batch's
    padding then match a resumed run to float tolerance rather than bit for bit (the test `tiny` encoder: exact).
    """

    def __init__(self, encode: Callable[[list[str]], Encoded], captions: Sequence[str], chunk: int = 64,
                 cache_size: int = 16384) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1; got {cache_size}")
        self.encode, self.chunk, self.cache_size = encode, chunk, cache_size
        self.table: OrderedDict[str, torch.Tensor] = OrderedDict()
        unique = list(dict.fromkeys(captions))
        self.lazy = len(unique) > cache_size
        if self.lazy:
            logger.info("%d unique captions > cache_size=%d: embedding them per batch (LRU cache)", len(unique),
                        cache_size)
        else:
            self.add(unique)

    def add(self, captions: Sequence[str]) -> None:
        new = [c for c in dict.fromkeys(captions) if c not in self.table]
        for start in range(0, len(new), self.chunk):
            part = new[start : start + self.chunk]
            out = self.encode(part)  # embeds (k, m, d), mask (k, m)
            for row, caption in enumerate(part):
                tokens = out.embeds[row][out.mask[row]].float().cpu()  # (m_i, d)
                self.table[caption] = tokens if len(tokens) else out.embeds.new_zeros(1, out.embeds.shape[-1]).cpu()

    def __len__(self) -> int:
        return len(self.table)

    def embed(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """`(embeds (b, m, d), mask (b, m))` of `captions`, right-padded to the longest."""
        self.add(captions)
        rows = [self.table[c] for c in captions]
        if self.lazy:
            for c in captions:
                self.table.move_to_end(c)
            while len(self.table) > max(self.cache_size, len(set(captions))):
                self.table.popitem(last=False)
        m, d = max(r.shape[0] for r in rows), rows[0].shape[1]
        embeds = torch.zeros(len(rows), m, d)  # (b, m, d)
        mask = torch.zeros(len(rows), m, dtype=torch.bool)  # (b, m)
        for i, r in enumerate(rows):
            embeds[i, : r.shape[0]], mask[i, : r.shape[0]] = r, True
        return embeds, mask


def warn_empty_captions(captions: Sequence[str], what: str) -> int:
    """Log how many captions are empty (they train like unconditional samples); returns the count."""
    empty = sum(not c.strip() for c in captions)
    if empty:
        logger.warning("%d of %d %s have an empty caption; they train as unconditional samples (add captions via "
                       "metadata.jsonl or NAME.txt sidecars)", empty, len(captions), what)
    return empty


def read_prompt_file(path: str | os.PathLike, flag: str = "--prompt-file") -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped: one prompt per line. `flag` names it in errors."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {path}: no such file")
    lines = [line.strip() for line in read_utf8(path, "prompt file").splitlines()]
    prompts = [line for line in lines if line]
    if not prompts:
        raise ValueError(f"{flag} {path} holds no prompts (one per line; blank lines are skipped)")
    return prompts


def read_prompts(prompts: Sequence[str] | None, prompt_file: str | os.PathLike | None) -> list[str]:
    """`--prompt` values, then the prompts of `--prompt-file`."""
    out = [p.strip() for p in (prompts or [])]
    if any(not p for p in out):
        raise ValueError("--prompt must not be empty or blank")
    if prompt_file is not None:
        out += read_prompt_file(prompt_file)
    if not out:
        raise ValueError("no prompts: pass --prompt TEXT (repeatable) or --prompt-file FILE")
    return out


def slugify(text: str, max_length: int = 48) -> str:
    """A file-name-safe ASCII slug: 'A Cat, jumping!' -> 'a-cat-jumping' (empty -> 'video')."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_length].rstrip("-") or "video"
