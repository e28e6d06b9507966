"""3D StyleGAN-style discriminator with anti-aliased (blur-pool) downsampling, and multi-resolution temporal
discriminators that look at random windows of consecutive frames.

Inputs are videos `(b, c, t, h, w)` in [-1, 1]; an image batch `(b, c, h, w)` is treated as a 1-frame video.
Each discriminator returns one logit per sample, `(b,)`.

Sizing: the discriminator is sized from the tokenizer (`DiscriminatorConfig.for_tokenizer`), not fixed at 512
channels. MAGVIT's discriminator uses 64 base filters with channel multipliers (2, 4, 4, 4, 4), i.e. widths capped at
4x the base; we cap at `min(tokenizer max_dim, 4 * init_dim)`. For the seed README tokenizer (128 px, init_dim 64,
max_dim 512) that is ~14.3M parameters, against ~118M for the reference tokenizer of that config and 49M for the
reference's 2D discriminator (prior-art §1.6).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magvit2.config import TokenizerConfig


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Architecture of a `Discriminator3D`."""

    image_size: tuple[int, int] | int  # (h, w) the block count is chosen for; other sizes still run
    channels: int = 3  # input channels
    dim: int = 64  # width after the input conv
    max_dim: int = 256  # cap on block widths (each block doubles the width up to this)
    min_resolution: int = 4  # blocks halve space until the smaller side is about this

    def __post_init__(self) -> None:
        size = self.image_size
        if isinstance(size, int) and not isinstance(size, bool):
            size = (size, size)
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
            raise ValueError(f"image_size must be an int or (h, w) of positive ints; got {self.image_size!r}")
        object.__setattr__(self, "image_size", tuple(size))
        for name in ("channels", "dim", "max_dim", "min_resolution"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if self.max_dim < self.dim:
            raise ValueError(f"max_dim ({self.max_dim}) must be >= dim ({self.dim})")

    @property
    def num_blocks(self) -> int:
        """Downsampling blocks: halve the smaller side down to ~min_resolution (at least one block)."""
        return max(1, int(math.log2(max(1, min(self.image_size) // self.min_resolution))))

    @property
    def widths(self) -> tuple[int, ...]:
        """Width after the input conv and after each block: dim, 2*dim, 4*dim, ... capped at max_dim."""
        return tuple(min(self.dim * 2**i, self.max_dim) for i in range(self.num_blocks + 1))

    @classmethod
    def for_tokenizer(cls, tokenizer_config: TokenizerConfig, dim: int | None = None,
                      max_dim: int | None = None) -> DiscriminatorConfig:
        """Size relative to the tokenizer: dim = init_dim, max_dim = min(tokenizer max_dim, 4 * init_dim)."""
        dim = tokenizer_config.init_dim if dim is None else dim
        if max_dim is None:
            cap = 4 * tokenizer_config.init_dim
            max_dim = max(dim, min(tokenizer_config.max_dim or cap, cap))
        return cls(image_size=tokenizer_config.image_size, channels=tokenizer_config.channels, dim=dim,
                   max_dim=max_dim)


def as_video(x: Tensor, name: str = "video", channels: int | None = None) -> Tensor:
    """`(b, c, h, w)` -> `(b, c, 1, h, w)`; `(b, c, t, h, w)` unchanged; anything else raises ValueError."""
    if not isinstance(x, Tensor) or x.ndim not in (4, 5):
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be (b, c, t, h, w) or an image batch (b, c, h, w); got {got}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels (dim 1); got shape {tuple(x.shape)}")
    return x if x.ndim == 5 else x.unsqueeze(2)


def blur_downsample(x: Tensor, dim: int) -> Tensor:
    """Binomial [1, 2, 1] / 4 blur along `dim`, then keep every 2nd sample: length n -> ceil(n / 2).

    Reflect padding (replicate when n == 1) keeps the filter symmetric at the borders, so a signal alternating at the
    Nyquist frequency maps to exactly 0 where plain striding would alias it to a constant.
    """
    n = x.shape[dim]
    pad = [0, 0] * (x.ndim - 2)
    pad[2 * (x.ndim - 1 - dim)], pad[2 * (x.ndim - 1 - dim) + 1] = 1, 1  # F.pad lists the last dim first
    x = F.pad(x, pad, mode="reflect" if n > 1 else "replicate")  # length n + 2
    m = (n + 1) // 2

    def taps(k: int) -> Tensor:  # padded samples k, k + 2, ..., k + 2(m - 1)
        index = [slice(None)] * x.ndim
        index[dim] = slice(k, k + 2 * m - 1, 2)
        return x[tuple(index)]

    return (taps(0) + 2 * taps(1) + taps(2)) / 4


class BlurPool3d(nn.Module):
    """Anti-aliased 2x downsampling of `(b, c, t, h, w)`: separable binomial blur + stride 2 over (h, w), and over t
    too while t > 1 (a 3D blur where time is downsampled, 2D otherwise). Parameter-free."""

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[2] > 1:
            x = blur_downsample(x, 2)  # (b, c, ceil(t/2), h, w)
        return blur_downsample(blur_downsample(x, 3), 4)  # (b, c, t', ceil(h/2), ceil(w/2))


class DiscriminatorBlock(nn.Module):
    """StyleGAN2-style residual block: 3x3x3 conv, lrelu, blur-pool, 3x3x3 conv, lrelu; skip = blur-pool + 1x1x1 conv;
    the sum is scaled by 1/sqrt(2). `(b, in, t, h, w)` -> `(b, out, t', ceil(h/2), ceil(w/2))`."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(dim_in, dim_in, 3, padding=1)
        self.conv2 = nn.Conv3d(dim_in, dim_out, 3, padding=1)  # runs after the downsample: 1/4-1/8 of the cost
        self.skip = nn.Conv3d(dim_in, dim_out, 1, bias=False)
        self.down = BlurPool3d()

    def forward(self, x: Tensor) -> Tensor:
        skip = self.skip(self.down(x))  # (b, out, t', h/2, w/2)
        x = F.leaky_relu(self.conv1(x), 0.2)  # (b, in, t, h, w)
        x = F.leaky_relu(self.conv2(self.down(x)), 0.2)  # (b, out, t', h/2, w/2)
        return (x + skip) / math.sqrt(2)


class Discriminator3D(nn.Module):
    """StyleGAN-style residual 3D discriminator (MAGVIT-v2 §3.2 uses StyleGAN's with 3D convs).

    conv-in (3x3x3) -> `num_blocks` residual blocks, each halving (h, w) and t while t > 1 -> 3x3x3 conv -> global mean
    over (t, h, w) -> linear -> one logit per sample. Works for images (t = 1), any frame count and non-square frames.
    """

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.widths
        self.conv_in = nn.Conv3d(config.channels, widths[0], 3, padding=1)
        self.blocks = nn.ModuleList(DiscriminatorBlock(a, b) for a, b in itertools.pairwise(widths))
        self.conv_out = nn.Conv3d(widths[-1], widths[-1], 3, padding=1)
        self.to_logit = nn.Linear(widths[-1], 1)

    def forward(self, video: Tensor) -> Tensor:
        """video: `(b, c, t, h, w)` or `(b, c, h, w)`, float in [-1, 1] -> logits `(b,)` (unbounded)."""
        x = as_video(video, channels=self.config.channels)  # (b, c, t, h, w)
        x = F.leaky_relu(self.conv_in(x), 0.2)  # (b, dim, t, h, w)
        for block in self.blocks:
            x = block(x)  # (b, d', t', h', w')
        x = F.leaky_relu(self.conv_out(x), 0.2)  # (b, max, t', ~4, ~4)
        return self.to_logit(x.mean(dim=(2, 3, 4))).squeeze(-1)  # (b,)


class TemporalDiscriminators(nn.Module):
    """Multi-resolution temporal discriminators: one small `Discriminator3D` per window length L, each shown a random
    window of L consecutive frames (a start per sample, drawn from an explicit `torch.Generator`).

    Windows longer than the clip are SKIPPED (not clamped): for a clip of t frames only discriminators with L <= t
    run, so images (t = 1) run none. Results are keyed by discriminator index (position in `window_lengths`).
    For a discriminator step, draw the starts once (`sample_starts`, or take them from `crop_windows`) and pass them
    for both real and fake so both are judged on the same frames.
    """

    def __init__(self, window_lengths: tuple[int, ...], config: DiscriminatorConfig) -> None:
        super().__init__()
        window_lengths = tuple(window_lengths)
        if not window_lengths or any(not isinstance(n, int) or isinstance(n, bool) or n < 2 for n in window_lengths):
            raise ValueError(f"window_lengths must be a non-empty tuple of ints >= 2; got {window_lengths!r}")
        if len(set(window_lengths)) != len(window_lengths):
            raise ValueError(f"window_lengths must be distinct; got {window_lengths!r}")
        self.window_lengths = window_lengths
        self.discriminators = nn.ModuleList(Discriminator3D(config) for _ in window_lengths)

    def active(self, num_frames: int) -> list[int]:
        """Indices of the discriminators whose window fits in `num_frames` frames."""
        return [i for i, n in enumerate(self.window_lengths) if n <= num_frames]

    def sample_starts(self, batch_size: int, num_frames: int, generator: torch.Generator | None) -> dict[int, Tensor]:
        """Window starts `{index: LongTensor (b,) in [0, t - L]}` for each active discriminator, in index order.

        A generator is required whenever a window has a choice (L < t); with L == t the start is 0.
        """
        starts = {}
        for i in self.active(num_frames):
            high = num_frames - self.window_lengths[i] + 1
            if high == 1:
                starts[i] = torch.zeros(batch_size, dtype=torch.long)
                continue
            if generator is None:
                raise ValueError("temporal windows are drawn at random: pass generator=torch.Generator (or starts=)")
            drawn = torch.randint(0, high, (batch_size,), generator=generator, device=generator.device)
            starts[i] = drawn.cpu()
        return starts

    def crop_windows(self, video: Tensor, generator: torch.Generator | None = None,
                     starts: dict[int, Tensor] | None = None) -> tuple[dict[int, Tensor], dict[int, Tensor]]:
        """video `(b, c, t, h, w)` -> (`{index: window (b, c, L, h, w)}`, `{index: starts (b,)}`) for the active
        discriminators. Pass the returned starts back to crop the other video (real vs fake) identically."""
        video = as_video(video)
        b, t = video.shape[0], video.shape[2]
        if starts is None:
            starts = self.sample_starts(b, t, generator)
        expected = self.active(t)
        if sorted(starts) != expected:
            raise ValueError(f"starts must have keys {expected} (discriminators active at t={t}); got {sorted(starts)}")
        windows = {}
        for i, s in starts.items():
            length = self.window_lengths[i]
            s = torch.as_tensor(s, dtype=torch.long).flatten()
            if s.numel() != b or s.min() < 0 or s.max() > t - length:
                raise ValueError(f"starts[{i}] must be {b} ints in [0, {t - length}]; got {s.tolist()}")
            windows[i] = torch.stack([video[j, :, k:k + length] for j, k in enumerate(s.tolist())])  # (b, c, L, h, w)
        return windows, starts

    def discriminate(self, windows: dict[int, Tensor]) -> dict[int, Tensor]:
        """`{index: window}` -> `{index: logits (b,)}`."""
        return {i: self.discriminators[i](w) for i, w in windows.items()}

    def forward(self, video: Tensor, generator: torch.Generator | None = None,
                starts: dict[int, Tensor] | None = None) -> list[Tensor]:
        """video `(b, c, t, h, w)` in [-1, 1] -> logits `(b,)` for each active discriminator (those with L <= t), in
        index order; an empty list when none fits."""
        windows, _ = self.crop_windows(video, generator, starts)
        return list(self.discriminate(windows).values())
