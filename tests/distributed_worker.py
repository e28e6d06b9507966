"""What one process of a torchrun-launched test does (tests/test_distributed.py). Usage: python -m
tests.distributed_worker entropy DIR."""

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


if __name__ == "__main__":
    {"entropy": entropy}[sys.argv[1]](Path(sys.argv[2]))
