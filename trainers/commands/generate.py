"""The `magvit2-generate` command's work: locate a pipeline, read prompts and a prime clip, write videos + a log.

Kept out of `maskgit.pipeline` because it does file and media I/O (`trainers.data.video_io`); `scripts/generate.py` only
parses arguments and calls `generate_to_files`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from magvit2.pixels import from_uint8, to_uint8
from magvit2.video_write import write_gif, write_video
from maskgit.pipeline import TextToVideoPipeline
from maskgit.pipeline_settings import PipelineDefaults
from trainers.data.captions import slugify
from trainers.data.video_io import IMAGE_EXTENSIONS, VideoReadError, probe_video, read_clip
from trainers.logging import progress_bar
from trainers.rng import derive_seed

FORMATS = ("mp4", "gif")
SAMPLES_LOG = "samples.jsonl"


def resolve_device(name: str | None) -> torch.device:
    """'cpu', 'cuda', 'cuda:1', ...; None = CUDA when available, else the CPU."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device {name!r} is not a torch device (try cpu or cuda)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def load_prime_video(path: str | os.PathLike, pipeline: TextToVideoPipeline, num_frames: int) -> torch.Tensor:
    """The first 1 + j*f frames of a video (or an image as 1 frame) at the tokenizer's size: (1, 3, t0, h, w).

    Short side resized, then center-cropped. t0 is the largest 1 + j*f that the file has and that leaves at least
    one latent frame to generate (for num_frames > 1); an image or a 1-frame clip primes just the first frame.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--prime-video {path}: no such file")
    f = pipeline.tokenizer.time_compression
    size = tuple(pipeline.tokenizer.config.image_size)  # (h, w)
    try:
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            frames = read_clip(path, size)
        else:
            available = probe_video(path).num_frames
            limit = min(available, max(num_frames - f, 1))
            frames = read_clip(path, size, num_frames=1 + f * ((limit - 1) // f))
    except VideoReadError as e:
        raise ValueError(f"--prime-video: {e}") from e
    return from_uint8(frames)[None]  # (1, 3, t0, h, w)


def next_index(out_dir: Path) -> int:
    """One past the largest NNN of existing `NNN-*` files, so repeated runs never overwrite earlier videos."""
    numbers = [int(m.group(1)) for p in out_dir.glob("*-*") if (m := re.match(r"(\d+)-", p.name))]
    return max(numbers, default=-1) + 1


def generate_to_files(
    pipeline: TextToVideoPipeline,
    prompts: Sequence[str],
    settings: PipelineDefaults,
    out_dir: str | os.PathLike,
    seed: int = 0,
    fmt: str = "mp4",
    negative_prompt: str | None = None,
    prime_video: torch.Tensor | None = None,
    record: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> list[Path]:
    """One video per prompt -> `out_dir/NNN-<slug>.<fmt>`, plus one line per video appended to `samples.jsonl`.

    Prompt i is sampled with its own generator seeded `derive_seed(seed, i)`, so it reproduces alone (same seed,
    same position). `settings` must be resolved (`pipeline.settings(...)`); `record` adds fields to each log line.
    progress: a tqdm bar over decoding steps (default: when stderr is a terminal).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {fmt!r}")
    if settings.num_frames is None:
        raise ValueError("settings.num_frames must be resolved; use pipeline.settings(...)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = next_index(out_dir)
    steps = settings.num_inference_steps
    written = []
    show = sys.stderr.isatty() if progress is None else progress
    with progress_bar(total=steps * len(prompts), disable=not show, desc="decoding", unit="step") as bar:
        for i, prompt in enumerate(prompts):
            video_seed = derive_seed(seed, i)
            done = bar.n

            def on_step(step: int, total: int, codes: torch.Tensor, _done: int = done) -> None:
                bar.update(_done + step + 1 - bar.n)

            video = pipeline(
                prompt, negative_prompt=negative_prompt, num_frames=settings.num_frames,
                num_inference_steps=steps, guidance_scale=settings.guidance_scale,
                temperature=settings.temperature, choice_temperature=settings.choice_temperature,
                top_k=settings.top_k, top_p=settings.top_p, mask_schedule=settings.mask_schedule,
                generator=torch.Generator().manual_seed(video_seed), output_type="pt",
                prime_video=prime_video, callback=on_step,
            ).frames[0]  # (3, t, h, w) in [-1, 1]
            frames = to_uint8(video)  # (t, h, w, 3) uint8
            bar.update(done + steps - bar.n)  # decoding may finish early (fewer unknown tokens than steps)
            path = out_dir / f"{start + i:03d}-{slugify(prompt)}.{fmt}"
            if fmt == "gif":
                write_gif(path, frames, fps=settings.fps)
            else:
                write_video(path, frames, fps=settings.fps)
            line = {
                "file": path.name, "prompt": prompt, "negative_prompt": negative_prompt, "seed": video_seed,
                "base_seed": seed, "prompt_index": i, "num_frames": settings.num_frames, "steps": steps,
                "guidance_scale": settings.guidance_scale, "temperature": settings.temperature,
                "choice_temperature": settings.choice_temperature, "top_k": settings.top_k, "top_p": settings.top_p,
                "mask_schedule": settings.mask_schedule, "format": fmt, "fps": settings.fps,
                "prime_frames": None if prime_video is None else int(prime_video.shape[2]),
                **(record or {}),
            }
            with open(out_dir / SAMPLES_LOG, "a", encoding="utf-8") as log:
                log.write(json.dumps(line) + "\n")
            written.append(path)
    return written
