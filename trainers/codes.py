"""Code shards: tokenized clips on disk for fast stage-two training (`magvit2-tokenize` writes, MaskGit reads).

Layout of CODES_DIR:
    index.json                  format version, tokenizer config, latent shape, shard list, counts, skipped files
    codes-00000.safetensors     "codes": int32 (n, t', h', w')
    codes-00000.jsonl           one line per clip: {"path", "caption", "clip"}
Shards are written atomically and index.json last, so a folder with an index is complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

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
        tmp = self.out_dir / f".{name}.tmp-{os.getpid()}"
        save_file({"codes": torch.stack(self.codes)}, str(tmp))
        os.replace(tmp, self.out_dir / f"{name}.safetensors")
        lines = "".join(json.dumps(r) + "\n" for r in self.records)
        (self.out_dir / f".{name}.jsonl.tmp").write_text(lines)
        os.replace(self.out_dir / f".{name}.jsonl.tmp", self.out_dir / f"{name}.jsonl")
        self.shards.append({"file": f"{name}.safetensors", "count": len(self.codes)})
        self.codes, self.records = [], []

    def close(self, info: dict[str, Any]) -> dict[str, Any]:
        """Write the last shard and index.json (with `info`: tokenizer config, latent shape, ...); returns it."""
        self._flush()
        index = {"format_version": FORMAT_VERSION, **info, "shards": self.shards,
                 "num_clips": sum(s["count"] for s in self.shards)}
        tmp = self.out_dir / f".{INDEX}.tmp"
        tmp.write_text(json.dumps(index, indent=2) + "\n")
        os.replace(tmp, self.out_dir / INDEX)
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
