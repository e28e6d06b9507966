"""Stage-two codes: code shards on disk (`magvit2-tokenize` writes, the MaskGit trainer reads) and `CodeClips`, the
in-memory code dataset the resumable batch sampler indexes.

Layout of CODES_DIR:
    index.json                  format version, tokenizer config, latent shape, shard list, counts, skipped files
    codes-00000.safetensors     "codes": int32 (n, t', h', w')
    codes-00000.jsonl           one line per clip: {"path", "caption", "clip"}
Shards are written atomically and index.json last, so a folder with an index is complete. A folder that already
holds an index or shards is never written into. Reading checks everything: the index's fields and types, shard
names (plain `codes-NNNNN.safetensors` files inside the folder), each shard's tensor (integer, the index's latent
shape, codes inside the codebook) and records; any problem is a `ValueError` naming the file.

`split_code_clips` holds out `val_fraction` of the *source files* (seeded, `trainers.data.folders.split_files`), so
the clips of one file (several epochs of crops in a shard folder) never land on both sides.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from magvit2.checks import inside, read_utf8
from magvit2.serialization import atomic_write, atomic_write_text
from trainers.data.samples import SampleKey
from trainers.data.scan import split_files

FORMAT_VERSION = 1
INDEX = "index.json"
_SHARD = re.compile(r"^codes-\d{5,}\.(safetensors|jsonl)$")


class CodeShardWriter:
    """Accumulates (codes, caption, path) and writes shards of `shard_size` clips."""

    def __init__(self, out_dir: str | Path, shard_size: int = 1024) -> None:
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise NotADirectoryError(f"--out {self.out_dir} is a file, not a folder")
        if (self.out_dir / INDEX).exists():
            raise FileExistsError(f"{self.out_dir} already holds code shards ({INDEX}); choose a new --out")
        shards = sorted(p.name for p in self.out_dir.iterdir() if _SHARD.match(p.name)) if self.out_dir.exists() else []
        if shards:
            raise FileExistsError(f"{self.out_dir / shards[0]} exists (an earlier, unfinished magvit2-tokenize?); "
                                  "refusing to overwrite it: choose a new --out")
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

    @property
    def num_clips(self) -> int:
        return sum(s["count"] for s in self.shards) + len(self.codes)

    def close(self, info: dict[str, Any]) -> dict[str, Any]:
        """Write the last shard and index.json (with `info`: tokenizer config, latent shape, ...); returns it."""
        self._flush()
        index = {"format_version": FORMAT_VERSION, **info, "shards": self.shards,
                 "num_clips": sum(s["count"] for s in self.shards)}
        atomic_write_text(self.out_dir / INDEX, json.dumps(index, indent=2) + "\n")
        return index


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def read_index(codes_dir: str | Path) -> dict[str, Any]:
    """The checked `index.json` of a codes folder: format version, `shards` (plain shard names inside the folder
    with int counts), `latent_shape` (three positive ints), `codebook_size` and `num_frames`."""
    codes_dir = Path(codes_dir)
    path = codes_dir / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"no {INDEX} in {codes_dir} (write code shards with magvit2-tokenize)")
    try:
        index = json.loads(read_utf8(path, INDEX))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(index, dict):
        raise ValueError(f"{path}: expected a JSON object; got {type(index).__name__}")
    if index.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: code shard format {index.get('format_version')!r:.40} is not {FORMAT_VERSION}")
    shards = index.get("shards")
    if not isinstance(shards, list):
        raise ValueError(f"{path}: 'shards' must be a list of {{\"file\", \"count\"}}; got {shards!r:.80}")
    for shard in shards:
        if not (isinstance(shard, dict) and isinstance(shard.get("file"), str) and _SHARD.match(shard["file"])
                and shard["file"].endswith(".safetensors") and _is_int(shard.get("count"), 0)):
            raise ValueError(f"{path}: each shard must be {{\"file\": \"codes-NNNNN.safetensors\", \"count\": int}}; "
                             f"got {shard!r:.120}")
    shape = index.get("latent_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(v, 1) for v in shape)):
        raise ValueError(f"{path}: 'latent_shape' must be three positive ints; got {shape!r:.80}")
    for key, low in (("codebook_size", 2), ("num_frames", 1)):
        if not _is_int(index.get(key), low):
            raise ValueError(f"{path}: {key!r} must be an int >= {low}; got {index.get(key)!r:.40}")
    return index


def _read_shard(codes_dir: Path, shard: dict[str, Any], index: dict[str, Any]) -> tuple[torch.Tensor, list]:
    """One shard's codes `(count, t', h', w')` and records, checked against the index."""
    path = codes_dir / shard["file"]
    records_path = path.with_suffix(".jsonl")
    for p in (path, records_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is listed in {codes_dir / INDEX} but missing")
        if not inside(p, codes_dir):
            raise ValueError(f"{p} is a symlink that leads out of {codes_dir}; refusing to read it")
    try:
        codes = load_file(str(path))["codes"]
    except Exception as e:  # safetensors raises its own error type; KeyError: no "codes"
        raise ValueError(f"cannot read code shard {path}: {e}") from e
    expected = (shard["count"], *index["latent_shape"])
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool or tuple(codes.shape) != expected:
        raise ValueError(f"{path}: codes must be integers of shape {expected}; got {codes.dtype} "
                         f"{tuple(codes.shape)}")
    if codes.numel() and not (int(codes.min()) >= 0 and int(codes.max()) < index["codebook_size"]):
        raise ValueError(f"{path}: codes must lie in [0, {index['codebook_size']}); got [{int(codes.min())}, "
                         f"{int(codes.max())}]")
    records = []
    for lineno, line in enumerate(read_utf8(records_path, "code shard records").splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{records_path}:{lineno}: invalid JSON ({e})") from None
        if not (isinstance(record, dict) and isinstance(record.get("path"), str)
                and isinstance(record.get("caption"), str)):
            raise ValueError(f'{records_path}:{lineno}: expected {{"path": str, "caption": str, ...}}; got '
                             f"{line[:120]}")
        records.append(record)
    if len(records) != shard["count"]:
        raise ValueError(f"{path}: expected {shard['count']} clips, found {codes.shape[0]} codes and {len(records)} "
                         "records")
    return codes, records


class CodeShardDataset(Dataset):
    """All clips of a codes folder in memory: items `{"codes": long (t', h', w'), "caption": str, "index": int}`."""

    def __init__(self, codes_dir: str | Path) -> None:
        self.codes_dir = Path(codes_dir)
        self.index = read_index(self.codes_dir)
        codes, self.records = [], []
        for shard in self.index["shards"]:
            shard_codes, records = _read_shard(self.codes_dir, shard, self.index)
            codes.append(shard_codes)
            self.records.extend(records)
        if not self.records:
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
