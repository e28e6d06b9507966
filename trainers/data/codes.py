"""Stage-two codes: code shards on disk (`magvit2-tokenize` writes, the MaskGit trainer reads) and `CodeClips`, the
code dataset the resumable batch sampler indexes (in memory; `ShardCodeClips`: read lazily from the shards, O(1) code
memory whatever the number of clips).

Layout of CODES_DIR:
    index.json                  format version, tokenizer config, latent shape, shard list, counts, skipped files
    codes-00000.safetensors     "codes": int16 (codebooks up to 2^15) or int32 (n, t', h', w')
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
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch.utils.data import Dataset

from magvit2.checks import inside, read_utf8, read_json
from magvit2.serialization import atomic_write, atomic_write_text
from trainers.data.samples import SampleKey
from trainers.data.scan import split_files

FORMAT_VERSION = 1
INDEX = "index.json"
_SHARD = re.compile(r"^codes-\d{5,}\.(safetensors|jsonl)$")
SHARD_PATTERN = _SHARD  # the names of shard files (codes-NNNNN.safetensors|jsonl)


class CodeShardWriter:
    """Accumulates (codes, caption, path) and writes shards of `shard_size` clips."""

    def __init__(self, out_dir: str | Path, shard_size: int = 1024, codebook_size: int | None = None) -> None:
        self.out_dir = Path(out_dir)
        # the narrowest integer type that holds every code: int16 up to 2^15 codes, else int32
        self.dtype = torch.int16 if codebook_size is not None and codebook_size <= 2**15 else torch.int32
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
        self.codes.append(codes.to(self.dtype).cpu())
        self.records.append({"path": path, "caption": caption, "clip": clip})
        if len(self.codes) >= self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self.codes:
            return
        self.shards.append(write_shard(self.out_dir, len(self.shards), torch.stack(self.codes), self.records))
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


def shard_name(number: int) -> str:
    return f"codes-{number:05d}.safetensors"


def write_shard(out_dir: Path, number: int, codes: torch.Tensor, records: Sequence[dict[str, Any]],
                metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """Write shard `number`: its records (`.jsonl`) first, then its codes (`.safetensors`, whose presence marks the
    shard done), each atomically. Returns the index entry `{"file", "count"}`."""
    name = shard_name(number)
    atomic_write_text(out_dir / name.replace(".safetensors", ".jsonl"), "".join(json.dumps(r) + "\n" for r in records))
    with atomic_write(out_dir / name) as tmp:
        save_file({"codes": codes.contiguous()}, str(tmp), metadata=metadata)
    return {"file": name, "count": int(codes.shape[0])}


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def read_index(codes_dir: str | Path) -> dict[str, Any]:
    """The checked `index.json` of a codes folder: format version, `shards` (plain shard names inside the folder
    with int counts), `latent_shape` (three positive ints), `codebook_size` and `num_frames`."""
    codes_dir = Path(codes_dir)
    path = codes_dir / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"no {INDEX} in {codes_dir} (write code shards with magvit2-tokenize)")
    index = read_json(path, INDEX)
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


_NUMPY_DTYPES = {"I8": np.int8, "U8": np.uint8, "I16": np.int16, "U16": np.uint16, "I32": np.int32,
                 "U32": np.uint32, "I64": np.int64}
_MAX_HEADER = 1 << 20
_CHECK_ROWS = 4096  # clips per range check while opening a shard (bounded memory)


def _shard_layout(path: Path, expected: tuple[int, ...]) -> tuple[np.dtype, int]:
    """(dtype, byte offset) of the "codes" tensor of a safetensors shard, read from its header alone."""
    try:
        with open(path, "rb") as fp:
            size = int.from_bytes(fp.read(8), "little")
            if not 2 <= size <= _MAX_HEADER:
                raise ValueError(f"header length {size}")
            header = json.loads(fp.read(size))
        meta = header["codes"]
        dtype_name, shape, (begin, end) = meta["dtype"], tuple(meta["shape"]), meta["data_offsets"]
        begin, end = int(begin), int(end)
    except Exception as e:  # any malformed header is the same user error
        raise ValueError(f"cannot read code shard {path}: {type(e).__name__}: {e}") from e
    if dtype_name not in _NUMPY_DTYPES or shape != expected:
        raise ValueError(f"{path}: codes must be integers of shape {expected}; got {dtype_name} {shape}")
    dtype = np.dtype(_NUMPY_DTYPES[dtype_name]).newbyteorder("<")
    offset = 8 + size + begin
    if end - begin != dtype.itemsize * math.prod(shape) or path.stat().st_size < 8 + size + end:
        raise ValueError(f"cannot read code shard {path}: its data is truncated or its offsets are wrong")
    return dtype, offset


def _read_shard(codes_dir: Path, shard: dict[str, Any], index: dict[str, Any]) -> tuple[tuple, list]:
    """One shard's layout ``(path, dtype, offset, shape)`` and records ``(path, caption, clip)``, checked
    against the index:
    the codes are range-checked ``_CHECK_ROWS`` clips at a time, never loaded whole."""
    path = codes_dir / shard["file"]
    records_path = path.with_suffix(".jsonl")
    for p in (path, records_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is listed in {codes_dir / INDEX} but missing")
        if not inside(p, codes_dir):
            raise ValueError(f"{p} is a symlink that leads out of {codes_dir}; refusing to read it")
    expected = (shard["count"], *index["latent_shape"])
    dtype, offset = _shard_layout(path, expected)
    layout = (str(path), dtype.str, offset, expected)
    per_clip = math.prod(expected[1:])
    for start in range(0, expected[0], _CHECK_ROWS):  # plain reads, not the map: checked pages do not stay resident
        rows = min(_CHECK_ROWS, expected[0] - start)
        part = np.fromfile(path, dtype=dtype, count=rows * per_clip, offset=offset + start * per_clip * dtype.itemsize)
        low, high = (int(part.min()), int(part.max())) if part.size else (0, 0)
        if not (low >= 0 and high < index["codebook_size"]):
            raise ValueError(f"{path}: codes must lie in [0, {index['codebook_size']}); got [{low}, {high}]")
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
        records.append((record["path"], record["caption"], record.get("clip", 0)))  # tuples: less memory
    if len(records) != shard["count"]:
        raise ValueError(f"{path}: expected {shard['count']} clips, found {expected[0]} codes and {len(records)} "
                         "records")
    return layout, records


class CodeShardDataset(Dataset):
    """The clips of a codes folder, read lazily (O(1) code memory: a clip is read when asked for): items
    `{"codes": long (t', h', w'), "caption": str, "index": int}`. `clips` is the same data as a `ShardCodeClips`;
    `codes` stacks every clip into one tensor (small folders and tests only)."""

    def __init__(self, codes_dir: str | Path) -> None:
        self.codes_dir = Path(codes_dir)
        self.index = read_index(self.codes_dir)
        layouts, paths, self.captions, clips = [], [], [], []
        for shard in self.index["shards"]:
            layout, records = _read_shard(self.codes_dir, shard, self.index)
            layouts.append(layout)
            for path, caption, clip in records:  # interned: the clips of one file (epochs) share their strings
                paths.append(sys.intern(path))
                self.captions.append(sys.intern(caption))
                clips.append(clip)
        if not paths:
            raise ValueError(f"{self.codes_dir} holds no clips")
        self._clip_numbers = clips
        self.kinds = ["codes"] * len(paths)  # one kind: every batch is rectangular
        self.latent_shape = tuple(self.index["latent_shape"])
        self.codebook_size = int(self.index["codebook_size"])
        self.clips = ShardCodeClips(layouts, np.arange(len(paths), dtype=np.int64), self.captions, paths)

    @property
    def records(self) -> list[dict[str, Any]]:
        """`{"path", "caption", "clip"}` per clip, built when asked for (not kept: a million dicts are large)."""
        return [{"path": p, "caption": c, "clip": k}
                for p, c, k in zip(self.clips.paths, self.captions, self._clip_numbers)]

    @property
    def codes(self) -> torch.Tensor:
        return self.clips.codes

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, key: int | tuple[int, ...]) -> dict[str, Any]:
        index = key[1] if isinstance(key, tuple) else int(key)
        return {"codes": self.clips.clip_codes(index), "caption": self.captions[index], "index": index}


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
        """The shards' clips, read lazily (a `ShardCodeClips`: same items and batches, O(1) code memory)."""
        return shards.clips

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


class ShardCodeClips(CodeClips):
    """`CodeClips` read lazily from the shards: the same items, but a clip's codes are read (one positioned read,
    then widened to long) only when asked for, so memory does not grow with the number of clips (no page cache
    mapped into the process either, unlike a memory map). `rows` maps this object's indices to clips of the shards
    (a `select` is a view, no copy). Shard files are opened lazily in each process (a DataLoader worker opens its
    own) and never pickled."""

    def __init__(self, layouts: Sequence[tuple], rows: np.ndarray, captions: Sequence[str],
                 paths: Sequence[str]) -> None:
        if not len(rows) == len(captions) == len(paths):
            raise ValueError(f"ShardCodeClips needs as many rows, captions and paths; got {len(rows)}, "
                             f"{len(captions)}, {len(paths)}")
        self.layouts = list(layouts)
        self.starts = np.cumsum([0] + [layout[3][0] for layout in self.layouts])  # first clip of each shard
        self.rows = np.asarray(rows, dtype=np.int64)
        self.captions, self.paths = list(captions), list(paths)
        self.kinds = ["codes"] * len(self.captions)
        self._files: dict[int, int] = {}  # shard -> open file descriptor, per process

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_files": {}}

    def __del__(self) -> None:
        for fd in getattr(self, "_files", {}).values():
            os.close(fd)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.layouts[0][3][1:])

    @property
    def codes(self) -> torch.Tensor:
        """Every clip stacked: long (n, t', h', w'). For small sets (validation, tests); training never calls it."""
        if not len(self):
            return torch.zeros(0, *self.latent_shape, dtype=torch.long)
        return torch.stack([self.clip_codes(i) for i in range(len(self))])

    def clip_codes(self, index: int) -> torch.Tensor:
        """long (t', h', w') of clip `index`: one positioned read from its shard."""
        row = int(self.rows[index])
        shard = int(np.searchsorted(self.starts, row, side="right")) - 1
        path, dtype, offset, shape = self.layouts[shard]
        dtype = np.dtype(dtype)
        size = math.prod(shape[1:]) * dtype.itemsize
        if shard not in self._files:
            self._files[shard] = os.open(path, os.O_RDONLY)
        data = os.pread(self._files[shard], size, offset + (row - int(self.starts[shard])) * size)
        if len(data) != size:
            raise ValueError(f"code shard {path} was truncated after it was opened")
        return torch.from_numpy(np.frombuffer(data, dtype=dtype).astype(np.int64).reshape(shape[1:]))

    @classmethod
    def concat(cls, parts: Sequence[ShardCodeClips]) -> ShardCodeClips:
        """The clips of several shard sets in order (code folders of one tokenizer and latent grid: the caller
        checks), still read lazily."""
        if len({tuple(p.latent_shape) for p in parts}) > 1:
            raise ValueError(f"code folders hold different latent grids: {[tuple(p.latent_shape) for p in parts]}")
        offsets = np.cumsum([0] + [int(p.starts[-1]) for p in parts])  # first row of each part in the union
        return cls([layout for p in parts for layout in p.layouts],
                   np.concatenate([p.rows + offset for p, offset in zip(parts, offsets)]),
                   [c for p in parts for c in p.captions], [q for p in parts for q in p.paths])

    def select(self, indices: Sequence[int]) -> ShardCodeClips:
        chosen = list(indices)
        return ShardCodeClips(self.layouts, self.rows[np.asarray(chosen, dtype=np.int64)],
                              [self.captions[i] for i in chosen], [self.paths[i] for i in chosen])

    def __getitem__(self, key: int | tuple[int, ...]) -> dict[str, Any]:
        epoch, index, batch_index = SampleKey(*key) if isinstance(key, tuple) else (0, int(key), -1)
        if not 0 <= index < len(self.rows):
            raise IndexError(f"index {index} out of range for {len(self.rows)} clips")
        return {"codes": self.clip_codes(index), "caption": self.captions[index], "path": self.paths[index],
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
