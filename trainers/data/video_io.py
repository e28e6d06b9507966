"""Video and image I/O with PyAV (``av``) and Pillow only.

Conventions:

- Frames on disk and in numpy are ``uint8 (T, H, W, 3)`` RGB.
- Frames as tensors are ``float (c, t, h, w)`` in [-1, 1] (``magvit2.pixels.from_uint8`` / ``to_uint8`` convert).
- Sizes are ``(height, width)``.
- Writers (``write_video``, ``write_gif``, ``save_image_grid``) live in ``magvit2.video_write`` and are
  re-exported here; every writer is atomic.
- A clip held in memory (a member of a tar shard, ``trainers.data.shards``) is read by passing its bytes as
  ``data=``: ``path`` then only names it (its suffix says image or video; errors name it).

Decoding resizes inside the decoder (``reformat(frame, format="rgb24", width=, height=)``), which can only scale
to a fixed ``(w, h)``; ``cover_size`` + ``crop_offsets`` give the usual "resize the short side, then crop" on top.
GIF is read by PyAV too (its frames match Pillow's exactly) and written with Pillow for a good per-frame palette.
Not handled: rotation metadata of phone videos and non-square sample aspect ratios (frames are taken as stored).
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter
from PIL import Image, ImageOps

from magvit2.video_write import save_image_grid, write_gif, write_video

__all__ = [
    "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "VideoInfo", "VideoReadError", "cover_size", "crop_offsets",
    "probe_image", "probe_video", "read_clip", "read_image", "read_video", "save_image_grid", "write_gif",
    "write_video"
]

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".webm", ".avi", ".mkv", ".mpg", ".mpeg", ".mov", ".gif")
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp")
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height


class VideoReadError(RuntimeError):
    """A file that cannot be decoded (corrupt, truncated, not a video, too few frames)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read {self.path}: {reason}")

    def __reduce__(self):  # picklable across DataLoader workers despite the two-argument constructor
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class VideoInfo:
    """Header facts about a clip. Images report ``num_frames=1`` and ``fps=0.0``."""

    num_frames: int
    height: int
    width: int
    fps: float


# ----------------------------------------------------------------------------------------------------------------
# Probing


def probe_video(path: str | os.PathLike, check_decode: bool = True) -> VideoInfo:
    """Frame count, size and frame rate of the first video stream, without decoding the whole file.

    The frame count is the container's ``stream.frames`` when it is > 0 (mp4, mov, avi, GIF); otherwise (mkv, webm,
    mpeg-PS/TS) packets are counted by demuxing, which reads the file but decodes nothing. With ``check_decode``
    the first frame is also decoded (one frame: cheap), which catches files whose header parses but whose data does
    not, e.g. a GIF truncated after its header.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        VideoReadError: the file is not a readable video (message says why).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such video file: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(path, "no video stream")
            stream = container.streams.video[0]
            stream.thread_count = 1  # one frame is decoded: decoder threads would only cost their start-up
            width, height = stream.codec_context.width, stream.codec_context.height
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            num_frames = int(stream.frames or 0)
            if check_decode:
                first = next(iter(container.decode(stream)), None)
                if first is None:
                    raise VideoReadError(path, "no decodable frame")
                width, height = first.width, first.height
        if num_frames <= 0:  # no count in the header: count packets (demux only, no decoding) in a fresh pass
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                num_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
    except VideoReadError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        raise VideoReadError(path, f"{type(exc).__name__}: {exc}") from exc
    if num_frames <= 0 or width <= 0 or height <= 0:
        raise VideoReadError(path, f"empty video stream ({num_frames} frames, {width}x{height})")
    return VideoInfo(num_frames=num_frames, height=height, width=width, fps=fps)


def probe_image(path: str | os.PathLike) -> VideoInfo:
    """Size of an image (after its EXIF rotation) via Pillow's ``verify``; raises ``VideoReadError`` if corrupt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    try:
        with Image.open(path) as im:
            im.verify()  # must come directly after open; the image is unusable afterwards
        with Image.open(path) as im:
            width, height = im.size
            if im.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSED_ORIENTATIONS:
                width, height = height, width
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise VideoReadError(path, f"{type(exc).__name__}: {exc}") from exc
    return VideoInfo(num_frames=1, height=height, width=width, fps=0.0)


# ----------------------------------------------------------------------------------------------------------------
# Reading


def read_video(
    path: str | os.PathLike,
    size: tuple[int, int] | None = None,
    start: int = 0,
    num_frames: int | None = None,
    stride: int = 1,
    data: bytes | None = None,
) -> np.ndarray:
    """Decode frames ``start, start + stride, ...`` of the first video stream (of ``data`` when given).

    Args:
        path: any container FFmpeg reads (mp4, webm, avi, mkv, mpg, mov, GIF, ...).
        size: ``(height, width)`` to scale every frame to inside the decoder (aspect ratio not kept; see
            ``cover_size``), or None for the native size.
        start: index of the first frame to return. For ``start > 0`` the decoder seeks to the keyframe before it
            and decodes forward (``_read_after_seek``), falling back to decoding from frame 0 when frame indices
            cannot be trusted; either way the frames are those decode-from-0 would give.
        num_frames: how many frames to return; None = all remaining. Decoding stops as soon as they are read.
        stride: keep every ``stride``-th frame.

    Returns:
        ``uint8 (T, H, W, 3)`` RGB.

    Raises:
        FileNotFoundError, VideoReadError (corrupt file, or fewer than ``num_frames`` frames available).
    """
    if start < 0 or stride < 1 or (num_frames is not None and num_frames < 1):
        raise ValueError(f"need start >= 0, stride >= 1, num_frames >= 1 or None; got {start}, {stride}, {num_frames}")
    path = Path(path)
    if data is None and not path.is_file():
        raise FileNotFoundError(f"no such video file: {path}")
    kwargs = {} if size is None else {"height": int(size[0]), "width": int(size[1])}
    frames: list[np.ndarray] = []
    decoded = 0
    try:
        with av.open(io.BytesIO(data) if data is not None else str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(path, "no video stream")
            stream = container.streams.video[0]
            reformatter, kwargs = _converter(stream, kwargs)
            if start > 0 and path.suffix.lower() != ".gif":
                sought = _read_after_seek(container, stream, start, num_frames, stride, kwargs, reformatter)
                if sought is not None:
                    return np.stack(sought)
                container.seek(0, stream=stream)  # the seek did not land where expected: decode from frame 0
            for frame in container.decode(stream):
                index = decoded
                decoded += 1
                if index < start or (index - start) % stride:
                    continue
                frames.append(_rgb(frame, reformatter, kwargs))  # (H, W, 3) uint8
                if num_frames is not None and len(frames) == num_frames:
                    break
    except VideoReadError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        raise VideoReadError(path, f"decoding failed after {decoded} frames: {type(exc).__name__}: {exc}") from exc
    if num_frames is not None and len(frames) < num_frames:
        need = start + (num_frames - 1) * stride + 1
        raise VideoReadError(path, f"needs {need} frames (start={start}, {num_frames} at stride {stride}), "
                                   f"decoded only {decoded}")
    if not frames:
        raise VideoReadError(path, f"no frames at or after start={start} (decoded {decoded})")
    return np.stack(frames)  # (T, H, W, 3)


SMALL_FRAME = 256 * 256  # pixels: frames up to this size decode on one thread


def _converter(stream, kwargs: dict) -> tuple[VideoReformatter, dict]:
    """Threads for decoding and the RGB conversion of one clip, by frame size, and the reformatter to convert with.

    Small frames decode and convert on one thread, where starting threads costs more than they save (a 9-frame 32x32
    clip: ~0.4 ms of its ~1 ms), through this thread's one reformatter, reused across clips: swscale sets itself up
    again only when a frame's format or size changes, and that setup cost more than decoding a still frame (a
    frame-phase batch reads 32 clips). Large frames get the decoder's frame + slice threads and a fresh reformatter
    with swscale's own threads. Only single-threaded swscale contexts are kept: one that owns threads does not survive
    a fork (a DataLoader worker that freed or used its copy hung).
    """
    if stream.codec_context.width * stream.codec_context.height <= SMALL_FRAME:
        stream.thread_count = 1
        return _thread_reformatter(), {**kwargs, "threads": 1}
    stream.thread_type = "AUTO"
    return VideoReformatter(), kwargs


_THREAD = threading.local()


def _thread_reformatter() -> VideoReformatter:
    """This thread's one reformatter for small frames (see ``_converter``)."""
    if not hasattr(_THREAD, "reformatter"):
        _THREAD.reformatter = VideoReformatter()
    return _THREAD.reformatter


def _rgb(frame: av.VideoFrame, reformatter: VideoReformatter, kwargs: dict) -> np.ndarray:
    """``uint8 (H, W, 3)`` of a decoded frame through one reformatter for the clip: ``frame.to_ndarray`` builds a
    new swscale context for every frame, which made converting a 9-frame 32x32 clip cost twice its decoding."""
    return reformatter.reformat(frame, format="rgb24", **kwargs).to_ndarray()


def _read_after_seek(container, stream, start: int, num_frames: int | None, stride: int,
                     kwargs: dict, reformatter: VideoReformatter) -> list[np.ndarray] | None:
    """Frames ``start, start + stride, ...`` by a keyframe seek, then decoding forward; None = use decode-from-0.

    A frame's index is ``round((pts - start_time) * time_base * fps)``, which holds for constant-frame-rate streams.
    The seek targets half a frame before ``start`` (``backward=True``: the keyframe at or before it). Anything that
    would make the indices untrustworthy gives None and the caller decodes from frame 0: no rate or time base, a
    frame without pts, a landing after ``start``, or indices that do not advance by exactly one per frame (variable
    frame rate). So the result is either None or exactly what decode-from-0 returns.
    """
    rate, time_base = stream.average_rate or stream.guessed_rate, stream.time_base
    if not rate or not time_base:
        return None
    fps, origin = Fraction(rate), int(stream.start_time or 0)
    target = origin + int((Fraction(start) - Fraction(1, 2)) / fps / Fraction(time_base))
    container.seek(max(origin, target), stream=stream, backward=True, any_frame=False)
    frames: list[np.ndarray] = []
    previous = None
    for frame in container.decode(stream):
        if frame.pts is None:
            return None
        index = round((frame.pts - origin) * Fraction(time_base) * fps)
        if (previous is None and index > start) or (previous is not None and index != previous + 1):
            return None
        previous = index
        if index < start or (index - start) % stride:
            continue
        frames.append(_rgb(frame, reformatter, kwargs))
        if num_frames is not None and len(frames) == num_frames:
            return frames
    return frames if frames and num_frames is None else None


def read_image(path: str | os.PathLike, size: tuple[int, int] | None = None, data: bytes | None = None
               ) -> np.ndarray:
    """Read an image (EXIF rotation applied, alpha dropped) as a 1-frame clip ``uint8 (1, H, W, 3)``.

    ``size`` is ``(height, width)``; resizing is bilinear (antialiased when shrinking), like the video decoder's.
    """
    path = Path(path)
    if data is None and not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            if size is not None and (im.height, im.width) != tuple(size):
                im = im.resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)[None].copy()  # (1, H, W, 3)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise VideoReadError(path, f"{type(exc).__name__}: {exc}") from exc


def cover_size(src_hw: tuple[int, int], target_hw: tuple[int, int]) -> tuple[int, int]:
    """Smallest aspect-preserving size of ``src_hw`` that covers ``target_hw`` (for a square target: the short
    side becomes the target). Both are ``(height, width)``; the result is >= the target in each dimension."""
    (h, w), (th, tw) = src_hw, target_hw
    if min(h, w, th, tw) <= 0:
        raise ValueError(f"sizes must be positive; got source {src_hw}, target {target_hw}")
    scale = max(th / h, tw / w)
    return max(th, round(h * scale)), max(tw, round(w * scale))


def crop_offsets(
    src_hw: tuple[int, int], target_hw: tuple[int, int], generator: torch.Generator | None = None
) -> tuple[int, int]:
    """``(top, left)`` of a ``target_hw`` window inside ``src_hw``: uniform random with ``generator``, else center."""
    (h, w), (th, tw) = src_hw, target_hw
    if th > h or tw > w:
        raise ValueError(f"crop {target_hw} is larger than the frame {src_hw}")
    if generator is None:
        return (h - th) // 2, (w - tw) // 2
    top = int(torch.randint(0, h - th + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - tw + 1, (1,), generator=generator))
    return top, left


def read_clip(
    path: str | os.PathLike,
    size: tuple[int, int],
    start: int = 0,
    num_frames: int = 1,
    stride: int = 1,
    generator: torch.Generator | None = None,
    info: VideoInfo | None = None,
    data: bytes | None = None,
) -> np.ndarray:
    """Read ``num_frames`` frames (or the image) at ``size`` = ``(h, w)``: scale to cover, then crop.

    The crop is random when ``generator`` is given, centered otherwise. ``info`` (from a probe) saves a re-probe.
    Images return 1 frame whatever ``num_frames`` is. ``data``: the file's bytes (then ``info`` is required).
    Returns ``uint8 (T, h, w, 3)``.
    """
    is_image = Path(path).suffix.lower() in IMAGE_EXTENSIONS
    if info is None and data is not None:
        raise ValueError("read_clip(data=...) needs info (the clip's frame count and size)")
    if info is None:
        info = probe_image(path) if is_image else probe_video(path, check_decode=False)
    scaled = cover_size((info.height, info.width), size)
    if is_image:
        frames = read_image(path, size=scaled, data=data)
    else:
        frames = read_video(path, size=scaled, start=start, num_frames=num_frames, stride=stride, data=data)
    top, left = crop_offsets(scaled, size, generator)
    return np.ascontiguousarray(frames[:, top : top + size[0], left : left + size[1]])  # (T, h, w, 3)
