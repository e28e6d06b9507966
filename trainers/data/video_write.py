"""Writing videos, GIFs and image grids (PyAV and Pillow); split out of ``trainers.data.video_io``, which re-exports
these names.

Frames are ``uint8 (T, H, W, 3)`` RGB in numpy or ``float (c, t, h, w)`` in [-1, 1] as tensors. Every writer is
atomic (``magvit2.serialization.atomic_write``), so a crash never leaves a half-written file under the real name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import GifImagePlugin, Image

from magvit2.pixels import to_uint8
from magvit2.serialization import atomic_write

__all__ = ["save_image_grid", "write_gif", "write_video"]

_MP4_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


# ----------------------------------------------------------------------------------------------------------------
# Tensor <-> uint8


def _as_uint8_frames(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Accept uint8 numpy ``(T, H, W, 3)`` or float tensor ``(c, t, h, w)`` in [-1, 1]; return uint8 (T, H, W, 3)."""
    if isinstance(frames, torch.Tensor):
        if frames.ndim != 4:
            raise ValueError(f"expected a float tensor (c, t, h, w); got shape {tuple(frames.shape)}")
        frames = to_uint8(frames)
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4:
        raise ValueError("expected uint8 numpy frames (T, H, W, 3) or a float tensor (c, t, h, w) in [-1, 1]; "
                         f"got {type(frames).__name__} {getattr(frames, 'dtype', '')} {getattr(frames, 'shape', '')}")
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    if frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"expected (T >= 1, H, W, 3) frames; got {frames.shape}")
    return np.ascontiguousarray(frames)


# ----------------------------------------------------------------------------------------------------------------
# Writing


def write_video(
    path: str | os.PathLike, frames: np.ndarray | torch.Tensor, fps: float = 8, lossless: bool = False
) -> Path:
    """Write frames as H.264 (``.mp4``, ``.m4v``, ``.mov``, ``.mkv``) or as a GIF (``.gif``, via ``write_gif``).

    Args:
        frames: uint8 numpy ``(T, H, W, 3)`` or float tensor ``(c, t, h, w)`` in [-1, 1].
        fps: frames per second.
        lossless: libx264 ``yuv444p`` at ``crf 0`` (near exact: only the RGB<->YUV rounding is lost, ~50 dB);
            otherwise ``yuv420p`` at ``crf 18``, which plays everywhere but needs even H and W: odd sizes are padded
            by replicating the last row/column, so such a file reads back one pixel larger.

    Returns the path written. The write is atomic.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        return write_gif(path, frames, fps=fps)
    if suffix not in _MP4_FORMATS:
        raise ValueError(f"cannot write {path}: supported extensions are {[*_MP4_FORMATS, '.gif']}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0; got {fps}")
    data = _as_uint8_frames(frames)  # (T, H, W, 3)
    if not lossless and (data.shape[1] % 2 or data.shape[2] % 2):
        data = np.pad(data, ((0, 0), (0, data.shape[1] % 2), (0, data.shape[2] % 2), (0, 0)), mode="edge")
    _, height, width, _ = data.shape
    with atomic_write(path) as tmp, av.open(str(tmp), mode="w", format=_MP4_FORMATS[suffix]) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv444p" if lossless else "yuv420p"
        stream.options = {"crf": "0" if lossless else "18"}
        for frame_array in data:
            frame = av.VideoFrame.from_ndarray(frame_array, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush the encoder
    return path


def write_gif(path: str | os.PathLike, frames: np.ndarray | torch.Tensor, fps: float = 8) -> Path:
    """Write an endlessly looping GIF with Pillow: one adaptive 256-colour palette per frame (no dithering).

    Frames as in ``write_video``. Every frame is kept, even repeated ones (Pillow's ``save_all`` would merge
    identical consecutive frames, changing the frame count), so a T-frame input always reads back as T frames.
    GIF delays are in 1/100 s, so the stored rate is approximate (8 fps -> 120 ms per frame). Atomic.
    """
    if fps <= 0:
        raise ValueError(f"fps must be > 0; got {fps}")
    data = _as_uint8_frames(frames)
    duration_ms = max(10, round(1000.0 / fps))
    images = [Image.fromarray(f).quantize(colors=256, method=Image.Quantize.FASTOCTREE) for f in data]
    with atomic_write(path) as tmp, open(tmp, "wb") as fp:
        # Pillow's frame-level GIF writers (getheader/getdata) write each frame verbatim with its own palette.
        header, _ = GifImagePlugin.getheader(images[0], info={"loop": 0, "duration": duration_ms})
        for chunk in header:
            fp.write(chunk)
        for image in images:
            for chunk in GifImagePlugin.getdata(image, duration=duration_ms, disposal=1, include_color_table=True):
                fp.write(chunk)
        fp.write(b";")  # GIF trailer
    return Path(path)


def save_image_grid(
    path: str | os.PathLike,
    images: torch.Tensor | np.ndarray | Sequence[np.ndarray | torch.Tensor],
    nrow: int = 8,
    padding: int = 2,
    pad_value: int = 255,
) -> Path:
    """Save a contact sheet PNG: images in rows of ``nrow``, separated by ``padding`` px of ``pad_value``.

    ``images`` is a float tensor ``(n, c, h, w)`` in [-1, 1], a uint8 array ``(n, h, w, 3)``, or a sequence of
    single images (float ``(c, h, w)`` in [-1, 1] or uint8 ``(h, w, 3)``) of one size. Atomic.
    """
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"expected a float tensor (n, c, h, w); got {tuple(images.shape)}")
        tiles = to_uint8(images.unsqueeze(2))[:, 0]  # (n, c, 1, h, w) -> (n, h, w, c)
    elif isinstance(images, np.ndarray):
        tiles = images
    else:
        tiles = np.stack([to_uint8(im[:, None])[0] if isinstance(im, torch.Tensor) else im for im in images])
    tiles = _as_uint8_frames(tiles)  # (n, h, w, 3)
    n, h, w, _ = tiles.shape
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1; got {nrow}")
    cols, rows = min(nrow, n), -(-n // nrow)
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, 3), pad_value, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        top, left = padding + (i // nrow) * (h + padding), padding + (i % nrow) * (w + padding)
        grid[top : top + h, left : left + w] = tile
    with atomic_write(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return Path(path)
