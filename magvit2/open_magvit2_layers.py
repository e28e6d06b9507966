"""Encoder and decoder of the Open-MAGVIT2 video tokenizer, written from the conventions its checkpoints imply.

All tensors are `(b, c, t, h, w)`. Conventions (each differs from `magvit2.layers`, which is why these blocks are
separate):

* causal 3D convs pad time on the left with **zeros** (`k_t - 1` frames) and space symmetrically with zeros; a
  strided conv applies its stride after that padding, so with stride 2 in time `1 + 2m` frames give `1 + m`;
* GroupNorm over `(c/32, t, h, w)` (statistics span all frames; 32 groups, eps 1e-6), activation `x * sigmoid(x)`;
* downsampling: a strided causal 3x3x3 conv, stride (1, 2, 2) after a level whose multiplier is 1, else (2, 2, 2);
* upsampling: a causal conv to `s_t * s_h * s_w` times the width, depth-to-space in DCR order (the channel index
  splits as (s_t, s_h, s_w, c), s_t most significant), then, after a time upsample, frame 1 is dropped
  (2t frames -> 2t - 1, so `1 + k` latent frames decode to `1 + 2k`);
* before each decoder level, an adaptive GroupNorm (no affine) scales and shifts by linear maps of the per-channel
  std (unbiased variance + eps, then sqrt) and mean of the quantized latent over (t, h, w).

Module and parameter names follow the keys of Open-MAGVIT2 checkpoints (`conv_1`, `nin_shortcut`, `mid_block`,
`adaptive.N.gamma`, ...), so conversion is a filter over their state dict, not a rename, and a mismatch names the
checkpoint's own key.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from magvit2.open_magvit2_config import NORM_GROUPS, OpenMagvit2Config

EPS = 1e-6


def swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


def group_norm(dim: int, affine: bool = True) -> nn.GroupNorm:
    return nn.GroupNorm(NORM_GROUPS, dim, eps=EPS, affine=affine)


class ZeroPadCausalConv3d(nn.Module):
    """Causal in time (k_t - 1 zero frames on the left), 'same' in space (zeros), then an optionally strided conv."""

    def __init__(self, dim_in: int, dim_out: int, kernel_size: int = 3, stride: tuple[int, int, int] = (1, 1, 1),
                 bias: bool = True):
        super().__init__()
        k = kernel_size
        self.padding = (k // 2, k // 2, k // 2, k // 2, k - 1, 0)  # (w_left, w_right, h_top, h_bottom, t_front, 0)
        self.conv_1 = nn.Conv3d(dim_in, dim_out, k, stride=stride, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, self.padding)  # (b, c, t + k - 1, h + 2p, w + 2p)
        return self.conv_1(x)


class ResBlock(nn.Module):
    """norm -> swish -> conv -> norm -> swish -> conv, plus the input (through a 1x1x1 conv when widths differ).
    Convs have no bias."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.norm1 = group_norm(dim_in)
        self.conv1 = ZeroPadCausalConv3d(dim_in, dim_out, bias=False)
        self.norm2 = group_norm(dim_out)
        self.conv2 = ZeroPadCausalConv3d(dim_out, dim_out, bias=False)
        if dim_in != dim_out:
            self.nin_shortcut = ZeroPadCausalConv3d(dim_in, dim_out, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return h + skip


def depth_to_space(x: Tensor, block: tuple[int, int, int]) -> Tensor:
    """(b, c * st * sh * sw, t, h, w) -> (b, c, t * st, h * sh, w * sw), channels split as (st, sh, sw, c) (DCR)."""
    st, sh, sw = block
    return rearrange(x, "b (st sh sw c) t h w -> b c (t st) (h sh) (w sw)", st=st, sh=sh, sw=sw)


class DepthToSpaceUpsample(nn.Module):
    """Causal conv to `prod(block)` times the width, depth-to-space; after a time upsample, drop frame 1."""

    def __init__(self, dim: int, block: tuple[int, int, int]):
        super().__init__()
        self.block = block
        self.conv1 = ZeroPadCausalConv3d(dim, dim * math.prod(block))

    def forward(self, x: Tensor) -> Tensor:
        x = depth_to_space(self.conv1(x), self.block)  # (b, c, t * st, h * sh, w * sw)
        if self.block[0] > 1:
            x = torch.cat([x[:, :, :1], x[:, :, 2:]], dim=2)  # (b, c, t * st - 1, ...): frame 1 dropped
        return x


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm without affine, then `gamma(std(z)) * x + beta(mean(z))`, with z the quantized latent
    (b, z_channels, t', h', w') and std/mean per channel over (t', h', w')."""

    def __init__(self, z_channels: int, dim: int):
        super().__init__()
        self.gn = group_norm(dim, affine=False)
        self.gamma = nn.Linear(z_channels, dim)
        self.beta = nn.Linear(z_channels, dim)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        flat = z.flatten(2)  # (b, z_channels, t' h' w')
        std = (flat.var(dim=-1) + EPS).sqrt()  # (b, z_channels): unbiased variance, as their model computes it
        scale = self.gamma(std)[:, :, None, None, None]  # (b, c, 1, 1, 1)
        shift = self.beta(flat.mean(dim=-1))[:, :, None, None, None]  # (b, c, 1, 1, 1)
        return self.gn(x) * scale + shift


class Encoder(nn.Module):
    """(b, channels, 1 + k*f, h, w) in [-1, 1] -> continuous latents (b, z_channels, 1 + k, h/s, w/s)."""

    def __init__(self, c: OpenMagvit2Config):
        super().__init__()
        self.conv_in = ZeroPadCausalConv3d(c.channels, c.ch, bias=False)
        self.down = nn.ModuleList()
        dim = c.ch
        strides = c.level_strides
        for level, mult in enumerate(c.ch_mult):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(c.num_res_blocks):
                stage.block.append(ResBlock(dim, c.ch * mult))
                dim = c.ch * mult
            if level < len(strides):
                stage.downsample = ZeroPadCausalConv3d(dim, dim, stride=strides[level])
            self.down.append(stage)
        self.mid_block = nn.ModuleList(ResBlock(dim, dim) for _ in range(c.num_res_blocks))
        self.norm_out = group_norm(dim)
        self.conv_out = ZeroPadCausalConv3d(dim, c.z_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)  # (b, ch, t, h, w)
        for stage in self.down:
            for block in stage.block:
                x = block(x)
            if hasattr(stage, "downsample"):
                x = stage.downsample(x)  # (b, c, t / st, h / 2, w / 2)
        for block in self.mid_block:
            x = block(x)
        return self.conv_out(swish(self.norm_out(x)))  # (b, z_channels, t', h', w')


class Decoder(nn.Module):
    """Quantized latents (b, z_channels, t', h', w') -> video (b, channels, 1 + (t'-1)*f, h, w), ~[-1, 1].

    Levels are stored in encoder order (`up[0]` is the full-resolution level) and run from the last to the first;
    `up[i].upsample` undoes the encoder's `down[i-1].downsample`.
    """

    def __init__(self, c: OpenMagvit2Config):
        super().__init__()
        dim = c.ch * c.ch_mult[-1]
        self.conv_in = ZeroPadCausalConv3d(c.z_channels, dim)
        self.mid_block = nn.ModuleList(ResBlock(dim, dim) for _ in range(c.num_res_blocks))
        strides = c.level_strides
        up, adaptive = [], []
        for level in reversed(range(len(c.ch_mult))):
            adaptive.insert(0, AdaptiveGroupNorm(c.z_channels, dim))
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(c.num_res_blocks):
                stage.block.append(ResBlock(dim, c.ch * c.ch_mult[level]))
                dim = c.ch * c.ch_mult[level]
            if level > 0:
                stage.upsample = DepthToSpaceUpsample(dim, strides[level - 1])
            up.insert(0, stage)
        self.up = nn.ModuleList(up)
        self.adaptive = nn.ModuleList(adaptive)
        self.norm_out = group_norm(dim)
        self.conv_out = ZeroPadCausalConv3d(dim, c.channels)

    def forward(self, z: Tensor) -> Tensor:
        x = self.conv_in(z)  # (b, c, t', h', w')
        for block in self.mid_block:
            x = block(x)
        for level in reversed(range(len(self.up))):
            x = self.adaptive[level](x, z)
            stage = self.up[level]
            for block in stage.block:
                x = block(x)
            if hasattr(stage, "upsample"):
                x = stage.upsample(x)  # (b, c, st * t - (st - 1), 2h, 2w)
        return self.conv_out(swish(self.norm_out(x)))  # (b, channels, t, h, w)
