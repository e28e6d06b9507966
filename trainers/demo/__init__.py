"""The demo's data and its judges.

``build_demo_data(out)`` writes, under ``out``:

* ``digits/{train,val,heldout}/``: captioned moving-digit clips from real handwritten digits (``digits.py``), and
  ``digits/prompts.json`` (seen and held-out prompts); with ``DigitDataConfig(objects="shapes")`` the same
  folder holds drawn shapes instead (``shapes.py``), a second data set for checking experiments;
* ``tokenizer/{train,val}/``: camera moves over real photos, a real GIF, faces, and (when given) real Debian
  clips, with whole sources held out for validation (``photos.py``);
* ``manifest.json``: the settings, counts and timings. It is written last, so its presence means a complete build;
  a rebuild with the same settings is skipped.

Every folder is a dataset in the project's format: lossless H.264 mp4 files plus ``metadata.jsonl``
(``{"file_name", "text", ...}`` per line). ``judge.py`` scores generated clips for prompt following.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from .digits import (
    DIGIT_WORDS,
    DIRECTIONS,
    OBJECTS,
    DigitClip,
    DigitDataConfig,
    build_digit_dataset,
    caption,
    heldout_pairs,
    make_digit_clip,
    make_digit_clips,
    seen_pairs,
    split_digit_indices,
)
from .judge import DigitJudge, center_of_mass_track, judge_direction, score_prompt_following
from .photos import PhotoDataConfig, build_tokenizer_dataset, debian_videos
from .shapes import SHAPE_WORDS, load_shape_images

__all__ = [
    "DIGIT_WORDS",
    "DIRECTIONS",
    "MANIFEST_VERSION",
    "OBJECTS",
    "SHAPE_WORDS",
    "DigitClip",
    "DigitDataConfig",
    "DigitJudge",
    "PhotoDataConfig",
    "build_demo_data",
    "build_digit_dataset",
    "build_tokenizer_dataset",
    "caption",
    "center_of_mass_track",
    "heldout_pairs",
    "judge_direction",
    "load_shape_images",
    "make_digit_clip",
    "make_digit_clips",
    "score_prompt_following",
    "seen_pairs",
    "split_digit_indices",
]

MANIFEST_VERSION = 1


def _settings(digits: DigitDataConfig, photos: PhotoDataConfig, debian_dir) -> dict:
    videos = debian_videos(debian_dir)
    return {
        "version": MANIFEST_VERSION,
        "digits": digits.to_dict(),
        "tokenizer": photos.to_dict(),
        "debian_clips": {p.name: p.stat().st_size for p in videos},  # bytes: a changed clip means a rebuild
    }


def build_demo_data(
    out: str | os.PathLike,
    digits: DigitDataConfig | None = None,
    photos: PhotoDataConfig | None = None,
    debian_dir: str | os.PathLike | None = None,
    force: bool = False,
) -> dict:
    """Build (or find already built) the demo datasets under ``out``; returns the manifest plus ``"skipped"``.

    ``digits``/``photos`` default to ``DigitDataConfig()``/``PhotoDataConfig()``. ``out/digits`` and
    ``out/tokenizer`` are replaced on a rebuild; nothing else under ``out`` is touched.
    """
    digits = digits if digits is not None else DigitDataConfig()
    photos = photos if photos is not None else PhotoDataConfig()
    out = Path(out)
    settings = _settings(digits, photos, debian_dir)
    manifest_path = out / "manifest.json"
    if not force and manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = {}
        if manifest.get("settings") == settings:
            return {**manifest, "skipped": True}
    out.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)
    counts, seconds = {}, {}
    builders = {
        "digits": lambda folder: build_digit_dataset(folder, digits, fps=photos.fps),
        "tokenizer": lambda folder: build_tokenizer_dataset(folder, photos, debian_dir),
    }
    for name, build in builders.items():
        folder = out / name
        if folder.exists():
            shutil.rmtree(folder)
        start = time.perf_counter()
        counts[name] = build(folder)
        seconds[name] = round(time.perf_counter() - start, 2)
    manifest = {"settings": settings, "counts": counts, "seconds": seconds}
    tmp = manifest_path.with_name("manifest.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, manifest_path)
    return {**manifest, "skipped": False}
