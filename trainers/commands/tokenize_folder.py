"""Tokenize a folder of clips into code shards (the work behind `magvit2-tokenize`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from magvit2 import VideoTokenizer
from trainers.data.codes import CodeShardWriter
from trainers.data.folders import VideoFolderDataset
from trainers.data.samples import collate
from trainers.logging import progress_bar
from trainers.model_sources import tokenizer_dir


@torch.no_grad()
def tokenize_folder(tokenizer_path: str | Path, data_dir: str | Path, out_dir: str | Path,
                    num_frames: int | None = None, epochs: int = 1, batch_size: int = 16, shard_size: int = 4096,
                    seed: int = 0, device: str | None = None, max_bad_fraction: float = 0.05) -> dict[str, Any]:
    """Encode every usable file of `data_dir` (`epochs` crops each) with the tokenizer; returns the index.

    Refuses an `out_dir` that already holds shards; raises `ValueError` when no clip could be encoded (and
    `DataQualityError` when more than `max_bad_fraction` of the files fail, at probe or at load time)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    folder = tokenizer_dir(tokenizer_path)
    tokenizer = VideoTokenizer.from_pretrained(folder).to(device).eval()
    f = tokenizer.time_compression
    num_frames = num_frames or 1 + 4 * f
    tokenizer.latent_shape(num_frames)  # validates 1 + k*f with a clear message
    dataset = VideoFolderDataset(data_dir, num_frames=num_frames, image_size=tokenizer.config.image_size,
                                 random_crop=epochs > 1, seed=seed, include_images=False,
                                 max_bad_fraction=max_bad_fraction)
    writer = CodeShardWriter(out_dir, shard_size)
    bar = progress_bar(len(dataset) * epochs, desc="tokenize")
    for epoch in range(epochs):
        for start in range(0, len(dataset), batch_size):
            batch = collate([dataset[(epoch, i, -1)] for i in range(start, min(start + batch_size, len(dataset)))])
            dataset.record_skipped(batch)
            if batch["video"] is not None:
                codes = tokenizer.tokenize(batch["video"].to(device))  # (b, t', h', w')
                for c, caption, path in zip(codes, batch["caption"], batch["path"]):
                    writer.add(c, caption, path, clip=epoch)
            bar.update(len(batch["path"]) + batch["num_skipped"])
    bar.close()
    skipped = dataset.stats.skipped + dataset.stats.runtime_failures
    if writer.num_clips == 0:
        listing = "; ".join(f"{p} ({r})" for p, r in skipped[:5])
        raise ValueError(f"wrote 0 clips: none of the {dataset.stats.num_files} files under {data_dir} could be "
                         f"decoded{': ' + listing if listing else ''}")
    return writer.close({"tokenizer": str(folder), "tokenizer_config": tokenizer.config.to_dict(),
                         "codebook_size": tokenizer.codebook_size, "num_frames": num_frames,
                         "latent_shape": list(tokenizer.latent_shape(num_frames)), "epochs": epochs,
                         "skipped": [list(s) for s in skipped]})
