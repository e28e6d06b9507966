"""The Halton unmasking order (`order="halton"` in `maskgit.sampler`): positions of a (t', h', w') latent grid ranked
by when a randomly shifted 3D Halton sequence first lands in their cell.

Confidence-first decoding keeps the tokens the model is surest of, which cluster (a digit's flat background first,
the strokes last, and the strokes of one frame copied from the next); the Halton scheduler of MaskGIT (Besnier et
al., ICLR 2025) keeps tokens in a fixed low-discrepancy order instead, so each step's new tokens are spread evenly
over the grid and every step adds context everywhere. Here in 3D (bases 2, 3, 5 on time, height, width). Each row
shifts the sequence by its own uniform offset per axis, modulo 1 (a Cranley-Patterson rotation: the points stay
evenly spread, the order differs per video and comes from the row's generator).
"""

from __future__ import annotations

import math

import torch

from .draw import Generators, uniform_rows

BASES = (2, 3, 5)  # one prime per axis: (t', h', w')


def radical_inverse(index: torch.Tensor, base: int) -> torch.Tensor:
    """Van der Corput radical inverse of each non-negative integer in `index`, float64 in [0, 1)."""
    out = torch.zeros(index.shape, dtype=torch.float64)
    i, scale = index.clone(), 1.0 / base
    while bool((i > 0).any()):
        out += (i % base).double() * scale
        i, scale = i // base, scale / base
    return out


def halton_ranks(grid: tuple[int, int, int], batch_size: int, generator: Generators,
                 device: torch.device | str) -> torch.Tensor:
    """(batch_size, t' * h' * w') long: each position's rank (0 = kept first) in its row's shifted Halton order,
    a permutation of range(n) per row. The offsets come from `generator` (one per row when it is a list)."""
    if len(grid) != len(BASES) or any(not isinstance(g, int) or g < 1 for g in grid):
        raise ValueError(f"grid must be (t', h', w') positive ints; got {grid!r}")
    n = math.prod(grid)
    points = 16 * n  # ample: every cell visited within 4.9 n (3x8x8) / 8.2 n (5x16x16) points over 100 shifts
    index = torch.arange(1, points + 1)
    base_points = torch.stack([radical_inverse(index, b) for b in BASES], dim=-1)  # (points, 3)
    shift = uniform_rows((batch_size, len(BASES)), generator, device).double().cpu()  # (b, 3)
    cells = ((base_points[None] + shift[:, None]) % 1.0 * torch.tensor(grid, dtype=torch.float64)).long()
    cells = cells.minimum(torch.tensor(grid) - 1)  # (b, points, 3), guards float rounding at the top edge
    flat = (cells[..., 0] * grid[1] + cells[..., 1]) * grid[2] + cells[..., 2]  # (b, points)
    first = torch.full((batch_size, n), points, dtype=torch.long)  # an unvisited cell goes last, in position order
    first = first.scatter_reduce(1, flat, index.expand(batch_size, -1) - 1, reduce="amin")
    order = (first * n + torch.arange(n)).argsort(dim=-1)  # (b, n): positions in the order they are kept
    return order.argsort(dim=-1).to(device)
