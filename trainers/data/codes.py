"""Stage-two codes: code shards on disk (`magvit2-tokenize` writes, the MaskGit trainer reads) and `CodeClips`, the
in-memory code dataset the resumable batch sampler indexes.

Layout of CODES_DIR:
    index.json                  format version, tokenizer config, latent shape, shard list, counts, skipped files
    codes-00000.safetensors     "codes": int32 (n, t', h', w')
    codes-00000.jsonl           one line per clip: {"path", "caption", "clip"}
Shards are written atomically and index.json last, so a folder with an index is complete.

`split_code_clips` holds out `val_fraction` of the *source files* (seeded, `trainers.data.folders.split_files`), so
the clips of one file (several epochs of crops in a shard folder) never land on both sides.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from magvit2.serialization import atomic_write, atomic_write_text
from trainers.data.folders import SampleKey, split_files

FORMAT_VERSION = 1
INDEX = "index.json"


class CodeShardWriter:
    """Accumulates (codes, caption, path) and writes shards of `shard_size` clips."""

    def __init__(self, out_dir: str | Path, shard_size: int = 1024) -> None:
        self.out_dir = Path(out_dir)
        if (self.out_dir / INDEX).exists():
            raise FileExistsError(f"{self.out_dir} already holds code shards ({INDEX}); choose a new --out")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        self.codes: list[torch.Tensor] = []
        self.records: list[dict[str, Any]] = []
        self.shards: list[dict[str, Any]] = []

    def add(self, codes: torch.Tensor, caption: str, path: str, clip: int = 0) -> None:
        """codes: (t', h', w') integers."""
        self.codes.append(codes.to(torch.int32).cpu())
        self.records.append({"path": path, "caption": caption, "clip": clip})
        if len(self.codes) >= self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self.codes:
            return
        name = f"codes-{len(self.shards):05d}"
        with atomic_write(self.out_dir / f"{name}.safetensors") as tmp:
            save_file({"codes": torch.stack(self.codes)}, str(tmp))
        atomic_write_text(self.out_dir / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in self.records))
        self.shards.append({"file": f"{name}.safetensors", "count": len(self.codes)})
        self.codes, self.records = [], []

    def close(self, info: dict[str, Any]) -> dict[str, Any]:
        """Write the last shard and index.json (with `info`: tokenizer config, latent shape, ...); returns it."""
        self._flush()
        index = {"format_version": FORMAT_VERSION, **info, "shards": self.shards,
                 "num_clips": sum(s["count"] for s in self.shards)}
        atomic_write_text(self.out_dir / INDEX, json.dumps(index, indent=2) + "\n")
        return index


def read_index(codes_dir: str | Path) -> dict[str, Any]:
    codes_dir = Path(codes_dir)
    path = codes_dir / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"no {INDEX} in {codes_dir} (write code shards with magvit2-tokenize)")
    index = json.loads(path.read_text())
    if index.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: code shard format {index.get('format_version')} is not {FORMAT_VERSION}")
    return index


class CodeShardDataset(Dataset):
    """All clips of a codes folder in memory: items `{"codes": long (t', h', w'), "caption": str, "index": int}`."""

    def __init__(self, codes_dir: str | Path) -> None:
        self.codes_dir = Path(codes_dir)
        self.index = read_index(self.codes_dir)
        codes, self.records = [], []
        for shard in self.index["shards"]:
            path = self.codes_dir / shard["file"]
            try:
                codes.append(load_file(str(path))["codes"])
            except Exception as e:  # safetensors raises its own error type
                raise ValueError(f"cannot read code shard {path}: {e}") from e
            lines = path.with_suffix(".jsonl").read_text().splitlines()
            self.records.extend(json.loads(line) for line in lines)
            if len(lines) != shard["count"] or codes[-1].shape[0] != shard["count"]:
                raise ValueError(f"{path}: expected {shard['count']} clips, found {codes[-1].shape[0]} codes and "
                                 f"{len(lines)} records")
        if not codes:
            raise ValueError(f"{self.codes_dir} holds no clips")
        self.codes = torch.cat(codes).long()  # (n, t', h', w')
        self.captions = [r["caption"] for r in self.records]
        self.kinds = ["codes"] * len(self.records)  # one kind: every batch is rectangular
        self.latent_shape = tuple(self.index["latent_shape"])
        self.codebook_size = int(self.index["codebook_size"])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, ...]) -> dict[str, Any]:
        index = key[1] if isinstance(key, tuple) else int(key)
        return {"codes": self.codes[index], "caption": self.captions[index], "index": index}


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
