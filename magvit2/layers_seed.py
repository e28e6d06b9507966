"""Seed-sized blocks (`TokenizerConfig.block_style="seed"`): the block sizes of magvit2-pytorch 0.5.1, the seed.

Our default ("paper") residual block runs two norm -> SiLU -> k^3 conv stages and our time resamplers are full
3x3x3 convs. The seed's blocks are lighter, and with `block_style="seed"` the same layer list builds them:

- residual: ONE causal k^3 conv -> ELU -> 1x1x1 conv -> ELU -> per-frame context gate, plus the identity (no norm);
- compress_time: a time-only (3, 1, 1) causal conv of stride 2; its decoder side a 1x1x1 conv to 2x the channels
  -> SiLU -> depth-to-time;
- compress_space: the same stride-2 3x3 conv as ours; its decoder side a 1x1 conv to 4x the channels -> SiLU ->
  depth-to-space.

That gives the seed's parameter count for the seed's layer list (within 0.1%: `tests/test_tokenizer_seed.py`) at
about half the FLOPs of our paper-style blocks. Every block maps `(b, c, t, h, w) -> (b, c', t', h', w')`, takes the
tokenizer's optional expanded `cond (b, d_cond)` like the blocks in `magvit2.layers`, and stays causal in time
(convs pad on the left; the gate pools each frame on its own).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from magvit2.layers import CausalConv3d, _init_as_repeat


class FrameContextGate(nn.Module):
    """Channel gate from each frame's global context (GCNet): attention-pool the h*w positions of a frame (one
    logit per position), a 2-layer MLP over channels, sigmoid; the input times the gate. Frames never mix."""

    def __init__(self, dim: int, min_hidden: int = 16):
        super().__init__()
        hidden = max(min_hidden, dim // 2)
        self.to_logit = nn.Conv2d(dim, 1, 1)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.LeakyReLU(0.1), nn.Conv2d(hidden, dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[2]
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        weights = self.to_logit(frames).flatten(2).softmax(dim=-1)  # ((b t), 1, h*w)
        context = torch.einsum("nis,ncs->nc", weights, frames.flatten(2))[..., None, None]  # ((b t), c, 1, 1)
        gate = torch.sigmoid(self.mlp(context))  # ((b t), c, 1, 1)
        return x * rearrange(gate, "(b t) c 1 1 -> b c t 1 1", t=t)


class SingleConvResidualBlock(nn.Module):
    """x + gate(ELU(conv1x1(ELU(causal_conv(x))))): one k^3 conv, no norm (the seed's residual unit).

    The 1x1x1 conv starts at zero, so the block starts as the identity (like `magvit2.layers.ResidualBlock`).
    With `dim_cond` the conv's input channels are scaled by (1 + scale(cond)) (a modulated conv without
    demodulation, the seed's `cond_residual`); the scale starts at zero, so an untrained block ignores `cond`.
    """

    def __init__(self, dim: int, kernel_size: int | tuple[int, int, int] = 3, dim_cond: int | None = None):
        super().__init__()
        self.conv = CausalConv3d(dim, dim, kernel_size)
        self.pointwise = nn.Conv3d(dim, dim, 1)
        self.gate = FrameContextGate(dim)
        nn.init.zeros_(self.pointwise.weight)
        nn.init.zeros_(self.pointwise.bias)
        self.to_scale = None
        if dim_cond is not None:
            self.to_scale = nn.Linear(dim_cond, dim)
            nn.init.zeros_(self.to_scale.weight)
            nn.init.zeros_(self.to_scale.bias)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = x
        if self.to_scale is not None:
            if cond is None:
                raise ValueError("cond_residual layer needs `cond` of shape (b, dim_cond); got None")
            h = h * (1 + rearrange(self.to_scale(cond), "b c -> b c 1 1 1"))
        h = F.elu(self.conv(h))  # (b, c, t, h, w)
        h = F.elu(self.pointwise(h))
        return x + self.gate(h)


class TimeOnlyDownsample(nn.Module):
    """Halve t with a causal (3, 1, 1) conv of time stride 2: 1 + 2m frames -> 1 + m (`first_alone`), or 2m -> m.

    Starts as our `TimeDownsample` does: its random init plus the average of each pair of frames (channel-wise).
    """

    def __init__(self, dim_in: int, dim_out: int, first_alone: bool = True):
        super().__init__()
        self.conv = CausalConv3d(dim_in, dim_out, (3, 1, 1), time_stride=2, time_pad=2 if first_alone else 1)
        with torch.no_grad():
            eye = torch.eye(min(dim_in, dim_out))
            self.conv.conv.weight[: eye.shape[0], : eye.shape[1], 1:, 0, 0] += 0.5 * eye[..., None]

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.conv(x)  # (b, c', t/2, h, w)


class PointwiseTimeUpsample(nn.Module):
    """Double t: a 1x1x1 conv to 2 * dim_out channels, SiLU, depth-to-time (latent frame j -> frames 2j, 2j+1).

    Each output frame sees only its own latent frame (causal). Starts close to "repeat each latent frame twice".
    `first_alone`: the first latent frame came from one frame, so of its two only the second is kept (1 + m -> 1 + 2m).
    """

    def __init__(self, dim_in: int, dim_out: int, first_alone: bool = True):
        super().__init__()
        self.first_alone = first_alone
        self.conv = nn.Conv3d(dim_in, dim_out * 2, 1)
        with torch.no_grad():
            eye = torch.eye(min(dim_in, dim_out))
            self.conv.weight[: eye.shape[0], : eye.shape[1], 0, 0, 0] += eye
        _init_as_repeat(self.conv, 2)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        x = F.silu(self.conv(x))  # (b, 2c', t, h, w)
        x = rearrange(x, "b (c r) t h w -> b c (t r) h w", r=2)  # (b, c', 2t, h, w)
        return x[:, :, 1:] if self.first_alone else x


class PointwiseSpaceUpsample(nn.Module):
    """Double h and w: a 1x1 conv to 4 * dim_out channels, SiLU, depth-to-space (pixel shuffle); per frame."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv3d(dim_in, dim_out * 4, 1)
        _init_as_repeat(self.conv, 4)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        x = F.silu(self.conv(x))  # (b, 4c', t, h, w)
        return rearrange(x, "b (c p1 p2) t h w -> b c t (h p1) (w p2)", p1=2, p2=2)


__all__ = [
    "FrameContextGate",
    "PointwiseSpaceUpsample",
    "PointwiseTimeUpsample",
    "SingleConvResidualBlock",
    "TimeOnlyDownsample",
]
