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


def conv_memory_format(x: Tensor) -> torch.memory_format:
    """The layout the tokenizer's conv stacks run in: channels_last_3d on the CPU (oneDNN's convs skip a reorder per
    call, and per-frame norms and convs become free views; measured ~10% of a training step, docs/performance.md),
    contiguous elsewhere (unmeasured on accelerators)."""
    return torch.channels_last_3d if x.device.type == "cpu" and x.ndim == 5 else torch.contiguous_format


def _triple(k: int | tuple[int, int, int]) -> tuple[int, int, int]:
    return (k, k, k) if isinstance(k, int) else tuple(k)


class CausalConv3d(nn.Module):
    """3D conv that is causal in time and 'same' (zero-padded) in space.

    Pads `time_pad` copies of the first frame on the left (default `k_t - s_t`: with stride 2, output frame j
    covers input frames [2j - 1, 2j + 1], block-causal for an even frame count; `k_t - 1` with stride 2 maps
    1 + 2m frames to 1 + m, output 0 seeing frame 0 alone and output j frames [2j - 2, 2j]). Replicating the first
    frame (not zeros) makes a still image look like a still video to every kernel.

    A 1-frame input (a still image) is padded with copies of itself, so every temporal tap sees the same frame and
    the conv equals a (1, k_h, k_w) conv with the taps' sum: computed that way, in 1/k_t of the work, with the same
    output and gradients (each tap gets the sum's gradient), which is what makes an image phase cheap.
    """

    def __init__(self, dim_in: int, dim_out: int, kernel_size: int | tuple[int, int, int], time_stride: int = 1,
                 time_pad: int | None = None):
        super().__init__()
        kt, kh, kw = _triple(kernel_size)
        if kh % 2 == 0 or kw % 2 == 0 or kt < time_stride:
            raise ValueError(f"CausalConv3d needs odd space kernels and kernel_t >= stride; got {(kt, kh, kw)}")
        self.time_pad = kt - time_stride if time_pad is None else time_pad
        # space: zero 'same' padding inside the conv (no padded copy of the input); time: first-frame copies
        self.conv = nn.Conv3d(dim_in, dim_out, (kt, kh, kw), stride=(time_stride, 1, 1), padding=(0, kh // 2, kw // 2))

    def forward(self, x: Tensor) -> Tensor:
        kt, st = self.conv.kernel_size[0], self.conv.stride[0]
        if x.shape[2] == 1 and kt > 1 and 0 <= 1 + self.time_pad - kt < st:  # a still image to one output frame
            weight = self.conv.weight.sum(2, keepdim=True)  # (c', c, 1, k_h, k_w): what every tap sees, summed
            return F.conv3d(x, weight, self.conv.bias, padding=(0, *self.conv.padding[1:]))  # (b, c', 1, h, w)
        if self.time_pad:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)  # (b, c, t + pad, h, w)
        return self.conv(x)  # (b, c', (t + pad - k_t) / s_t + 1, h, w)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm over (c/g, h, w) of each frame separately: statistics never mix frames, so it stays causal.

    On a channels_last_3d input the frames are a free view (b t, c, h, w) in channels_last order, normalised without
    a copy; a contiguous input is rearranged (a copy each way)."""

    def __init__(self, dim: int, groups: int):
        super().__init__(math.gcd(groups, dim), dim)

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        if x.is_contiguous(memory_format=torch.channels_last_3d) and not _gn_backward_would_crash(x, self):
            frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # a view, channels_last
            out = super().forward(frames)  # (b t, c, h, w)
            return out.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)  # (b, c, t, h, w), channels_last_3d
        x = rearrange(x.contiguous(), "b c t h w -> (b t) c h w")
        x = super().forward(x)
        return rearrange(x, "(b t) c h w -> b c t h w", t=t)


def _gn_backward_would_crash(x: Tensor, norm: nn.GroupNorm) -> bool:
    """torch 2.13's CPU GroupNorm backward segfaults on a channels_last input that does not require grad while the
    norm's weights do (e.g. the first norm of a decoder trained under a frozen encoder); such inputs take the
    contiguous path."""
    return (x.device.type == "cpu" and torch.is_grad_enabled() and not x.requires_grad
            and norm.weight is not None and norm.weight.requires_grad)


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


def frame_conv(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """A 2D conv applied to every frame of (b, c, t, h, w), as a (1, k, k) conv3d: no (b t) rearrange copies, and
    the input's memory format carries through."""
    return F.conv3d(x, conv.weight.unsqueeze(2), conv.bias, stride=(1, *conv.stride), padding=(0, *conv.padding))


class SpaceDownsample(nn.Module):
    """Halve h and w with a stride-2 3x3 conv applied to each frame."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out, 3, stride=2, padding=1)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return frame_conv(x, self.conv)  # (b, c', t, h/2, w/2)


class SpaceUpsample(nn.Module):
    """Double h and w: a 3x3 conv to 4 * dim_out at low resolution, then depth-to-space (pixel shuffle)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out * 4, 3, padding=1)
        _init_as_repeat(self.conv, 4)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        x = frame_conv(x, self.conv)  # (b, 4c', t, h, w)
        return rearrange(x, "b (c p1 p2) t h w -> b c t (h p1) (w p2)", p1=2, p2=2)


class TimeDownsample(nn.Module):
    """Halve t with a causal 3x3x3 conv of time stride 2: 1 + 2m frames -> 1 + m (`first_alone`, the first frame
    forms an output frame on its own), or 2m -> m (t even: the tokenizer prepended first-frame copies).

    Initialised to add the average of each pair of frames (channel-wise, where widths allow) to its random init,
    so the untrained layer already passes the content through; this speeds up early training a lot.
    """

    def __init__(self, dim_in: int, dim_out: int, first_alone: bool = True):
        super().__init__()
        self.conv = CausalConv3d(dim_in, dim_out, 3, time_stride=2, time_pad=2 if first_alone else 1)
        with torch.no_grad():
            eye = torch.eye(min(dim_in, dim_out))
            self.conv.conv.weight[: eye.shape[0], : eye.shape[1], 1:, 1, 1] += 0.5 * eye[..., None]

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.conv(x)  # (b, c', t/2, h, w)


class TimeUpsample(nn.Module):
    """Double t: a causal conv to 2 * dim_out channels, then depth-to-time (latent frame j -> frames 2j, 2j+1);
    `first_alone`: the first frame came from one frame, so of its two only the second is kept (1 + m -> 1 + 2m)."""

    def __init__(self, dim_in: int, dim_out: int, first_alone: bool = True):
        super().__init__()
        self.first_alone = first_alone
        self.conv = CausalConv3d(dim_in, dim_out * 2, 3)
        with torch.no_grad():  # start close to "repeat each latent frame twice" (see TimeDownsample)
            eye = torch.eye(min(dim_in, dim_out))
            self.conv.conv.weight[: eye.shape[0], : eye.shape[1], 2, 1, 1] += eye
        _init_as_repeat(self.conv.conv, 2)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        x = self.conv(x)  # (b, 2c', t, h, w)
        x = rearrange(x, "b (c r) t h w -> b c (t r) h w", r=2)  # (b, c', 2t, h, w)
        return x[:, :, 1:] if self.first_alone else x


@torch.no_grad()
def inflate_image_weights_(module: nn.Module) -> int:
    """Make a tokenizer trained on still images (1-frame clips) a video model that starts as that image model frame
    by frame (MAGVIT-v2's inflation, for causal convs that pad with first-frame copies). A still image reaches every
    temporal tap of a CausalConv3d (it is padded with copies of itself), so only the taps' sum was trained: the sum
    goes to the newest tap and the others become zero. Of each first-frame-alone TimeUpsample's two output frames an
    image trains only the second, which the first now copies. A still image's output is unchanged. In place;
    returns how many layers changed."""
    changed = 0
    for m in module.modules():
        if isinstance(m, TimeUpsample) and m.first_alone:
            conv = m.conv.conv  # output channels laid out (c r), r = 2: even channels make each pair's first frame
            conv.weight[0::2] = conv.weight[1::2]
            if conv.bias is not None:
                conv.bias[0::2] = conv.bias[1::2]
            changed += 1
    for m in module.modules():
        if isinstance(m, CausalConv3d) and m.conv.weight.shape[2] > 1:
            weight = m.conv.weight  # (c_out, c_in, k_t, k_h, k_w)
            weight[:, :, -1] = weight.sum(2)
            weight[:, :, :-1] = 0
            changed += 1
    return changed


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
    "conv_memory_format",
    "num_params",
    "sequential_forward",
]
