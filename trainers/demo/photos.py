"""Real images and video for the demo tokenizer: camera motion over photos, a real GIF, real clips.

Sources, all real and installable from package registries (nothing downloaded at run time):

* the photos ``skimage.data`` ships (astronaut, coffee, rocket, ...) and scikit-learn's ``china``/``flower``,
  turned into "Ken Burns" clips: the photo is downscaled (antialiased), then a square window pans and/or zooms
  over it at constant speed and each frame is the window resampled to ``size x size``;
* the animated GIF ``skimage/data/no_time_for_that_tiny.gif`` (24 frames of 14x25), upscaled and cropped;
* ``skimage.data.lfw_subset`` faces (the first 100 of its 200 25x25 images are faces), as slow pans/zooms;
* optionally the real clips ``scripts/fetch_demo_clips.sh`` extracts from Debian packages (vtest.avi, ...),
  decoded with PyAV resizing in the decoder, centre-cropped and cut into segments spread across each clip with a
  frame stride that brings them near ``fps``.

Whole sources are held out for validation (``VAL_PHOTOS`` and ``PhotoDataConfig.val_videos``), so the
reconstruction PSNR is measured on images and footage the tokenizer never saw. Every clip is a pure function of
``(seed, source, index)``. Frames are uint8 ``(T, H, W, 3)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from trainers.data.video_io import cover_size, crop_offsets, probe_video, read_video
from trainers.rng import derive_seed

from .clip_folder import write_clip_folder

SKIMAGE_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry", "colorwheel",
    "horse", "camera", "moon", "brick", "grass", "gravel", "coins", "clock", "cell", "page", "text",
    "stereo_motorcycle", "logo", "microaneurysms",
)  # fmt: skip
SKLEARN_PHOTOS = ("china", "flower")
PHOTOS = SKIMAGE_PHOTOS + SKLEARN_PHOTOS
VAL_PHOTOS = ("chelsea", "coffee", "gravel", "china")  # a cat, an object, a texture, a landscape
DEBIAN_VIDEOS = ("vtest.avi", "Megamind.avi", "tree.avi", "box.mp4", "cup.mp4", "cityCC0.mpg")
VAL_VIDEOS = ("cityCC0.mpg",)  # the default held-out real video; PhotoDataConfig.val_videos picks others
GIF_NAME = "no_time_for_that_tiny.gif"
_PHOTO_KEY, _GIF_KEY, _FACE_KEY = 31_337, 31_357, 31_379  # derive_seed purpose tags


@dataclass(frozen=True)
class PhotoDataConfig:
    """Settings of the tokenizer dataset; every field goes into the build manifest."""

    seed: int = 0
    size: int = 32  # frame height = width
    num_frames: int = 9
    fps: int = 8  # target frame rate of the video segments (sets their frame stride)
    clips_per_photo: int = 12  # Ken Burns clips per training photo
    val_clips_per_photo: int = 6  # Ken Burns clips per held-out photo
    gif_clips: int = 8  # clips from the animated GIF (train)
    face_clips: int = 40  # lfw_subset face clips (train)
    segments_per_video: int = 24  # segments per Debian training clip
    val_segments_per_video: int = 12  # segments per held-out Debian clip
    val_videos: tuple[str, ...] = VAL_VIDEOS  # the Debian clips held out (a second real-video set: ("vtest.avi",))

    def __post_init__(self) -> None:
        object.__setattr__(self, "val_videos", tuple(self.val_videos))  # a list from YAML / JSON is fine too
        unknown = [v for v in self.val_videos if v not in DEBIAN_VIDEOS]
        if unknown:
            raise ValueError(f"val_videos must name clips of {DEBIAN_VIDEOS}, got {unknown}")
        if self.size < 8:
            raise ValueError(f"size must be >= 8, got {self.size}")
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {self.num_frames}")
        if self.fps < 1:
            raise ValueError(f"fps must be >= 1, got {self.fps}")
        for name in (
            "clips_per_photo",
            "val_clips_per_photo",
            "gif_clips",
            "face_clips",
            "segments_per_video",
            "val_segments_per_video",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return {**asdict(self), "val_videos": list(self.val_videos)}  # as JSON reads it back (build manifests)


def _to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.dtype != np.uint8:
        image = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])  # drops logo's alpha


@cache
def load_photo(name: str) -> np.ndarray:
    """A real photo as uint8 (H, W, 3). Raises ValueError for unknown names."""
    if name in SKLEARN_PHOTOS:
        from sklearn.datasets import load_sample_image

        image = load_sample_image(f"{name}.jpg")
    elif name in SKIMAGE_PHOTOS:
        import skimage.data

        image = getattr(skimage.data, name)()
        if isinstance(image, tuple):  # stereo_motorcycle -> (left, right, disparity)
            image = image[0]
    else:
        raise ValueError(f"unknown photo {name!r}; expected one of {PHOTOS}")
    image = _to_rgb_uint8(image)
    image.setflags(write=False)
    return image


def available_photos() -> tuple[str, ...]:
    """The photos that load here (a loader that fails, e.g. in an older scikit-image, is skipped)."""
    names = []
    for name in PHOTOS:
        try:
            load_photo(name)
        except Exception:  # any failing loader just means one source fewer
            continue
        names.append(name)
    return tuple(names)


def ken_burns_clip(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    size: int,
    num_frames: int,
    short_side: tuple[float, float],
    zoom: bool,
    pan: bool,
) -> tuple[np.ndarray, str]:
    """A camera move over ``image`` (uint8 (H, W, 3)): resize it so its short side is ``short_side`` x ``size``
    (a random factor in that range), then move a square window linearly from a start to an end pose (pan: the
    centre moves 0.5-2 px per frame; zoom: the side changes by up to a third) and resample each window to
    ``size x size``. Returns uint8 (T, size, size, 3) and a caption fragment such as "pan left and zoom in"."""
    h, w = image.shape[:2]
    short = rng.uniform(*short_side) * size
    scale = short / min(h, w)
    sh, sw = max(size, round(h * scale)), max(size, round(w * scale))
    photo = Image.fromarray(image).resize((sw, sh), Image.Resampling.LANCZOS, reducing_gap=3.0)
    limit = min(sh, sw)
    side0 = min(limit, size * rng.uniform(1.0, 1.5))
    side1 = side0
    if zoom:
        side1 = min(limit, side0 * rng.choice([rng.uniform(0.7, 0.85), rng.uniform(1.2, 1.4)]))
    move = np.zeros(2)
    if pan:
        angle = rng.uniform(0.0, 2.0 * np.pi)
        move = np.array([np.sin(angle), np.cos(angle)]) * rng.uniform(0.5, 2.0) * (num_frames - 1)  # (dy, dx)
    # The window must stay inside the photo at both ends (then also in between: everything is linear).
    dims = np.array([sh, sw], dtype=np.float64)
    for _ in range(8):
        lo = np.maximum(side0 / 2, side1 / 2 - move)
        hi = np.minimum(dims - side0 / 2, dims - side1 / 2 - move)
        if np.all(lo <= hi):
            break
        move = move / 2
    else:
        move = np.zeros(2)
        lo = np.full(2, max(side0, side1) / 2)
        hi = dims - lo
    start = rng.uniform(lo, hi)  # (row, col) of the first window's centre
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        a = t / max(1, num_frames - 1)
        cy, cx = start + a * move
        half = (side0 + a * (side1 - side0)) / 2
        box = (max(0.0, cx - half), max(0.0, cy - half), min(float(sw), cx + half), min(float(sh), cy + half))
        window = photo.resize((size, size), Image.Resampling.BICUBIC, box=box)
        frames[t] = np.asarray(window)
    return frames, _motion_words(move, side0, side1)


def _motion_words(move: np.ndarray, side0: float, side1: float) -> str:
    words = []
    if np.abs(move).max() >= 2.0:
        dy, dx = move
        words.append(
            ("pan right" if dx > 0 else "pan left") if abs(dx) >= abs(dy) else ("pan down" if dy > 0 else "pan up")
        )
    if abs(side1 - side0) > 0.05 * side0:
        words.append("zoom in" if side1 < side0 else "zoom out")
    return " and ".join(words) or "still view"


def photo_clips(name: str, count: int, config: PhotoDataConfig) -> Iterator[tuple[np.ndarray, str]]:
    """``count`` Ken Burns clips over photo ``name``: (frames, caption). Clip ``i`` alternates pan, zoom, both."""
    image = load_photo(name)
    for i in range(count):
        rng = np.random.default_rng(derive_seed(config.seed, _PHOTO_KEY, PHOTOS.index(name), i))
        pan, zoom = [(True, False), (False, True), (True, True)][i % 3]
        frames, words = ken_burns_clip(
            image, rng, size=config.size, num_frames=config.num_frames, short_side=(1.5, 4.0), zoom=zoom, pan=pan
        )
        yield frames, f"{words} over the photo '{name}'"


def gif_frames() -> np.ndarray:
    """The real animated GIF shipped with scikit-image: uint8 (24, 25, 14, 3)."""
    import skimage

    path = Path(skimage.__file__).parent / "data" / GIF_NAME
    with Image.open(path) as gif:
        frames = []
        for k in range(gif.n_frames):
            gif.seek(k)
            frames.append(np.asarray(gif.convert("RGB")))
    return np.stack(frames)


def gif_clips(count: int, config: PhotoDataConfig) -> Iterator[tuple[np.ndarray, str]]:
    """Windows of ``num_frames`` consecutive GIF frames (looping when the GIF is shorter), upscaled so the short
    side is 1-1.5x ``size``, cropped to a square at a random offset."""
    source = gif_frames()  # (24, h, w, 3)
    n, h, w = source.shape[:3]
    for i in range(count):
        rng = np.random.default_rng(derive_seed(config.seed, _GIF_KEY, i))
        scale = rng.uniform(1.0, 1.5) * config.size / min(h, w)
        sh, sw = max(config.size, round(h * scale)), max(config.size, round(w * scale))
        top, left = int(rng.integers(sh - config.size + 1)), int(rng.integers(sw - config.size + 1))
        first = int(rng.integers(n))
        frames = np.empty((config.num_frames, config.size, config.size, 3), dtype=np.uint8)
        for t in range(config.num_frames):
            big = Image.fromarray(source[(first + t) % n]).resize((sw, sh), Image.Resampling.BICUBIC)
            frames[t] = np.asarray(big)[top : top + config.size, left : left + config.size]
        yield frames, f"frames of the animated GIF '{GIF_NAME.removesuffix('.gif')}'"


def face_clips(count: int, config: PhotoDataConfig) -> Iterator[tuple[np.ndarray, str]]:
    """Slow pans/zooms over real 25x25 grayscale faces (``lfw_subset``, first 100 images), upscaled."""
    import skimage.data

    faces = skimage.data.lfw_subset()[:100]  # (100, 25, 25) float in [0, 1]
    for i in range(count):
        rng = np.random.default_rng(derive_seed(config.seed, _FACE_KEY, i))
        k = int(rng.integers(len(faces)))
        frames, words = ken_burns_clip(
            _to_rgb_uint8(faces[k]),
            rng,
            size=config.size,
            num_frames=config.num_frames,
            short_side=(1.1, 1.6),
            zoom=i % 2 == 1,
            pan=i % 2 == 0,
        )
        yield frames, f"{words} over face {k} of lfw_subset"


def read_video_small(path: str | os.PathLike, size: int) -> tuple[np.ndarray, float]:
    """Decode a whole clip, resized in the decoder so its short side is ``size``, centre-cropped to
    ``size x size``. Returns uint8 (T, size, size, 3) and the clip's frame rate."""
    info = probe_video(path)
    scaled = cover_size((info.height, info.width), (size, size))
    top, left = crop_offsets(scaled, (size, size))
    frames = read_video(path, size=scaled)  # (T, h', w', 3)
    return np.ascontiguousarray(frames[:, top : top + size, left : left + size]), info.fps or 25.0


def video_segments(path: str | os.PathLike, count: int, config: PhotoDataConfig) -> Iterator[tuple[np.ndarray, str]]:
    """``count`` segments of ``num_frames`` frames spread evenly across the clip, taking every ``stride``-th
    frame (stride = source fps / ``config.fps``, lowered when the clip is too short)."""
    if count == 0:
        return
    frames, fps = read_video_small(path, config.size)
    n, need = len(frames), config.num_frames
    if n < need:
        return
    stride = max(1, round(fps / config.fps))
    stride = min(stride, (n - 1) // (need - 1))
    span = (need - 1) * stride + 1
    starts = np.unique(np.round(np.linspace(0, n - span, count)).astype(int))
    name = Path(path).name
    for s in starts:
        yield frames[s : s + span : stride], f"a clip from the video '{name}'"


def debian_videos(directory: str | os.PathLike | None) -> list[Path]:
    """The known Debian clips present (non-empty) in ``directory``, in ``DEBIAN_VIDEOS`` order."""
    if directory is None:
        return []
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"Debian clip folder {directory} does not exist (run scripts/fetch_demo_clips.sh)")
    return [directory / n for n in DEBIAN_VIDEOS if (directory / n).is_file() and (directory / n).stat().st_size]


def tokenizer_clips(split: str, config: PhotoDataConfig, videos: list[Path]) -> Iterator[tuple[np.ndarray, dict]]:
    """All clips of ``split`` ("train" or "val"): (frames, record with text, source and kind)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    val = split == "val"
    for name in available_photos():
        if (name in VAL_PHOTOS) == val:
            count = config.val_clips_per_photo if val else config.clips_per_photo
            for frames, text in photo_clips(name, count, config):
                yield frames, {"text": text, "source": name, "kind": "photo"}
    if not val:
        for frames, text in gif_clips(config.gif_clips, config):
            yield frames, {"text": text, "source": GIF_NAME, "kind": "gif"}
        for frames, text in face_clips(config.face_clips, config):
            yield frames, {"text": text, "source": "lfw_subset", "kind": "face"}
    for path in videos:
        if (path.name in config.val_videos) == val:
            count = config.val_segments_per_video if val else config.segments_per_video
            for frames, text in video_segments(path, count, config):
                yield frames, {"text": text, "source": path.name, "kind": "video"}


def build_tokenizer_dataset(
    out_dir: str | os.PathLike, config: PhotoDataConfig = PhotoDataConfig(), debian_dir: str | os.PathLike | None = None
) -> dict:
    """Write ``out_dir/{train,val}/`` (lossless mp4 + metadata.jsonl). Returns the clip count per split."""
    videos = debian_videos(debian_dir)
    counts = {}
    for split in ("train", "val"):

        def items(split=split):
            for i, (frames, record) in enumerate(tokenizer_clips(split, config, videos)):
                stem = Path(record["source"]).stem.replace(" ", "_")
                yield f"{i:05d}_{stem}.mp4", frames, record

        counts[split] = write_clip_folder(Path(out_dir) / split, items(), fps=config.fps)
    return counts
