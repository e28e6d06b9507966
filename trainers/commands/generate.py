"""The `magvit2-generate` command's work: locate a pipeline, read prompts and a prime clip, write videos + a log.

Kept out of `maskgit.pipeline` because it does file and media I/O (`trainers.data.video_io`); `scripts/generate.py` only
parses arguments and calls `generate_to_files`; the browser app (`trainers.app`) calls `iter_generate`, so
both write the same files and the same `samples.jsonl` lines.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from magvit2.pixels import from_uint8, to_uint8
from maskgit.pipeline import StepCallback, TextToVideoPipeline
from maskgit.pipeline_settings import PipelineDefaults
from trainers.data.captions import slugify
from trainers.data.video_io import IMAGE_EXTENSIONS, VideoReadError, probe_video, read_clip
from trainers.data.video_write import write_gif, write_video
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


@dataclass
class GeneratedSample:
    """One video written by `iter_generate`: its file, its uint8 frames (t, h, w, 3) as written, its log line."""

    index: int  # the prompt's position in the batch (its seed is derive_seed(base_seed, index))
    path: Path
    frames: np.ndarray
    record: dict[str, Any]


def sample_record(path: Path, prompt: str, settings: PipelineDefaults, seed: int, index: int, fmt: str,
                  negative_prompt: str | None = None, prime_video: torch.Tensor | None = None,
                  record: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `samples.jsonl` line of prompt `index` of a batch generated with base seed `seed`."""
    return {
        "file": path.name, "prompt": prompt, "negative_prompt": negative_prompt, "seed": derive_seed(seed, index),
        "base_seed": seed, "prompt_index": index, "num_frames": settings.num_frames,
        "steps": settings.num_inference_steps, "guidance_scale": settings.guidance_scale,
        "temperature": settings.temperature, "choice_temperature": settings.choice_temperature,
        "top_k": settings.top_k, "top_p": settings.top_p, "mask_schedule": settings.mask_schedule, "format": fmt,
        "fps": settings.fps, "prime_frames": None if prime_video is None else int(prime_video.shape[2]),
        **(record or {}),
    }


def iter_generate(
    pipeline: TextToVideoPipeline,
    prompts: Sequence[str],
    settings: PipelineDefaults,
    out_dir: str | os.PathLike,
    seed: int = 0,
    fmt: str = "mp4",
    negative_prompt: str | None = None,
    prime_video: torch.Tensor | None = None,
    record: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    callback_on_step_end: Callable[..., dict] | None = None,
    callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
) -> Iterator[GeneratedSample]:
    """`generate_to_files` one video at a time: each is written (and its line appended to `samples.jsonl`) before
    it is yielded. The callbacks are the pipeline's (`TextToVideoPipeline.__call__`), passed on for every prompt;
    they draw no randomness, so the videos do not depend on them."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {fmt!r}")
    if settings.num_frames is None:
        raise ValueError("settings.num_frames must be resolved; use pipeline.settings(...)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = next_index(out_dir)
    for i, prompt in enumerate(prompts):
        video = pipeline(
            prompt, negative_prompt=negative_prompt, num_frames=settings.num_frames,
            num_inference_steps=settings.num_inference_steps, guidance_scale=settings.guidance_scale,
            temperature=settings.temperature, choice_temperature=settings.choice_temperature,
            top_k=settings.top_k, top_p=settings.top_p, mask_schedule=settings.mask_schedule,
            generator=torch.Generator().manual_seed(derive_seed(seed, i)), output_type="pt",
            prime_video=prime_video, callback=callback, callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        ).frames[0]  # (3, t, h, w) in [-1, 1]
        frames = to_uint8(video)  # (t, h, w, 3) uint8
        path = out_dir / f"{start + i:03d}-{slugify(prompt)}.{fmt}"
        if fmt == "gif":
            write_gif(path, frames, fps=settings.fps)
        else:
            write_video(path, frames, fps=settings.fps)
        line = sample_record(path, prompt, settings, seed, i, fmt, negative_prompt, prime_video, record)
        with open(out_dir / SAMPLES_LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps(line) + "\n")
        yield GeneratedSample(i, path, frames, line)


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
    steps = settings.num_inference_steps
    written: list[Path] = []
    show = sys.stderr.isatty() if progress is None else progress
    with progress_bar(total=steps * len(prompts), disable=not show, desc="decoding", unit="step") as bar:

        def on_step(step: int, total: int, codes: torch.Tensor) -> None:
            bar.update(len(written) * steps + step + 1 - bar.n)

        for sample in iter_generate(pipeline, prompts, settings, out_dir, seed=seed, fmt=fmt,
                                    negative_prompt=negative_prompt, prime_video=prime_video, record=record,
                                    callback=on_step):
            written.append(sample.path)
            bar.update(len(written) * steps - bar.n)  # decoding may finish early (fewer unknown tokens than steps)
    return written
