"""Pixels <-> tensors, the one conversion every stage uses: float in [-1, 1] <-> uint8 in [0, 255]."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["from_uint8", "to_uint8"]


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """Float ``(c, t, h, w)`` or ``(b, c, t, h, w)`` in [-1, 1] -> uint8 ``(t, h, w, c)`` or ``(b, t, h, w, c)``.

    Values are clamped to [-1, 1], mapped with ``(x + 1) * 127.5`` and rounded to nearest (not truncated), so
    ``to_uint8(from_uint8(a)) == a`` exactly. NaNs become 0 (black) rather than undefined bytes.
    """
    if not isinstance(video, torch.Tensor) or video.ndim not in (4, 5) or not video.is_floating_point():
        desc = f"{type(video).__name__} {tuple(getattr(video, 'shape', ()))}"
        raise ValueError(f"expected a float tensor (c, t, h, w) or (b, c, t, h, w); got {desc}")
    x = torch.nan_to_num(video.detach().float(), nan=-1.0).clamp(-1.0, 1.0)
    x = ((x + 1.0) * 127.5).round().to(torch.uint8).cpu()
    x = x.movedim(-4, -1)  # (..., t, h, w, c)
    return np.ascontiguousarray(x.numpy())


def from_uint8(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``(t, h, w, c)`` -> float32 ``(c, t, h, w)`` in [-1, 1] via ``x / 127.5 - 1``."""
    x = torch.as_tensor(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"expected uint8 frames (t, h, w, c); got {x.dtype} {tuple(x.shape)}")
    return (x.permute(3, 0, 1, 2).float() / 127.5 - 1.0).contiguous()  # (c, t, h, w)
