"""Writing videos, GIFs and image grids (PyAV and Pillow), and `export_to_video`, diffusers' helper for pipeline
outputs. Every writer is atomic (`magvit2.serialization.atomic_write`), so a crash never leaves a half-written file
under the real name.

Frames may be given as (`as_uint8_frames`):

* numpy uint8 `(t, h, w, 3)` (or `(t, h, w)` / `(t, h, w, 1)` grayscale);
* numpy float `(t, h, w, 3)` in [0, 1]: a pipeline's `output_type="np"` video (`frames[0]`), diffusers' convention;
  mapped with `round(x * 255)` (diffusers truncates; rounding makes `"np"` and `"pt"` outputs write identical bytes);
* a list of `(h, w, 3)` arrays (uint8, or float in [0, 1]) or of PIL images (`output_type="pil"`);
* a torch float tensor `(c, t, h, w)` in [-1, 1]: this package's pixel convention (`output_type="pt"`, `frames[0]`);
  a torch uint8 tensor is read like numpy uint8.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from PIL import GifImagePlugin, Image

from magvit2.pixels import to_uint8
from magvit2.serialization import atomic_write

__all__ = ["as_uint8_frames", "export_to_video", "save_image_grid", "write_gif", "write_video"]

_MP4_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
_RANGE_SLACK = 1e-3  # float frames may overshoot [0, 1] by rounding; more than this is a range mistake


# ----------------------------------------------------------------------------------------------------------------
# frames -> uint8


def _describe(frames: Any) -> str:
    return f"{type(frames).__name__} {getattr(frames, 'dtype', '')} {tuple(getattr(frames, 'shape', ()))}".strip()


def as_uint8_frames(frames: np.ndarray | torch.Tensor | Sequence[Any]) -> np.ndarray:
    """Any accepted frame form (module docstring) -> contiguous uint8 numpy `(t, h, w, 3)`, t >= 1."""
    if isinstance(frames, torch.Tensor):
        if frames.dtype == torch.uint8:
            frames = frames.cpu().numpy()
        elif frames.is_floating_point() and frames.ndim == 4:
            frames = to_uint8(frames)  # (c, t, h, w) in [-1, 1] -> (t, h, w, c)
        else:
            raise ValueError(f"expected a float tensor (c, t, h, w) in [-1, 1] or a uint8 tensor (t, h, w, 3); got "
                             f"{_describe(frames)}" + (" (a batch? pass one video, e.g. frames[0])"
                                                       if frames.ndim == 5 else ""))
    elif isinstance(frames, (list, tuple)):
        if not frames:
            raise ValueError("expected at least one frame; got an empty list")
        frames = np.stack([np.asarray(f.convert("RGB")) if isinstance(f, Image.Image) else np.asarray(f)
                           for f in frames])
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"expected video frames (numpy, a list of frames or PIL images, or a tensor); got "
                         f"{_describe(frames)}")
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4:
        hint = " (a batch of videos? pass one, e.g. frames[0])" if frames.ndim == 5 else ""
        raise ValueError(f"expected frames (t, h, w, 3); got shape {frames.shape}{hint}")
    if frames.dtype != np.uint8:
        if not np.issubdtype(frames.dtype, np.floating):
            raise ValueError(f"expected uint8 frames or float frames in [0, 1]; got dtype {frames.dtype}")
        lo, hi = float(np.nanmin(frames)), float(np.nanmax(frames))
        if lo < -_RANGE_SLACK or hi > 1 + _RANGE_SLACK:
            raise ValueError(f"float frames must lie in [0, 1] (diffusers' convention); got values in [{lo:.3g}, "
                             f"{hi:.3g}]" + (" (a [-1, 1] video? pass (x + 1) / 2, or the torch tensor itself)"
                                             if lo < 0 else ""))
        frames = np.round(np.clip(np.nan_to_num(frames, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    if frames.shape[-1] == 4:
        frames = frames[..., :3]  # RGBA: alpha dropped
    if frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"expected (t >= 1, h, w, 3) frames; got {frames.shape}")
    return np.ascontiguousarray(frames)


def export_to_video(video_frames: np.ndarray | torch.Tensor | Sequence[Any], output_video_path: str | None = None,
                    fps: float = 10, lossless: bool = False) -> str:
    """diffusers' `export_to_video(video_frames, output_video_path=None, fps=10)`: write one video and return its
    path (a new temporary .mp4 when `output_video_path` is None). `video_frames`: any form of the module docstring,
    e.g. `pipe(prompt).frames[0]` (float (t, h, w, 3) in [0, 1]), `output_type="pil"` lists, or
    `output_type="pt"` tensors. `.gif` paths write a GIF; `lossless`: H.264 yuv444p crf 0 (see `write_video`)."""
    if output_video_path is None:
        with tempfile.NamedTemporaryFile(suffix=".mp4", delete=False) as tmp:
            output_video_path = tmp.name
    return str(write_video(output_video_path, video_frames, fps=fps, lossless=lossless))


# ----------------------------------------------------------------------------------------------------------------
# Writing


def write_video(
    path: str | os.PathLike, frames: np.ndarray | torch.Tensor, fps: float = 8, lossless: bool = False
) -> Path:
    """Write frames as H.264 (``.mp4``, ``.m4v``, ``.mov``, ``.mkv``) or as a GIF (``.gif``, via ``write_gif``).

    Args:
        frames: any form of the module docstring (uint8 or float [0, 1] numpy ``(T, H, W, 3)``, lists of frames or
            PIL images, a float tensor ``(c, t, h, w)`` in [-1, 1]).
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
    data = as_uint8_frames(frames)  # (T, H, W, 3)
    if not lossless and (data.shape[1] % 2 or data.shape[2] % 2):
        data = np.pad(data, ((0, 0), (0, data.shape[1] % 2), (0, data.shape[2] % 2), (0, 0)), mode="edge")
    _, height, width, _ = data.shape
    with atomic_write(path) as tmp, av.open(str(tmp), mode="w", format=_MP4_FORMATS[suffix]) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv444p" if lossless else "yuv420p"
        stream.options = {"crf": "0" if lossless else "18",
                          # one encoder thread for small frames: x264's thread pool costs more than it saves there
                          # (a 9-frame 32x32 clip: 16 -> 7 ms); callers write several files in parallel instead
                          **({"threads": "1"} if width * height <= 256 * 256 else {})}
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
    data = as_uint8_frames(frames)
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
    tiles = as_uint8_frames(tiles)  # (n, h, w, 3)
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
