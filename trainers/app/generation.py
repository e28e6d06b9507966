"""The Generate tab's work, without gradio: check a request, generate with the code behind `magvit2-generate`, and
add what the page shows besides the mp4 (a GIF, the unmasking view, the command that reproduces the video).

Seeds follow the CLI exactly: a batch of prompts has one base seed and prompt i is sampled with
`torch.Generator().manual_seed(base_seed + i)` (`trainers.commands.generate.iter_generate`), so `reproduce_command`
(the same prompts in the same order, the same base seed and settings) gives the same videos, frame for frame.
"""

from __future__ import annotations

import math
import secrets
import shlex
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from magvit2.pixels import to_uint8
from maskgit.pipeline import TextToVideoPipeline
from maskgit.pipeline_settings import PipelineDefaults
from trainers.commands.generate import GeneratedSample, iter_generate
from trainers.data.captions import read_prompt_file
from trainers.data.video_write import write_gif, write_video

from .models import LoadedModels
from .unmasking import StepRecorder, render_unmasking, write_unmasking

MAX_BATCH = 64  # prompts per batch request
SEED_LIMIT = 2**31  # random base seeds are drawn from [0, SEED_LIMIT), short enough to read and retype


@dataclass(frozen=True)
class GenerateRequest:
    """What the Generate tab asks for. seed None: draw a random base seed. guidance_end: None = a constant scale,
    else a linear ramp from guidance_scale at the first step to guidance_end at the last. top_k None = all codes.
    refine_steps: refinement rounds after the last unmasking step (None: the pipeline's default). The page decodes
    each video once (best_of=1, whatever the pipeline's default): its unmasking view shows that decode's steps."""

    prompts: tuple[str, ...]
    negative_prompt: str | None = None
    seed: int | None = 0
    num_frames: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    guidance_end: float | None = None
    temperature: float | None = None
    choice_temperature: float | None = None
    top_k: int | None = None
    refine_steps: int | None = None


@dataclass
class AppSample:
    """One generated video and everything the page shows for it."""

    sample: GeneratedSample  # .path: the mp4; .frames: uint8 (t, h, w, 3) as written; .record: its samples.jsonl line
    command: str  # the magvit2-generate command that writes the same video
    gif: Path | None = None
    strip: Path | None = None  # the unmasking strip (png): one row per step
    unmasking: Path | None = None  # the unmasking video (mp4): one frame per step


def batch_prompts(text: str | None, prompt_file: str | Path | None) -> list[str]:
    """The prompts of a batch: the non-blank lines of `text`, then those of an uploaded prompt file."""
    prompts = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if prompt_file is not None:
        prompts += read_prompt_file(prompt_file, "the prompt file")
    if not prompts:
        raise ValueError("the batch is empty: type one prompt per line, or upload a text file with one per line")
    return prompts


def check_prompts(pipeline: TextToVideoPipeline, prompts: Sequence[str]) -> list[str]:
    """Stripped prompts; ValueError for an empty one, a batch over MAX_BATCH, or a prompt longer than the text
    encoder reads (it would be cut silently)."""
    prompts = [p.strip() for p in prompts]
    if not prompts or not all(prompts):
        raise ValueError("the prompt is empty: describe the video you want, e.g. 'a red digit 3 moving left'")
    if len(prompts) > MAX_BATCH:
        raise ValueError(f"a batch holds at most {MAX_BATCH} prompts; got {len(prompts)}")
    encoder = pipeline.text_encoder
    try:
        counts = encoder.count_tokens(prompts)
    except NotImplementedError:  # an encoder that cannot count: it truncates as it always does
        return prompts
    for i, (prompt, n) in enumerate(zip(prompts, counts)):
        if n > encoder.max_length:
            which = f"prompt {i + 1} ({prompt[:40]!r}...)" if len(prompts) > 1 else "the prompt"
            raise ValueError(f"{which} is {n} tokens long but the text encoder ({encoder.spec}) reads at most "
                             f"{encoder.max_length}; shorten it")
    return prompts


def resolve_settings(pipeline: TextToVideoPipeline, request: GenerateRequest) -> PipelineDefaults:
    """The request's settings over the pipeline's defaults, checked (frames 1 + k*f that fit, numbers in range)."""
    guidance: float | tuple[float, float] | None = request.guidance_scale
    if request.guidance_end is not None:
        if guidance is None:
            raise ValueError("a guidance ramp needs a start scale as well as the end scale")
        guidance = (float(guidance), float(request.guidance_end))
    for name in ("guidance_scale", "guidance_end", "temperature", "choice_temperature"):
        value = getattr(request, name)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name.replace('_', ' ')} must be a finite number; got {value}")
    settings = pipeline.settings(num_frames=request.num_frames, num_inference_steps=request.steps,
                                 guidance_scale=guidance, temperature=request.temperature,
                                 choice_temperature=request.choice_temperature, top_k=request.top_k,
                                 refine_steps=request.refine_steps, best_of=1)  # the page shows one decode's steps
    if settings.num_frames > pipeline.max_num_frames:  # the page shows one window's unmasking: no chained windows
        f = pipeline.tokenizer.time_compression
        raise ValueError(f"num_frames={settings.num_frames} needs {(settings.num_frames - 1) // f + 1} latent frames "
                         f"but the transformer holds at most {(pipeline.max_num_frames - 1) // f + 1} "
                         f"({pipeline.max_num_frames} frames); longer videos: magvit2-generate --num-frames")
    return settings


def reproduce_command(model_dir: Path, prompts: Sequence[str], settings: PipelineDefaults, seed: int,
                      negative_prompt: str | None = None) -> str:
    """The `magvit2-generate` command line that writes these videos (the same prompts, in order, and base seed)."""
    args = ["magvit2-generate", "--model", str(model_dir)]
    for prompt in prompts:
        args += ["--prompt", prompt]
    if negative_prompt:
        args += ["--negative-prompt", negative_prompt]
    g = settings.guidance_scale
    args += ["--seed", str(seed), "--num-frames", str(settings.num_frames), "--steps",
             str(settings.num_inference_steps), "--guidance-scale",
             *([str(g[0]), str(g[1])] if isinstance(g, tuple) else [str(g)]),
             "--temperature", str(settings.temperature), "--choice-temperature", str(settings.choice_temperature)]
    if settings.top_k is not None:
        args += ["--top-k", str(settings.top_k)]
    args += ["--refine-steps", str(settings.refine_steps), "--refine-ratio", str(settings.refine_ratio),
             "--refine-unit", settings.refine_unit, "--best-of", str(settings.best_of)]
    if settings.refine_temperature is not None:
        args += ["--refine-temperature", str(settings.refine_temperature)]
    if settings.refine_guidance_scale is not None:
        args += ["--refine-guidance-scale", str(settings.refine_guidance_scale)]
    args += ["--fps", str(settings.fps)]
    return shlex.join(args)


def generate(models: LoadedModels, request: GenerateRequest, out_dir: Path,
             on_step: Callable[[int, int, int], None] | None = None) -> Iterator[tuple[str, AppSample]]:
    """Generate the request's videos into `out_dir` (mp4 + `samples.jsonl`, exactly as `magvit2-generate`).

    Yields ("video", sample) as soon as a video's mp4 is written, then ("extras", sample) once its GIF and
    unmasking view are written too. on_step(prompt_index, step, num_steps) after each unmasking step.
    The request's seed (or the random one drawn) is `sample.sample.record["base_seed"]`.
    """
    pipeline = models.pipeline
    if pipeline is None:
        raise ValueError("no text-to-video pipeline is loaded (only a tokenizer): start the app with --model "
                         "PIPELINE_OR_RUN_DIR to generate")
    prompts = check_prompts(pipeline, request.prompts)
    negative = (request.negative_prompt or "").strip() or None
    settings = resolve_settings(pipeline, request)
    seed = secrets.randbelow(SEED_LIMIT) if request.seed is None else int(request.seed)
    command = reproduce_command(models.model_dir, prompts, settings, seed, negative)
    index = {"prompt": 0}

    def step_done(step: int, num_steps: int) -> None:
        if on_step is not None:
            on_step(index["prompt"], step, num_steps)

    recorder = StepRecorder(step_done)
    # the line magvit2-generate writes for `command` (its --model is the pipeline folder; weights in float32)
    record: dict[str, Any] = {"model": str(models.model_dir), "model_arg": str(models.model_dir), "prime_video": None,
                              "device": str(models.device), "dtype": "float32"}
    for sample in iter_generate(pipeline, prompts, settings, out_dir, seed=seed, fmt="mp4", negative_prompt=negative,
                                record=record, callback_on_step_end=recorder,
                                callback_on_step_end_tensor_inputs=recorder.tensor_inputs):
        result = AppSample(sample, command)
        yield "video", result
        stem = sample.path.stem
        result.gif = write_gif(sample.path.with_suffix(".gif"), sample.frames, fps=settings.fps)
        view = render_unmasking(pipeline.tokenizer, recorder.latents, recorder.previews, pipeline.transformer.mask_id)
        (out_dir / "unmasking").mkdir(exist_ok=True)
        result.strip, result.unmasking = write_unmasking(view, out_dir / "unmasking", stem)
        index["prompt"] += 1
        yield "extras", result


def warm_up(models: LoadedModels) -> float:
    """One 2-step generation at the default clip length and an mp4 write, before the app serves, so the first
    click does not pay for first-call setup (allocator, text encoder, codec). Returns the seconds it took."""
    start = time.monotonic()
    if models.pipeline is not None:
        pipe = models.pipeline
        settings = pipe.settings()
        steps = min(2, settings.num_inference_steps)
        video = pipe("warm up", num_frames=settings.num_frames, num_inference_steps=steps,
                     generator=torch.Generator().manual_seed(0), output_type="pt").frames[0]
        with tempfile.TemporaryDirectory() as tmp:
            write_video(Path(tmp) / "warm-up.mp4", to_uint8(video), fps=settings.fps)
    return time.monotonic() - start
