"""What one process of a torchrun-launched test does (tests/test_distributed.py, tests/test_remote_shards.py).
Usage: python -m tests.distributed_worker entropy|shards DIR."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist


def entropy(folder: Path) -> None:
    """This process's half of the tokens through the LFQ entropy; saves the value and the gradient of its half."""
    from magvit2.config import TokenizerConfig
    from magvit2.quantize import LFQuantizer

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    inputs = torch.load(folder / "inputs.pt")
    quantizer = LFQuantizer(8, TokenizerConfig(image_size=16, codebook_size=2**10)).train()
    quantizer.load_state_dict(inputs["state"])
    n = inputs["z"].shape[0] // world
    z = inputs["z"][rank * n : (rank + 1) * n].clone().requires_grad_(True)
    _, value = quantizer.entropies(z)
    value.backward()
    torch.save({"world_size": world, "entropy": float(value), "grad": z.grad}, folder / f"entropy-{rank}.pt")
    dist.destroy_process_group()


def shards(folder: Path) -> None:
    """One epoch of a packed folder through the prepared loader (global batches of 4, 2 workers per process):
    saves the sample indices this process got, batch by batch."""
    import json

    from accelerate import Accelerator, DataLoaderConfiguration

    from trainers.data.batches import build_dataloader
    from trainers.data.shards import ShardDataset

    acc = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(split_batches=True))
    dataset = ShardDataset(folder / "packed", num_frames=5, image_size=16, max_bad_fraction=0.5)
    loader = acc.prepare(build_dataloader(dataset, 4, seed=0, num_workers=2))
    got = [batch["index"].tolist() for batch in loader]
    report = {"world_size": acc.num_processes, "batches": got, "num_samples": len(dataset)}
    (folder / f"shards-{acc.process_index}.json").write_text(json.dumps(report))
    acc.end_training()


if __name__ == "__main__":
    {"entropy": entropy, "shards": shards}[sys.argv[1]](Path(sys.argv[2]))
