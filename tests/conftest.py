"""Shared fixtures. Media are real photos shipped with scikit-image, written on the fly into tmp_path. Plain helpers
that several test files share live in tests/helpers/ (imported lazily here, after the environment below is set)."""

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


@pytest.fixture
def pan() -> Callable[..., np.ndarray]:
    """The ``pan_frames`` function: ``pan(num_frames, (h, w), photo)`` -> uint8 (T, h, w, 3) of a real photo."""
    from tests.helpers.media import pan_frames

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

    from tests.helpers.media import pan_frames
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


@pytest.fixture
def fresh_accelerate_state():
    """A fresh accelerate state around a test that needs other settings (mixed precision, launcher variables)."""
    from tests.helpers.training import reset_accelerate_state

    reset_accelerate_state()
    yield
    reset_accelerate_state()


@pytest.fixture
def photo_clips(make_clip, tmp_path) -> Path:
    """tmp_path/clips: 4 lossless 5-frame 16x16 mp4s of photo pans (astronaut, coffee, chelsea, rocket)."""
    for photo in ("astronaut", "coffee", "chelsea", "rocket"):
        make_clip(f"clips/{photo}.mp4", num_frames=5, size=(16, 16), photo=photo)
    return tmp_path / "clips"


@pytest.fixture
def captioned_media(tmp_path, make_clip) -> Path:
    """tmp_path/media: 8 captioned videos of 7 frames (one too short: 3 frames), 2 images, 1 corrupt file; the
    videos are helpers.media.MEDIA_PHOTOS, every third one in sub/."""
    import json

    from tests.helpers.media import MEDIA_PHOTOS

    root = tmp_path / "media"
    for i, photo in enumerate(MEDIA_PHOTOS):
        make_clip(f"media/{'sub/' if i % 3 == 0 else ''}{photo}.mp4", num_frames=7, size=(20, 24), photo=photo)
    make_clip("media/short.mp4", num_frames=3, size=(20, 24))
    make_clip("media/img/a.png", 1, (20, 30), "astronaut")
    make_clip("media/img/b.jpg", 1, (30, 20), "coffee")
    (root / "broken.mp4").write_bytes(b"not a video at all")
    lines = [json.dumps({"file_name": f"{'sub/' if i % 3 == 0 else ''}{p}.mp4", "text": f"a {p}"})
             for i, p in enumerate(MEDIA_PHOTOS)]
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty huggingface_hub cache (HF_HUB_CACHE) in tmp_path, offline; fill it with helpers.hub.put_in_cache."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub-cache"


@pytest.fixture
def hub_uploads(monkeypatch) -> dict:
    """huggingface_hub's HfApi.create_repo / upload_folder, recorded instead of sent (the folder is read while it
    exists, inside the call): {"create_repo": (repo_id, kwargs), "upload": {repo_id, files, readme, ...}}."""
    from types import SimpleNamespace

    from huggingface_hub import HfApi

    from magvit2 import VideoTokenizer

    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)
        return SimpleNamespace(repo_id=repo_id)  # huggingface_hub's RepoUrl carries the id

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        calls["upload"] = {"repo_id": repo_id, **kwargs,
                           "files": sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()),
                           "readme": (folder / "README.md").read_text(), "folder": folder}
        if (folder / "config.json").is_file():
            calls["upload"]["reloaded"] = VideoTokenizer.training_info(folder) if "tokenizer" in repo_id else None
        return "commit-info"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


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
