"""Cross-process reductions the losses need so that W processes compute what one process computes on the global
batch: the LFQ codebook entropy (autograd-aware), LeCam's logit means and the adaptive GAN weight's gradients.

Every function is the identity on one process (or when `torch.distributed` is not initialised), so the models stay
usable without any launcher. vector-quantize-pytorch's `maybe_distributed_mean` discards the result of its
all-reduce (it returns `t / world_size`), so the quantizer uses `global_average` instead.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["global_average", "mean_over_processes", "world_size"]


def world_size() -> int:
    """Processes in the default group (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def global_average(total: Tensor, count: int | float) -> Tensor:
    """`sum over processes of total / sum over processes of count`, differentiable in `total`.

    `total` is this process's sum of a per-token quantity and `count` its token count, so processes with different
    batch sizes are weighted by their tokens. The backward all-reduces the incoming gradients, so each process gets
    the gradient of every process's copy of the result (DDP's gradient averaging then gives the gradient of the
    global quantity).
    """
    if world_size() == 1:
        return total / count
    summed = _AllReduceSum.apply(total)
    n = torch.tensor(float(count), device=total.device, dtype=torch.float64)
    dist.all_reduce(n)
    return summed / n.to(summed.dtype)


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the backward sums the gradients too (each process's copy of the result contributes)."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        out = t.detach().clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


@torch.no_grad()
def mean_over_processes(t: Tensor) -> Tensor:
    """The mean of `t` over processes (no gradient); `t` itself on one process."""
    if world_size() == 1:
        return t
    out = t.detach().clone()
    dist.all_reduce(out)
    return out / world_size()
