"""What a model path given to a trainer means: a tokenizer (`--tokenizer`, the tokenizer trainer's `--init-from`) or
MaskGit weights (the MaskGit trainer's `--init-from`), each given as its own folder, a run folder or a checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from magvit2 import VideoTokenizer
from magvit2.serialization import resolve_model_dir
from maskgit.config import MaskGitConfig
from maskgit.pipeline_folder import PIPELINE_CONFIG, PIPELINE_KIND, TRANSFORMER_DIR
from maskgit.transformer import MaskGitTransformer
from trainers.checkpointing import MARKER, CheckpointCorruptError, CheckpointManager

TOKENIZER_KIND, TRANSFORMER_KIND = "VideoTokenizer", "MaskGitTransformer"
RUN_TOKENIZER_DIR, RUN_PIPELINE_DIR = "tokenizer", "pipeline"  # where the trainers export inside their run folders


def tokenizer_dir(path: str | os.PathLike, flag: str = "--tokenizer") -> Path:
    """A tokenizer folder, given itself or a tokenizer run folder (RUN_DIR/tokenizer/); errors name `flag`."""
    try:
        return resolve_model_dir(path, TOKENIZER_KIND, RUN_TOKENIZER_DIR)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{flag} {e}") from None


def pipeline_dir(path: str | os.PathLike, flag: str = "--model") -> Path:
    """A pipeline folder (pipeline.json), given itself or a MaskGit run folder (RUN_DIR/pipeline/)."""
    try:
        return resolve_model_dir(path, PIPELINE_KIND, RUN_PIPELINE_DIR, config_name=PIPELINE_CONFIG)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{flag} {e}") from None


def load_frozen_tokenizer(path: str | os.PathLike, device: torch.device | str, flag: str = "--tokenizer"
                          ) -> tuple[VideoTokenizer, Path]:
    """A tokenizer folder or tokenizer run folder -> (tokenizer in eval mode without grads, its folder); errors name
    `flag`."""
    folder = tokenizer_dir(path, flag)
    tokenizer = VideoTokenizer.from_pretrained(folder).to(device).eval().requires_grad_(False)
    if tokenizer.has_cond_layers:
        raise ValueError(f"{flag} {path}: stage two needs an unconditioned tokenizer; this one has cond_* layers")
    return tokenizer, folder


def load_init_weights(path: str | os.PathLike, flag: str = "--init-from"
                      ) -> tuple[MaskGitConfig, dict[str, torch.Tensor], str]:
    """MaskGit `--init-from`: a pipeline folder, a MaskGit run folder (its pipeline/), a checkpoint folder (its online
    transformer weights) or a transformer folder -> (config, state dict, description); errors name `flag`."""
    path = Path(path)
    if (path / MARKER).is_file():
        tensors, state = CheckpointManager(path.parent.parent, is_main=False).load(path)
        try:
            config = MaskGitConfig.from_dict(state["config"]["maskgit_resolved"])
            weights = tensors["transformer"]
        except (KeyError, TypeError) as e:
            raise CheckpointCorruptError(f"{flag} {path}: not a MaskGit checkpoint (no {e} entry)") from None
        return config, weights, f"checkpoint {path}"
    try:
        folder = pipeline_dir(path, flag) / TRANSFORMER_DIR
        what = f"pipeline {folder.parent}"
    except FileNotFoundError:
        try:
            folder, what = resolve_model_dir(path, TRANSFORMER_KIND, TRANSFORMER_DIR), f"transformer {path}"
        except FileNotFoundError:
            raise FileNotFoundError(f"{flag} {path}: expected a pipeline folder (pipeline.json), a MaskGit run "
                                    "folder (pipeline/), a checkpoint folder (COMPLETE.json) or a transformer "
                                    "folder") from None
    model = MaskGitTransformer.from_pretrained(folder)
    return model.config, model.state_dict(), what
