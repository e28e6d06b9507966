"""What the app serves: a text-to-video pipeline and/or a tokenizer, named the way the commands name them.

`--model` takes what `magvit2-generate --model` takes (a pipeline folder or a MaskGit run folder, resolved by
`trainers.model_sources.pipeline_dir`), or a tokenizer folder; `--tokenizer` what `magvit2-reconstruct --tokenizer`
takes (`tokenizer_dir`), e.g. a converted Open-MAGVIT2 tokenizer. With a pipeline the Generate tab works and the
Tokenizer tab uses the pipeline's tokenizer unless `--tokenizer` names another; with only a tokenizer, only the
Tokenizer tab works.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from magvit2 import VideoTokenizer
from maskgit.pipeline import TextToVideoPipeline
from maskgit.pipeline_folder import TOKENIZER_DIR
from trainers.model_sources import pipeline_dir, tokenizer_dir


@dataclass
class LoadedModels:
    """pipeline: None when only a tokenizer was given. model_dir: the pipeline folder (what `samples.jsonl` records
    as "model"). tokenizer: the Tokenizer tab's (the pipeline's unless `--tokenizer`). tokenizer_training: what its
    trainer recorded ({num_frames, frame_stride, step}; {} if nothing)."""

    pipeline: TextToVideoPipeline | None
    model_dir: Path | None
    tokenizer: VideoTokenizer
    tokenizer_dir: Path
    device: torch.device
    tokenizer_training: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One Markdown line: what is loaded."""
        tok = self.tokenizer
        t = tok.config.image_size
        what = (f"tokenizer `{self.tokenizer_dir}` ({type(tok).__name__}, {t[0]}x{t[1]}, f={tok.time_compression}, "
                f"{tok.codebook_size} codes)")
        if self.pipeline is None:
            return f"Loaded: {what}; no pipeline, so only the Tokenizer tab works."
        text = self.pipeline.text_encoder
        return (f"Loaded: pipeline `{self.model_dir}` (text encoder `{text.spec}`, up to {text.max_length} tokens; "
                f"up to {self.pipeline.max_num_frames} frames) on {self.device}; {what}.")


def frame_choices(pipeline: TextToVideoPipeline) -> list[int]:
    """The clip lengths a pipeline can make: 1 + k*f for every k whose latent frames fit the transformer."""
    f = pipeline.tokenizer.time_compression
    return list(range(1, pipeline.max_num_frames + 1, f))


def tokenizer_frame_choices(tokenizer: VideoTokenizer, longest: int = 9) -> list[int]:
    """Clip lengths for the Tokenizer tab: 1 + k*f for k < `longest` latent frames."""
    return [tokenizer.num_frames_for(k) for k in range(1, longest + 1)]


def load_models(model: str | os.PathLike | None, tokenizer: str | os.PathLike | None, device: torch.device,
                allow_outside_paths: bool = False, allow_pickle_text_encoder: bool = False) -> LoadedModels:
    """Resolve and load `model` (pipeline / run folder, or a tokenizer folder) and `tokenizer`. Errors are the
    resolvers' one-liners (FileNotFoundError / ValueError) naming the flag and the path."""
    if model is None and tokenizer is None:
        raise ValueError("nothing to serve: pass --model (a pipeline or MaskGit run folder) and/or --tokenizer "
                         "(a tokenizer folder)")
    pipeline, model_dir, tok, tok_dir = None, None, None, None
    if model is not None and str(model).strip():
        try:
            model_dir = pipeline_dir(model)
        except FileNotFoundError as e:
            try:  # a tokenizer folder given as --model: the Tokenizer tab alone
                tok_dir = tokenizer_dir(model, "--model")
            except (FileNotFoundError, ValueError):
                raise FileNotFoundError(f"{e} (nor a tokenizer folder)") from None
        if model_dir is not None:
            pipeline = TextToVideoPipeline.from_pretrained(model_dir, device=device,
                                                           allow_outside_paths=allow_outside_paths,
                                                           allow_pickle_text_encoder=allow_pickle_text_encoder)
            tok, tok_dir = pipeline.tokenizer, model_dir / TOKENIZER_DIR
    if tokenizer is not None and str(tokenizer).strip():
        tok_dir = tokenizer_dir(tokenizer)
        tok = None
    if tok is None:
        assert tok_dir is not None
        tok = VideoTokenizer.from_pretrained(tok_dir)
    tok = tok.to(device).eval().requires_grad_(False)
    return LoadedModels(pipeline, model_dir, tok, tok_dir, device, VideoTokenizer.training_info(tok_dir))
