"""Tokenize a folder of clips into code shards (the work behind `magvit2-tokenize`): resumable and distributed.

The clips are planned up front: clip `j` is item `j % n` of the dataset at epoch `j // n` (n usable files), and
shard `k` holds the clips `[k * shard_size, (k + 1) * shard_size)` that decoded. `CODES_DIR/tokenize.json` records
the plan (tokenizer, data, frames, epochs, seed, shard and batch size, a hash of the usable files). Each shard is
written atomically (records, then codes: a `.safetensors` present means the shard is done), so a killed run, rerun
with the same arguments, redoes only the unfinished shards. Under `torchrun` rank `r` of `W` writes the shards `k %
W == r` (the dataset index is built by rank 0 once) and rank 0 merges them into `index.json` at the end; the codes
do not depend on `W`. Load-time decode failures of a shard are kept in its safetensors metadata and listed in the
index.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import safe_open

from magvit2 import VideoTokenizer
from magvit2.checks import read_utf8
from magvit2.serialization import atomic_write_text
from trainers.data.codes import FORMAT_VERSION, INDEX, SHARD_PATTERN, shard_name, write_shard
from trainers.data.folders import VideoFolderDataset
from trainers.data.samples import collate
from trainers.logging import progress_bar
from trainers.model_sources import tokenizer_dir

PLAN = "tokenize.json"


def _distributed() -> tuple[int, int, int, bool]:
    """(world size, rank, local rank, whether this call initialised the process group) from torchrun's env."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")  # only barriers: gloo works with or without GPUs
        return world, dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), True
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), False
    return 1, 0, 0, False


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def _prepare_out(out_dir: Path, plan: dict[str, Any]) -> None:
    """Create `out_dir` with its plan, or accept it for a resume when it holds this same plan; refuse otherwise."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} is a file, not a folder")
    if (out_dir / INDEX).exists():
        raise FileExistsError(f"{out_dir} already holds code shards ({INDEX}); choose a new --out")
    if (out_dir / PLAN).is_file():
        try:
            earlier = json.loads(read_utf8(out_dir / PLAN, PLAN))
        except json.JSONDecodeError as e:
            raise ValueError(f"{out_dir / PLAN} is corrupt ({e}); choose a new --out") from None
        if earlier != plan:
            keys = sorted(k for k in set(plan) | set(earlier or {}) if (earlier or {}).get(k) != plan.get(k))
            raise ValueError(f"{out_dir} holds an unfinished magvit2-tokenize with other settings ({', '.join(keys)}"
                             f" differ); rerun with the same arguments to resume it, or choose a new --out")
        return
    shards = sorted(p.name for p in out_dir.iterdir() if SHARD_PATTERN.match(p.name)) if out_dir.exists() else []
    if shards:
        raise FileExistsError(f"{out_dir / shards[0]} exists (not written by a magvit2-tokenize this folder records);"
                              " refusing to overwrite it: choose a new --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / PLAN, json.dumps(plan, indent=2) + "\n")


def _merge(out_dir: Path, num_shards: int, info: dict[str, Any], probe_skipped: list) -> dict[str, Any]:
    """index.json from the finished shards (rank 0, after every rank is done)."""
    shards, skipped = [], [list(s) for s in probe_skipped]
    for k in range(num_shards):
        path = out_dir / shard_name(k)
        if not path.is_file():
            raise RuntimeError(f"shard {path} is missing after every rank finished; rerun to resume")
        with safe_open(str(path), "pt") as f:
            count = f.get_slice("codes").get_shape()[0]
            skipped += json.loads((f.metadata() or {}).get("skipped", "[]"))
        if count:
            shards.append({"file": path.name, "count": int(count)})
    index = {"format_version": FORMAT_VERSION, **info, "skipped": skipped, "shards": shards,
             "num_clips": sum(s["count"] for s in shards)}
    if index["num_clips"] == 0:
        listing = "; ".join(f"{p} ({r})" for p, r in skipped[:5])
        raise ValueError(f"wrote 0 clips: none of the files under {info['data']} could be decoded"
                         f"{': ' + listing if listing else ''}")
    atomic_write_text(out_dir / INDEX, json.dumps(index, indent=2) + "\n")
    return index


@torch.no_grad()
def tokenize_folder(tokenizer_path: str | Path, data_dir: str | Path, out_dir: str | Path,
                    num_frames: int | None = None, epochs: int = 1, batch_size: int = 16, shard_size: int = 4096,
                    seed: int = 0, device: str | None = None, max_bad_fraction: float = 0.05) -> dict[str, Any]:
    """Encode every usable file of `data_dir` (`epochs` crops each) with the tokenizer; returns the index.

    Resumes an unfinished run into the same `out_dir` (same arguments); refuses an `out_dir` that holds finished or
    foreign shards; raises `ValueError` when no clip could be encoded (and `DataQualityError` when more than
    `max_bad_fraction` of the files fail, at probe or at load time). Under torchrun every rank takes a share."""
    world, rank, local_rank, owns_group = _distributed()
    try:
        return _tokenize(tokenizer_path, data_dir, Path(out_dir), num_frames, epochs, batch_size, shard_size, seed,
                         device, max_bad_fraction, world, rank, local_rank)
    finally:
        if owns_group:
            dist.destroy_process_group()


def _tokenize(tokenizer_path, data_dir, out_dir: Path, num_frames, epochs, batch_size, shard_size, seed, device,
              max_bad_fraction, world: int, rank: int, local_rank: int) -> dict[str, Any]:
    device = device or (f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    folder = tokenizer_dir(tokenizer_path)
    tokenizer = VideoTokenizer.from_pretrained(folder).to(device).eval()
    f = tokenizer.time_compression
    num_frames = num_frames or 1 + 4 * f
    latent_shape = list(tokenizer.latent_shape(num_frames))  # validates 1 + k*f with a clear message
    dataset = VideoFolderDataset(data_dir, num_frames=num_frames, image_size=tokenizer.config.image_size,
                                 random_crop=epochs > 1, seed=seed, include_images=False,
                                 max_bad_fraction=max_bad_fraction)
    files_hash = hashlib.sha256("\n".join(dataset.paths).encode("utf-8")).hexdigest()
    plan = {"tokenizer": str(Path(folder).resolve()), "data": str(Path(data_dir).resolve()), "num_frames": num_frames,
            "epochs": epochs, "seed": seed, "shard_size": shard_size, "batch_size": batch_size, "files": len(dataset),
            "files_sha256": files_hash}
    if rank == 0:
        try:
            _prepare_out(out_dir, plan)
        finally:
            _barrier(world)
    else:
        _barrier(world)
        if not (out_dir / PLAN).is_file():
            raise RuntimeError(f"rank 0 could not prepare {out_dir}; see its error")
    n = len(dataset)
    total = n * epochs
    num_shards = math.ceil(total / shard_size)
    mine = [k for k in range(num_shards) if k % world == rank and not (out_dir / shard_name(k)).is_file()]
    dtype = torch.int16 if tokenizer.codebook_size <= 2**15 else torch.int32
    bar = progress_bar(sum(min(shard_size, total - k * shard_size) for k in mine), disable=rank != 0,
                       desc="tokenize")
    for k in mine:
        codes, records, failures = [], [], []
        end = min((k + 1) * shard_size, total)
        for start in range(k * shard_size, end, batch_size):
            items = [dataset[(j // n, j % n, -1)] for j in range(start, min(start + batch_size, end))]
            batch = collate(items)
            dataset.record_skipped(batch)
            failures += [list(s) for s in batch["skipped"]]
            if batch["video"] is not None:
                codes += list(tokenizer.tokenize(batch["video"].to(device)).to("cpu", dtype))  # (b, t', h', w')
                records += [{"path": it["path"], "caption": it["caption"], "clip": it["epoch"]}
                            for it in items if isinstance(it, dict)]  # the clips collate kept, in order
            bar.update(len(batch["path"]) + batch["num_skipped"])
        stacked = torch.stack(codes) if codes else torch.zeros(0, *latent_shape, dtype=dtype)
        write_shard(out_dir, k, stacked, records, metadata={"skipped": json.dumps(failures)})
    bar.close()
    _barrier(world)
    info = {"tokenizer": str(folder), "tokenizer_config": tokenizer.config.to_dict(),
            "codebook_size": tokenizer.codebook_size, "num_frames": num_frames, "latent_shape": latent_shape,
            "epochs": epochs, "data": plan["data"], "world_size": world}
    if rank == 0:
        try:
            index = _merge(out_dir, num_shards, info, dataset.stats.skipped)
        finally:
            _barrier(world)
        return index
    _barrier(world)
    if not (out_dir / INDEX).is_file():
        raise RuntimeError(f"rank 0 could not merge the shards of {out_dir}; see its error")
    return json.loads(read_utf8(out_dir / INDEX, INDEX))

