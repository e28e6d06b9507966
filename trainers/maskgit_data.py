"""Stage-two inputs: code clips (from shards or tokenized on the fly), their held-out split, the caption bank, the
frozen tokenizer, --init-from weights and sample prompts.

`CodeClips` is an in-memory dataset of codes + captions that the resumable batch sampler indexes like the folder
datasets (`SampleKey(epoch, index, batch_index)`); `collate_codes` batches it. `split_code_clips` holds out
`val_fraction` of the *source files* (seeded, `trainers.data.split_files`), so the clips of one file (several epochs
of crops in a shard folder) never land on both sides. `CaptionBank` runs the frozen text encoder once per unique
caption at startup; a batch's text is then assembled from the bank by right-padding (no encoder call per step).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from magvit2 import VideoTokenizer
from magvit2.serialization import resolve_model_dir
from maskgit.config import MaskGitConfig
from maskgit.pipeline import load_transformer
from maskgit.text import TextEmbedding, TextEncoder
from trainers.checkpointing import MARKER, CheckpointManager
from trainers.codes import CodeShardDataset
from trainers.data import SampleKey, split_files

logger = logging.getLogger(__name__)


class CodeClips(Dataset):
    """Code grids in memory: items `{"codes": long (t', h', w'), "caption", "path", "index", "epoch",
    "batch_index"}`; one kind, so every batch is rectangular."""

    def __init__(self, codes: torch.Tensor, captions: Sequence[str], paths: Sequence[str]) -> None:
        if codes.ndim != 4 or not len(codes) == len(captions) == len(paths):
            raise ValueError(f"CodeClips needs codes (n, t', h', w') and n captions and paths; got "
                             f"{tuple(codes.shape)}, {len(captions)}, {len(paths)}")
        self.codes = codes.long()  # (n, t', h', w')
        self.captions, self.paths = list(captions), list(paths)
        self.kinds = ["codes"] * len(self.captions)

    @classmethod
    def from_shards(cls, shards: CodeShardDataset) -> CodeClips:
        return cls(shards.codes, shards.captions, [r["path"] for r in shards.records])

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.codes.shape[1:])

    def select(self, indices: Sequence[int]) -> CodeClips:
        index = torch.tensor(list(indices), dtype=torch.long)
        return CodeClips(self.codes[index], [self.captions[i] for i in indices], [self.paths[i] for i in indices])

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, key: int | tuple[int, ...]) -> dict[str, Any]:
        epoch, index, batch_index = SampleKey(*key) if isinstance(key, tuple) else (0, int(key), -1)
        return {"codes": self.codes[index], "caption": self.captions[index], "path": self.paths[index],
                "index": index, "epoch": epoch, "batch_index": batch_index}


def collate_codes(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`{"codes": long (b, t', h', w'), "caption": list, "path": list, "index": (b,), "epoch", "batch_index"}`."""
    return {"codes": torch.stack([it["codes"] for it in items]), "caption": [it["caption"] for it in items],
            "path": [it["path"] for it in items], "index": torch.tensor([it["index"] for it in items]),
            "epoch": items[0]["epoch"], "batch_index": items[0]["batch_index"]}


def split_code_clips(clips: CodeClips, val_fraction: float, seed: int) -> tuple[CodeClips, CodeClips | None]:
    """(train, val) by source file: a seeded `val_fraction` of the distinct paths is held out; 0 -> (clips, None)."""
    if val_fraction == 0:
        return clips, None
    paths = sorted(set(clips.paths))
    if len(paths) < 2:
        raise ValueError(f"data.val_fraction={val_fraction} needs clips from at least 2 files to hold some out; the "
                         f"codes come from {len(paths)} (set data.val_fraction: 0 or pass --val-codes)")
    _, val_paths = split_files(paths, val_fraction, seed)
    held = set(val_paths)
    train = [i for i, p in enumerate(clips.paths) if p not in held]
    val = [i for i, p in enumerate(clips.paths) if p in held]
    return clips.select(train), clips.select(val)


class CaptionBank:
    """Frozen text embeddings of a fixed set of captions, computed once (`chunk` prompts per encoder call).

    Each caption keeps only its real tokens `(m_i, d)` on the CPU; `embed(captions)` right-pads a batch to its
    longest caption: `TextEmbedding(embeds (b, m, d), mask (b, m))`. Unknown captions are encoded (and kept) on
    demand, so sample prompts and later additions work too.
    """

    def __init__(self, encoder: TextEncoder, captions: Sequence[str], chunk: int = 64) -> None:
        self.encoder, self.chunk = encoder, chunk
        self.table: dict[str, torch.Tensor] = {}
        self.add(captions)

    def add(self, captions: Sequence[str]) -> None:
        new = [c for c in dict.fromkeys(captions) if c not in self.table]
        for start in range(0, len(new), self.chunk):
            part = new[start : start + self.chunk]
            out = self.encoder.encode(part)  # (k, m, d), mask (k, m)
            for row, caption in enumerate(part):
                tokens = out.embeds[row][out.mask[row]].float().cpu()  # (m_i, d)
                self.table[caption] = tokens if len(tokens) else out.embeds.new_zeros(1, out.embeds.shape[-1]).cpu()

    def __len__(self) -> int:
        return len(self.table)

    def embed(self, captions: Sequence[str]) -> TextEmbedding:
        self.add(captions)
        rows = [self.table[c] for c in captions]
        m, d = max(r.shape[0] for r in rows), rows[0].shape[1]
        embeds = torch.zeros(len(rows), m, d)  # (b, m, d)
        mask = torch.zeros(len(rows), m, dtype=torch.bool)  # (b, m)
        for i, r in enumerate(rows):
            embeds[i, : r.shape[0]], mask[i, : r.shape[0]] = r, True
        return TextEmbedding(embeds, mask)


def warn_empty_captions(captions: Sequence[str], what: str) -> int:
    """Log how many captions are empty (they train like unconditional samples); returns the count."""
    empty = sum(not c.strip() for c in captions)
    if empty:
        logger.warning("%d of %d %s have an empty caption; they train as unconditional samples (add captions via "
                       "metadata.jsonl or NAME.txt sidecars)", empty, len(captions), what)
    return empty


# ---------------------------------------------------------------------------------------------------------------
# the frozen tokenizer, --init-from weights, sample prompts


def load_frozen_tokenizer(path: str | Path, device: torch.device) -> tuple[VideoTokenizer, Path]:
    """A tokenizer folder or tokenizer run folder -> (tokenizer in eval mode without grads, its folder)."""
    folder = resolve_model_dir(path, "VideoTokenizer", "tokenizer")
    tokenizer = VideoTokenizer.from_pretrained(folder).to(device).eval().requires_grad_(False)
    if tokenizer.has_cond_layers:
        raise ValueError(f"--tokenizer {path}: stage two needs an unconditioned tokenizer; this one has cond_* layers")
    return tokenizer, folder


def load_init_weights(path: str | Path) -> tuple[MaskGitConfig, dict[str, torch.Tensor], str]:
    """--init-from: a pipeline folder, a MaskGit run folder (its pipeline/), a checkpoint folder (its online
    transformer weights) or a transformer folder -> (config, state dict, description)."""
    path = Path(path)
    for folder in (path, path / "pipeline"):
        if (folder / "pipeline.json").is_file():
            model = load_transformer(folder / "transformer")
            return model.config, model.state_dict(), f"pipeline {folder}"
    if (path / MARKER).is_file():
        tensors, state = CheckpointManager(path.parent.parent, is_main=False).load(path)
        config = MaskGitConfig.from_dict(state["config"]["maskgit_resolved"])
        return config, tensors["transformer"], f"checkpoint {path}"
    if (path / "config.json").is_file():
        model = load_transformer(path)
        return model.config, model.state_dict(), f"transformer {path}"
    raise FileNotFoundError(f"--init-from {path}: expected a pipeline folder (pipeline.json), a MaskGit run folder "
                            "(pipeline/), a checkpoint folder (COMPLETE.json) or a transformer folder")


def read_prompt_file(path: str | Path) -> list[str]:
    """One prompt per line (UTF-8); blank lines ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--sample-prompts {path}: no such file")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"--sample-prompts {path} holds no prompts (one per line)")
    return prompts


def slug(text: str) -> str:
    """A file-name-safe ASCII slug of a prompt."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].rstrip("-") or "prompt"
