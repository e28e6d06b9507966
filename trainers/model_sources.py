"""What a model path given to a command or a trainer means: the one rule of `magvit2.model_paths` (a model folder, a
run folder holding its export, a pipeline folder holding it, or a Hugging Face Hub repo id) for `--tokenizer`,
`--model` and `--init-from`; errors name the flag. A trainer's `--init-from` may also be a training checkpoint
folder: `checkpoint_init` is the one function here that reads checkpoints (imported only when one is given)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from magvit2 import VideoTokenizer
from magvit2.model_paths import ModelKind, ModelLocation, resolve_model_path
from magvit2.tokenizer import TOKENIZER_KIND
from maskgit.config import MaskGitConfig
from maskgit.pipeline_folder import PIPELINE_MODEL_KIND, TRANSFORMER_DIR
from maskgit.transformer import TRANSFORMER_KIND, MaskGitTransformer

CHECKPOINT_MARKER = "COMPLETE.json"  # trainers.checkpointing.MARKER: what makes a folder a checkpoint


def locate(path: str | os.PathLike, kind: ModelKind, flag: str) -> ModelLocation:
    """`resolve_model_path` with the flag named in its errors."""
    try:
        return resolve_model_path(path, kind)
    except FileNotFoundError as e:
        raise type(e)(f"{flag} {e}") from None
    except ValueError as e:
        raise ValueError(f"{flag} {e}") from None


def tokenizer_dir(path: str | os.PathLike, flag: str = "--tokenizer") -> Path:
    """The tokenizer folder `path` names (itself, a tokenizer or MaskGit run folder, a pipeline, a Hub repo id)."""
    return locate(path, TOKENIZER_KIND, flag).folder


def pipeline_dir(path: str | os.PathLike, flag: str = "--model") -> Path:
    """The pipeline folder `path` names (itself, a MaskGit run folder, a Hub repo id)."""
    return locate(path, PIPELINE_MODEL_KIND, flag).folder


def load_tokenizer(path: str | os.PathLike, device: torch.device | str | None = None, flag: str = "--tokenizer",
                   dtype: torch.dtype | None = None) -> tuple[VideoTokenizer, Path]:
    """(the tokenizer `path` names, in eval mode on `device`, its folder); `hub_repo_id` set when from the Hub."""
    location = locate(path, TOKENIZER_KIND, flag)
    tokenizer = VideoTokenizer.from_pretrained(location.folder, device=device, torch_dtype=dtype)
    tokenizer.name_or_path, tokenizer.hub_repo_id = str(path), location.repo_id
    return tokenizer, location.folder


def load_init_tokenizer(path: str | os.PathLike, flag: str = "--init-from") -> tuple[VideoTokenizer, Path]:
    """The tokenizer trainer's `--init-from`: the tokenizer to fine-tune (its Hub id, if any, becomes the exported
    model card's `base_model`)."""
    tokenizer, folder = load_tokenizer(path, flag=flag)
    tokenizer.base_model = tokenizer.hub_repo_id
    return tokenizer, folder


def hub_repo_id(path: str | os.PathLike) -> str | None:
    """The Hub repo id `path` names (a repo id that is not a local path), else None."""
    from magvit2.hub import is_repo_id

    return str(path) if not Path(path).expanduser().exists() and is_repo_id(str(path)) else None


def load_frozen_tokenizer(path: str | os.PathLike, device: torch.device | str, flag: str = "--tokenizer"
                          ) -> tuple[VideoTokenizer, Path]:
    """Stage two's `--tokenizer` -> (tokenizer in eval mode without grads, its folder); errors name `flag`."""
    tokenizer, folder = load_tokenizer(path, device, flag)
    if tokenizer.has_cond_layers:
        raise ValueError(f"{flag} {path}: stage two needs an unconditioned tokenizer; this one has cond_* layers")
    return tokenizer.requires_grad_(False), folder


def load_init_weights(path: str | os.PathLike, flag: str = "--init-from"
                      ) -> tuple[MaskGitConfig, dict[str, torch.Tensor], str]:
    """MaskGit `--init-from`: a pipeline folder, a MaskGit run folder (its pipeline/), a transformer folder, a Hub
    repo id holding one, or a checkpoint folder (its online transformer weights) -> (config, state dict,
    description)."""
    if (Path(path) / CHECKPOINT_MARKER).is_file():
        return checkpoint_init(Path(path), flag)
    try:
        location = resolve_model_path(path, TRANSFORMER_KIND)
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"{flag} {e} (a checkpoint folder with {CHECKPOINT_MARKER} works too)") from None
    model = MaskGitTransformer.from_pretrained(location.folder)
    where = location.repo_id or str(path)
    what = f"pipeline {where}" if location.folder.name == TRANSFORMER_DIR else f"transformer {where}"
    return model.config, model.state_dict(), what


def checkpoint_init(path: Path, flag: str = "--init-from") -> tuple[MaskGitConfig, dict[str, torch.Tensor], str]:
    """The online transformer of a MaskGit training checkpoint folder -> (config, state dict, description)."""
    from trainers.checkpointing import CheckpointCorruptError, CheckpointManager

    tensors, state = CheckpointManager(path.parent.parent, is_main=False).load(path)
    try:
        config = MaskGitConfig.from_dict(state["config"]["maskgit_resolved"])
        weights = tensors["transformer"]
    except (KeyError, TypeError) as e:
        raise CheckpointCorruptError(f"{flag} {path}: not a MaskGit checkpoint (no {e} entry)") from None
    return config, weights, f"checkpoint {path}"
