"""Convolutional building blocks of the causal 3D CNN tokenizer.

Every block maps `(b, c, t, h, w) -> (b, c', t', h', w')` and takes an optional expanded `cond (b, d_cond)` so the
encoder/decoder can call all layers uniformly (plain blocks ignore it). Causality in time: an output frame depends
only on input frames at or before it (convs pad on the left in time; norms are per frame).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def _triple(k: int | tuple[int, int, int]) -> tuple[int, int, int]:
    return (k, k, k) if isinstance(k, int) else tuple(k)


class CausalConv3d(nn.Module):
    """3D conv that is causal in time and 'same' (zero-padded) in space.

    Pads `k_t - s_t` copies of the first frame on the left, so with stride 2 an output frame j covers input frames
    [2j - 1, 2j + 1]: block-causal (it never looks past the end of its own block of `s_t` frames). Replicating the
    first frame (not zeros) makes a still image look like a still video to every kernel.
    """

    def __init__(self, dim_in: int, dim_out: int, kernel_size: int | tuple[int, int, int], time_stride: int = 1):
        super().__init__()
        kt, kh, kw = _triple(kernel_size)
        if kh % 2 == 0 or kw % 2 == 0 or kt < time_stride:
            raise ValueError(f"CausalConv3d needs odd space kernels and kernel_t >= stride; got {(kt, kh, kw)}")
        self.time_pad = kt - time_stride
        # space: zero 'same' padding inside the conv (no padded copy of the input); time: first-frame copies
        self.conv = nn.Conv3d(dim_in, dim_out, (kt, kh, kw), stride=(time_stride, 1, 1), padding=(0, kh // 2, kw // 2))

    def forward(self, x: Tensor) -> Tensor:
        if self.time_pad:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)  # (b, c, t + pad, h, w)
        return self.conv(x)  # (b, c', (t + pad - k_t) / s_t + 1, h, w)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm over (c/g, h, w) of each frame separately: statistics never mix frames, so it stays causal."""

    def __init__(self, dim: int, groups: int):
        super().__init__(math.gcd(groups, dim), dim)

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[2]
        x = rearrange(x, "b c t h w -> (b t) c h w")
        x = super().forward(x)
        return rearrange(x, "(b t) c h w -> b c t h w", t=t)


class ResidualBlock(nn.Module):
    """norm -> SiLU -> causal conv, twice, plus the identity. The last conv starts at zero (the block starts as
    the identity)."""

    def __init__(self, dim: int, kernel_size: int | tuple[int, int, int] = 3, norm_groups: int = 8):
        super().__init__()
        self.norm1 = FrameGroupNorm(dim, norm_groups)
        self.conv1 = CausalConv3d(dim, dim, kernel_size)
        self.norm2 = FrameGroupNorm(dim, norm_groups)
        self.conv2 = CausalConv3d(dim, dim, kernel_size)
        nn.init.zeros_(self.conv2.conv.weight)
        nn.init.zeros_(self.conv2.conv.bias)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h


class CondResidualBlock(ResidualBlock):
    """Residual block whose norms are modulated by the cond vector (FiLM: norm(x) * (1 + scale) + shift).

    The modulation starts at zero, so an untrained block ignores `cond`.
    """

    def __init__(self, dim: int, dim_cond: int, kernel_size: int | tuple[int, int, int] = 3, norm_groups: int = 8):
        super().__init__(dim, kernel_size, norm_groups)
        self.to_mod = nn.Linear(dim_cond, dim * 4)
        nn.init.zeros_(self.to_mod.weight)
        nn.init.zeros_(self.to_mod.bias)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is None:
            raise ValueError("cond_residual layer needs `cond` of shape (b, dim_cond); got None")
        scale1, shift1, scale2, shift2 = rearrange(self.to_mod(cond), "b (n c) -> n b c 1 1 1", n=4)
        h = self.norm1(x) * (1 + scale1) + shift1
        h = self.conv1(F.silu(h))
        h = self.norm2(h) * (1 + scale2) + shift2
        h = self.conv2(F.silu(h))
        return x + h


def _init_as_repeat(conv: nn.Module, repeats: int) -> None:
    """Make a conv producing `repeats * c` channels (to be shuffled into space/time) start as a plain repeat of `c`.

    The sub-pixel outputs then begin identical (nearest-neighbour upsampling), which avoids checkerboard artifacts.
    """
    weight = conv.weight.data  # (repeats * c_out, c_in, ...)
    c_out = weight.shape[0] // repeats
    base = weight[:c_out].clone()
    conv.weight.data.copy_(base.repeat_interleave(repeats, dim=0))
    if conv.bias is not None:
        conv.bias.data.copy_(conv.bias.data[:c_out].repeat_interleave(repeats, dim=0))


class SpaceDownsample(nn.Module):
    """Halve h and w with a stride-2 3x3 conv applied to each frame."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out, 3, stride=2, padding=1)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        t = x.shape[2]
        x = rearrange(x, "b c t h w -> (b t) c h w")
        x = self.conv(x)  # ((b t), c', h/2, w/2)
        return rearrange(x, "(b t) c h w -> b c t h w", t=t)


class SpaceUpsample(nn.Module):
    """Double h and w: a 3x3 conv to 4 * dim_out at low resolution, then depth-to-space (pixel shuffle)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out * 4, 3, padding=1)
        _init_as_repeat(self.conv, 4)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        t = x.shape[2]
        x = rearrange(x, "b c t h w -> (b t) c h w")
        x = self.conv(x)  # ((b t), 4c', h, w)
        x = rearrange(x, "(b t) (c p1 p2) h w -> b c t (h p1) (w p2)", t=t, p1=2, p2=2)
        return x


class TimeDownsample(nn.Module):
    """Halve t with a causal 3x3x3 conv of time stride 2 (t must be even; the tokenizer pads to make it so).

    Initialised to add the average of each pair of frames (channel-wise, where widths allow) to its random init,
    so the untrained layer already passes the content through; this speeds up early training a lot.
    """

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.conv = CausalConv3d(dim_in, dim_out, 3, time_stride=2)
        with torch.no_grad():
            eye = torch.eye(min(dim_in, dim_out))
            self.conv.conv.weight[: eye.shape[0], : eye.shape[1], 1:, 1, 1] += 0.5 * eye[..., None]

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.conv(x)  # (b, c', t/2, h, w)


class TimeUpsample(nn.Module):
    """Double t: a causal conv to 2 * dim_out channels, then depth-to-time (latent frame j -> frames 2j, 2j+1)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.conv = CausalConv3d(dim_in, dim_out * 2, 3)
        with torch.no_grad():  # start close to "repeat each latent frame twice" (see TimeDownsample)
            eye = torch.eye(min(dim_in, dim_out))
            self.conv.conv.weight[: eye.shape[0], : eye.shape[1], 2, 1, 1] += eye
        _init_as_repeat(self.conv.conv, 2)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        x = self.conv(x)  # (b, 2c', t, h, w)
        return rearrange(x, "b (c r) t h w -> b c (t r) h w", r=2)


def sequential_forward(layers: nn.ModuleList, x: Tensor, cond: Tensor | None) -> Tensor:
    """Run blocks in order, passing `cond` to each (plain blocks ignore it; no sticky state between layers)."""
    for layer in layers:
        x = layer(x, cond)
    return x


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "CausalConv3d",
    "CondResidualBlock",
    "FrameGroupNorm",
    "ResidualBlock",
    "SpaceDownsample",
    "SpaceUpsample",
    "TimeDownsample",
    "TimeUpsample",
    "num_params",
    "sequential_forward",
]
