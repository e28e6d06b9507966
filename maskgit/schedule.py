"""Mask schedules as pure functions (google-research/maskgit `libml/mask_schedule.py` style).

`r` is progress in [0, 1] (0 = everything masked, 1 = nothing masked); `mask_ratio(r)` is the fraction of tokens
still masked. Training draws r ~ U(0, 1) per sample, so the cosine schedule gives Muse's arccos density of ratios.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "linear", "square", "cubic", "sqrt")


def mask_ratio(r: float | torch.Tensor, kind: str = "cosine") -> float | torch.Tensor:
    """Fraction still masked at progress r, clipped to [0, 1]. Monotone non-increasing; 1 at r=0, 0 at r=1.

    cosine: cos(pi/2 r); linear: 1 - r; square: 1 - r**2; cubic: 1 - r**3; sqrt: 1 - sqrt(r).
    Works on floats (returns a float) and tensors (elementwise).
    """
    is_tensor = isinstance(r, torch.Tensor)
    if not is_tensor and not 0.0 <= r <= 1.0:
        raise ValueError(f"progress r must be in [0, 1]; got {r}")
    x = r.clamp(0.0, 1.0) if is_tensor else float(r)
    cos, sqrt = (torch.cos, torch.sqrt) if is_tensor else (math.cos, math.sqrt)
    if kind == "cosine":
        out = cos(math.pi / 2 * x)
    elif kind == "linear":
        out = 1 - x
    elif kind == "square":
        out = 1 - x**2
    elif kind == "cubic":
        out = 1 - x**3
    elif kind == "sqrt":
        out = 1 - sqrt(x)
    else:
        raise ValueError(f"unknown mask schedule {kind!r}; expected one of {', '.join(SCHEDULES)}")
    return out.clamp(0.0, 1.0) if is_tensor else min(max(out, 0.0), 1.0)


def num_to_mask(total: int | torch.Tensor, r: float, kind: str = "cosine") -> int | torch.Tensor:
    """Sampling: tokens to keep masked after progress r = floor(total * mask_ratio(r)) (before MaskGIT's clamp)."""
    ratio = mask_ratio(r, kind)
    if isinstance(total, torch.Tensor):
        return torch.floor(total.double() * ratio).long()
    return math.floor(total * ratio)


def sample_mask_ratios(batch_size: int, generator: torch.Generator, kind: str = "cosine",
                       device: torch.device | str | None = None) -> torch.Tensor:
    """Training: per-sample mask ratios mask_ratio(r), r ~ U(0, 1) drawn from `generator`. Returns float (b,)."""
    r = torch.rand(batch_size, generator=generator, device=generator.device)
    return mask_ratio(r, kind).to(device or generator.device)


def train_num_masked(ratios: torch.Tensor, n: int) -> torch.Tensor:
    """Training: masked tokens per sample = round(n * ratio), at least 1 and at most n. (b,) float -> (b,) long."""
    return torch.round(ratios * n).long().clamp(1, n)
