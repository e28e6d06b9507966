"""Shared fixtures. Media are real photos shipped with scikit-image, written on the fly into tmp_path."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

# offline and untracked, also when pytest is run without `make test` (which exports the same); set before any test
# imports huggingface_hub, which reads them once
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


def pan_frames(num_frames: int = 20, size: tuple[int, int] = (48, 64), photo: str = "astronaut", step: int = 3
               ) -> np.ndarray:
    """A camera pan over a real scikit-image photo: uint8 (num_frames, h, w, 3), every frame different."""
    from PIL import Image
    from skimage import data

    h, w = size
    image = getattr(data, photo)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    canvas = (max(h, w) + step * num_frames) * 2
    image = np.asarray(Image.fromarray(np.ascontiguousarray(image[..., :3])).resize((canvas, canvas)))
    return np.stack([image[h // 2 + i * step: h // 2 + i * step + h, i * step: i * step + w]
                     for i in range(num_frames)])


@pytest.fixture
def pan() -> Callable[..., np.ndarray]:
    """The ``pan_frames`` function: ``pan(num_frames, (h, w), photo)`` -> uint8 (T, h, w, 3) of a real photo."""
    return pan_frames


@pytest.fixture
def skimage_gif() -> Path:
    """scikit-image's ``no_time_for_that_tiny.gif``: 24 real frames of 25x14 (h x w)."""
    from skimage import data

    return Path(data.__file__).parent / "no_time_for_that_tiny.gif"


@pytest.fixture
def make_clip(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_clip("sub/a.mp4", num_frames=9, size=(48, 64), photo="astronaut")`` -> written path.

    Videos use ``trainers.data.video_io.write_video`` (lossless H.264 for mp4/mkv/mov, Pillow for GIF); an image
    extension (.png/.jpg/.webp) writes the first frame with Pillow. Paths are relative to ``tmp_path``.
    """
    from PIL import Image

    from trainers.data.video_io import IMAGE_EXTENSIONS, write_video

    def make(name: str, num_frames: int = 9, size: tuple[int, int] = (48, 64), photo: str = "astronaut",
             fps: float = 8, lossless: bool = True) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        frames = pan_frames(num_frames, size, photo)
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            Image.fromarray(frames[0]).save(path)
        else:
            write_video(path, frames, fps=fps, lossless=lossless)
        return path

    return make


@pytest.fixture
def one_thread():
    """Tiny ops gain nothing from threads, and on a busy 2-core runner thread contention costs ~10x or more."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reset_accelerate_state() -> None:
    """accelerate keeps one process-wide state (mixed precision, the launcher's settings): forget it."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def fresh_accelerate_state():
    """A fresh accelerate state around a test that needs other settings (mixed precision, launcher variables)."""
    reset_accelerate_state()
    yield
    reset_accelerate_state()


MEASURED = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def report_measurement(pytestconfig) -> Callable[[str], None]:
    """Adds a line to the run's "measured" summary, shown whatever pytest captures: the speeds an issue asks to see
    in the test log (measured and printed, not asserted)."""
    return pytestconfig.stash.setdefault(MEASURED, []).append


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    lines = config.stash.get(MEASURED, [])
    if lines:
        terminalreporter.section("measured")
        for line in lines:
            terminalreporter.write_line(line)
