"""The `magvit2-generate` command's work: locate a pipeline, read prompts and a prime clip, write videos + a log.

Kept out of `maskgit.pipeline` because it does file and media I/O (`trainers.data.video_io`); `scripts/generate.py` only
parses arguments and calls `generate_to_files`; the browser app (`trainers.app`) calls `iter_generate`, so both
write the same files and the same `samples.jsonl` lines.
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
from magvit2.video_write import write_gif, write_video
from maskgit.pipeline import StepCallback, TextToVideoPipeline
from maskgit.pipeline_settings import PipelineDefaults
from trainers.data.captions import slugify
from trainers.data.video_io import IMAGE_EXTENSIONS, VideoReadError, probe_video, read_clip
from trainers.logging import get_logger, progress_bar

FORMATS = ("mp4", "gif")
SAMPLES_LOG = "samples.jsonl"
MAX_SEED = 2**63 - 1  # torch.Generator().manual_seed takes any int in [0, 2**64); video j uses seed + j


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


def video_generator(seed: int) -> torch.Generator:
    """The generator of a video whose samples.jsonl line says `"seed": seed`: exactly what Python gives with
    `pipe(prompt, generator=torch.Generator().manual_seed(seed), ...)` (video j of a run uses seed = --seed + j)."""
    return torch.Generator().manual_seed(seed)


def load_prime_video(path: str | os.PathLike, pipeline: TextToVideoPipeline, num_frames: int,
                     prime_frames: int | None = None) -> torch.Tensor:
    """Frames of a video (or an image as 1 frame) at the tokenizer's size to prime generation: (1, 3, t0, h, w).

    Short side resized, then center-cropped. `prime_frames` (--prime-frames) says how many to keep: 1 + j*f, at
    most what the file has and at most num_frames. By default t0 is the largest 1 + j*f that the file has and that
    leaves at least one latent frame to generate within the first window; an image or a 1-frame clip primes just
    the first frame. The kept count is logged.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--prime-video {path}: no such file")
    f = pipeline.tokenizer.time_compression
    size = tuple(pipeline.tokenizer.config.image_size)  # (h, w)
    is_image = path.suffix.lower() in IMAGE_EXTENSIONS
    try:
        available = 1 if is_image else probe_video(path).num_frames
    except VideoReadError as e:
        raise ValueError(f"--prime-video: {e}") from e
    if prime_frames is not None:
        if (prime_frames - 1) % f:
            k = (prime_frames - 1) // f
            raise ValueError(f"--prime-frames {prime_frames} is not 1 + {f}j; try {1 + f * k} or {1 + f * (k + 1)}")
        if prime_frames > available:
            raise ValueError(f"--prime-frames {prime_frames}: --prime-video {path} has {available} frame(s)")
        if prime_frames > num_frames:
            raise ValueError(f"--prime-frames {prime_frames} is more than the {num_frames} frames to generate")
        keep = prime_frames
    else:
        window = min(num_frames, pipeline.max_num_frames)
        limit = min(available, max(window - f, 1))
        keep = 1 + f * ((limit - 1) // f)
    try:
        frames = read_clip(path, size) if is_image else read_clip(path, size, num_frames=keep)
    except VideoReadError as e:
        raise ValueError(f"--prime-video: {e}") from e
    get_logger("magvit2.generate").info("--prime-video %s: keeping %d of its %d frame(s)%s", path, keep, available,
                                        "" if prime_frames is not None else " (choose with --prime-frames)")
    return from_uint8(frames)[None]  # (1, 3, t0, h, w)


def next_index(out_dir: Path) -> int:
    """One past the largest NNN of existing `NNN-*` files, so repeated runs never overwrite earlier videos."""
    numbers = [int(m.group(1)) for p in out_dir.glob("*-*") if (m := re.match(r"(\d+)-", p.name))]
    return max(numbers, default=-1) + 1


@dataclass
class GeneratedSample:
    """One video written by `iter_generate`: its file, its uint8 frames (t, h, w, 3) as written, its log line."""

    index: int  # the video's position in the run, prompt-major (its seed is base seed + index)
    path: Path
    frames: np.ndarray
    record: dict[str, Any]


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
    batch_size: int = 1,
    num_videos_per_prompt: int = 1,
    window_overlap: int | None = None,
    callback: StepCallback | None = None,
    callback_on_step_end: Callable[..., dict] | None = None,
    callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
) -> Iterator[GeneratedSample]:
    """`num_videos_per_prompt` videos per prompt -> `out_dir/NNN-<slug>.<fmt>`, each written (and its line appended
    to `samples.jsonl`) before it is yielded; `batch_size` videos per pipeline call (one forward per decoding step
    for the whole batch).

    Video j (prompt-major) is sampled with its own generator `torch.Generator().manual_seed(seed + j)`, so it is
    what Python's `pipe(prompt, generator=torch.Generator().manual_seed(seed + j))` gives, whatever the batch
    size. `settings` must be resolved (`pipeline.settings(...)`); `record` adds fields to each log line. The
    callbacks are the pipeline's (`TextToVideoPipeline.__call__`), passed on for every call; they draw no
    randomness, so the videos do not depend on them.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {fmt!r}")
    if settings.num_frames is None:
        raise ValueError("settings.num_frames must be resolved; use pipeline.settings(...)")
    for name, value in (("batch_size", batch_size), ("num_videos_per_prompt", num_videos_per_prompt)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an int in [0, 2**63 - 1]; got {seed!r}")
    windows = pipeline.plan(settings.num_frames, window_overlap)
    if len(windows) > 1:
        get_logger("magvit2.generate").info(
            "--num-frames %d is more than the %d frames the model generates at once: chaining %d windows, each "
            "primed on the last %d latent frames of the previous one", settings.num_frames, pipeline.max_num_frames,
            len(windows), windows[1].primed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = next_index(out_dir)
    jobs = [(i, prompt, k) for i, prompt in enumerate(prompts) for k in range(num_videos_per_prompt)]
    for first in range(0, len(jobs), batch_size):
        chunk = jobs[first : first + batch_size]
        videos = pipeline(
            [prompt for _, prompt, _ in chunk], negative_prompt=negative_prompt,
            num_frames=settings.num_frames, num_inference_steps=settings.num_inference_steps,
            guidance_scale=settings.guidance_scale, temperature=settings.temperature,
            choice_temperature=settings.choice_temperature, top_k=settings.top_k, top_p=settings.top_p,
            mask_schedule=settings.mask_schedule, unmask_order=settings.unmask_order,
            refine_steps=settings.refine_steps, refine_ratio=settings.refine_ratio, refine_unit=settings.refine_unit,
            refine_temperature=settings.refine_temperature, refine_guidance_scale=settings.refine_guidance_scale,
            best_of=settings.best_of, output_type="pt",
            prime_video=prime_video,
            generator=[video_generator(seed + first + j) for j in range(len(chunk))],
            window_overlap=window_overlap, callback=callback, callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=list(callback_on_step_end_tensor_inputs),
        ).frames  # (b, 3, t, h, w) in [-1, 1]
        for j, ((i, prompt, k), video) in enumerate(zip(chunk, videos)):
            frames = to_uint8(video)  # (t, h, w, 3) uint8
            path = out_dir / f"{start + first + j:03d}-{slugify(prompt)}.{fmt}"
            if fmt == "gif":
                write_gif(path, frames, fps=settings.fps)
            else:
                write_video(path, frames, fps=settings.fps)
            line = {
                "file": path.name, "prompt": prompt, "negative_prompt": negative_prompt,
                "seed": seed + first + j, "base_seed": seed, "prompt_index": i, "video_index": k,
                "num_frames": settings.num_frames, "steps": settings.num_inference_steps,
                "windows": len(windows), "guidance_scale": settings.guidance_scale,
                "temperature": settings.temperature, "choice_temperature": settings.choice_temperature,
                "top_k": settings.top_k, "top_p": settings.top_p, "mask_schedule": settings.mask_schedule,
                "unmask_order": settings.unmask_order, "refine_steps": settings.refine_steps,
                "refine_ratio": settings.refine_ratio, "refine_unit": settings.refine_unit,
                "refine_temperature": settings.refine_temperature,
                "refine_guidance_scale": settings.refine_guidance_scale, "best_of": settings.best_of,
                "format": fmt, "fps": settings.fps,
                "prime_frames": None if prime_video is None else int(prime_video.shape[2]),
                **(record or {}),
            }
            with open(out_dir / SAMPLES_LOG, "a", encoding="utf-8") as log:
                log.write(json.dumps(line) + "\n")
            yield GeneratedSample(first + j, path, frames, line)


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
    batch_size: int = 1,
    num_videos_per_prompt: int = 1,
    window_overlap: int | None = None,
) -> list[Path]:
    """`iter_generate` to the end behind one progress bar over the decoding steps of every pipeline call (shown by
    default when stderr is a terminal); returns the written files in order."""
    windows = 1 if settings.num_frames is None else len(pipeline.plan(settings.num_frames, window_overlap))
    steps = settings.num_inference_steps * windows  # per pipeline call
    videos = len(prompts) * num_videos_per_prompt if isinstance(num_videos_per_prompt, int) else 0
    calls = -(-videos // batch_size) if isinstance(batch_size, int) and batch_size > 0 else 0
    written: list[Path] = []
    show = sys.stderr.isatty() if progress is None else progress
    pipeline.set_progress_bar_config(disable=True)  # this command's own bar counts every call's steps
    with progress_bar(total=steps * calls, disable=not show, desc="decoding", unit="step") as bar:
        done = {"calls": 0}

        def on_step(step: int, total: int, codes: torch.Tensor) -> None:
            bar.update(done["calls"] * steps + step + 1 - bar.n)

        for sample in iter_generate(pipeline, prompts, settings, out_dir, seed=seed, fmt=fmt,
                                    negative_prompt=negative_prompt, prime_video=prime_video, record=record,
                                    batch_size=batch_size, num_videos_per_prompt=num_videos_per_prompt,
                                    window_overlap=window_overlap, callback=on_step):
            written.append(sample.path)
            done["calls"] = -(-len(written) // batch_size)
            bar.update(done["calls"] * steps - bar.n)  # decoding may finish early (fewer unknown tokens than steps)
    return written
