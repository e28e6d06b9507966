"""What `VideoTokenizer` checks before it runs: pixel videos (or image batches) and code grids, each failure a
`ValueError` that names what was expected and what came."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def check_num_frames(t: int, time_compression: int) -> None:
    """A causal tokenizer with time compression f takes 1 + f*k frames."""
    f = time_compression
    if t < 1 or (t - 1) % f:
        k = max((t - 1) // f, 1)
        raise ValueError(f"got {t} frames; need 1 + {f}k, e.g. {1 + f * k} or {1 + f * (k + 1)}")


def check_video(video: Tensor, channels: int, image_size: Sequence[int], time_compression: int
                ) -> tuple[Tensor, bool]:
    """A float video (b, c, t, h, w) or images (b, c, h, w) in [-1, 1] -> (video as (b, c, t, h, w), whether the
    input was an image batch)."""
    if not isinstance(video, Tensor):
        raise ValueError(f"expected a torch.Tensor video (b, c, t, h, w) in [-1, 1]; got {type(video).__name__}")
    if not video.is_floating_point():
        raise ValueError(f"expected a float video in [-1, 1]; got dtype {video.dtype} (try x.float() / 127.5 - 1)")
    is_image = video.ndim == 4
    if is_image:
        video = video.unsqueeze(2)
    if video.ndim != 5:
        raise ValueError(f"expected a video (b, c, t, h, w) or images (b, c, h, w); got shape {tuple(video.shape)}")
    _, ch, t, h, w = video.shape
    if ch != channels:
        raise ValueError(f"expected {channels} channels at dim 1; got {ch} (shape {tuple(video.shape)})")
    check_num_frames(t, time_compression)
    if (h, w) != tuple(image_size):
        raise ValueError(f"expected frames of size {tuple(image_size)}; got {(h, w)}: resize them first "
                         "(e.g. torch.nn.functional.interpolate, or trainers.data.video_io.read_clip(path, size)), "
                         f"or use a tokenizer built with image_size=({h}, {w})")
    return video, is_image


def check_codes(codes: Tensor, latent_hw: Sequence[int], codebook_size: int) -> Tensor:
    """Integer codes (b, t', h', w') or flattened (b, t'*h'*w') in [0, codebook_size) -> long (b, t', h', w')."""
    if not isinstance(codes, Tensor) or codes.is_floating_point() or codes.dtype == torch.bool:
        raise ValueError(f"expected integer codes; got {getattr(codes, 'dtype', type(codes).__name__)}")
    hl, wl = latent_hw
    if codes.ndim == 2:
        if codes.shape[1] % (hl * wl):
            raise ValueError(f"flattened codes (b, n) need n divisible by h'*w' = {hl * wl}; got n={codes.shape[1]}")
        codes = codes.reshape(codes.shape[0], -1, hl, wl)
    if codes.ndim != 4 or codes.shape[2:] != (hl, wl):
        raise ValueError(f"expected codes (b, t', {hl}, {wl}) or (b, n); got shape {tuple(codes.shape)}")
    lo, hi = int(codes.min()), int(codes.max())
    if lo < 0 or hi >= codebook_size:
        raise ValueError(f"codes must be in [0, {codebook_size}); got values in [{lo}, {hi}]")
    return codes.long()
