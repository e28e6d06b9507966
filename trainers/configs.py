"""Typed training configurations of both trainers, and how a run's config is assembled: preset recipe < YAML file
< flags (`build_config`, callable without argv). Unknown keys are errors that list the known ones
(`magvit2.serialization.config_from_dict`), and so are values of the wrong type (ints must be ints, floats finite,
booleans booleans, sections mappings; `magvit2.checks`); a YAML file's errors name the file and the key.
`to_dict(config)` is what a run writes to `RUN_DIR/config.yaml`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from magvit2.checks import INT64_MAX, INT64_MIN, check_config_dict, read_utf8
from magvit2.config import TokenizerConfig
from magvit2.losses import LossConfig
from magvit2.serialization import atomic_write_text, config_from_dict, config_to_dict
from maskgit.lora import LoraSettings
from trainers.horizon import HORIZONS
from trainers.optim import OptimConfig

MIXED_PRECISION = ("no", "bf16", "fp16", "auto")


@dataclass(frozen=True)
class DataConfig:
    """Where clips come from and how they are cut."""

    num_frames: int = 17  # frames per training clip: 1 + k * time_compression
    frame_stride: int = 1  # take every n-th frame
    batch_size: int = 4  # per process
    num_workers: int | None = None  # DataLoader workers; None: this machine's CPUs / its processes, at most 8
    val_fraction: float = 0.05  # files held out for validation when no separate val folder is given
    hflip: bool = True  # random horizontal flips (turn off when captions name left/right)
    include_images: bool = True  # images train as 1-frame clips (joint image-video training)
    max_bad_fraction: float = 0.05  # fail above this fraction of unreadable files
    val_clips: int = 16  # clips used per validation (from the val split)
    val_num_frames: int | None = None  # frames of validation clips (None: num_frames)
    caption_column: str = "text"  # stage two: the metadata.jsonl key holding captions ("text": "text" or "caption")

    def __post_init__(self) -> None:
        for name in ("num_frames", "frame_stride", "batch_size", "val_clips"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1; got {getattr(self, name)}")
        if (self.num_workers is not None and self.num_workers < 0) or not 0 <= self.val_fraction < 1:
            raise ValueError(f"data.num_workers must be >= 0 and val_fraction in [0, 1); got {self.num_workers}, "
                             f"{self.val_fraction}")
        if not self.caption_column.strip() or self.caption_column == "file_name":
            raise ValueError(f"data.caption_column must name a metadata.jsonl key other than file_name; got "
                             f"{self.caption_column!r}")


@dataclass(frozen=True)
class EMAConfig:
    """ema-pytorch settings for the exported model."""

    beta: float = 0.999
    update_after_step: int = 100
    update_every: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.beta < 1 or self.update_after_step < 0 or self.update_every < 1:
            raise ValueError(f"ema needs 0 < beta < 1, update_after_step >= 0, update_every >= 1; got {self}")


@dataclass(frozen=True)
class RunConfig:
    """How long to train, how often to log, validate and checkpoint."""

    max_steps: int = 100_000
    max_minutes: float | None = None  # stop (with a checkpoint and export) after this much wall time
    # what a linear / cosine LR schedule decays over: "max_steps", or "max_minutes" (the steps that fit in
    # max_minutes, measured after a fifth of them and agreed by every process; trainers.horizon)
    schedule_horizon: str = "max_steps"
    seed: int = 0
    log_every: int = 10
    val_every: int = 500
    checkpoint_every: int = 500
    keep_last: int = 3
    # "no", "bf16" (recommended on GPUs), "fp16", "auto" (bf16 where the device computes in bf16 natively: a CUDA GPU
    # with bf16, a CPU with AMX or AVX512-BF16; else no: trainers.run_setup.resolve_mixed_precision); None: the
    # launcher's choice
    mixed_precision: str | None = None
    compile: bool = False  # torch.compile the model(s)
    gradient_checkpointing: bool = False  # recompute block activations in the backward (less memory, more compute)
    nonfinite: str = "raise"  # "raise" (stop before the update) or "skip" (skip the update, max 3 in a row)
    # how long a process waits for the others (a collective; NCCL's default is 10 minutes) and for signs of life
    # from the one doing rank-0 work (an index build, a download: trainers.rank_zero)
    dist_timeout_minutes: float = 120.0
    max_epochs: int | None = None  # passes over the training data; sets max_steps (diffusers' --num_train_epochs)
    allow_tf32: bool = False  # TF32 matmuls and convolutions on Ampere+ GPUs (no effect elsewhere)
    # experiment trackers through accelerate's log_with (metrics.jsonl is always written): tensorboard, wandb,
    # mlflow, comet_ml, aim, clearml, dvclive, ...; "all": every one installed
    report_to: tuple[str, ...] = ()
    tracker_project_name: str = "magvit2"  # the trackers' project (wandb project, tensorboard subfolder, ...)
    logging_dir: str = "logs"  # where file-based trackers (tensorboard, aim) write; relative to the run folder
    tensorboard: bool = False  # shorthand for report_to: [tensorboard]
    wandb_project: str | None = None  # shorthand for report_to: [wandb] with this project
    push_to_hub: bool = False  # upload the exported model to hub_model_id at every checkpoint and at the end
    hub_model_id: str | None = None  # 'owner/name' of the Hugging Face Hub repo (created if needed)

    def __post_init__(self) -> None:
        for name in ("max_steps", "log_every", "val_every", "checkpoint_every", "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"run.{name} must be >= 1; got {getattr(self, name)}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"run.max_minutes must be > 0; got {self.max_minutes}")
        if self.schedule_horizon not in HORIZONS:
            raise ValueError(f"run.schedule_horizon must be one of {', '.join(HORIZONS)}; "
                             f"got {self.schedule_horizon!r}")
        if self.schedule_horizon == "max_minutes" and self.max_minutes is None:
            raise ValueError("run.schedule_horizon max_minutes needs run.max_minutes (--max-minutes)")
        if not self.dist_timeout_minutes > 0:
            raise ValueError(f"run.dist_timeout_minutes must be > 0; got {self.dist_timeout_minutes}")
        if self.mixed_precision is not None and self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"run.mixed_precision must be one of {MIXED_PRECISION}; got {self.mixed_precision!r}")
        if self.nonfinite not in ("raise", "skip"):
            raise ValueError(f"run.nonfinite must be 'raise' or 'skip'; got {self.nonfinite!r}")
        if not INT64_MIN <= self.seed <= INT64_MAX:
            raise ValueError(f"run.seed must lie in [-2**63, 2**63 - 1]; got {self.seed}")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ValueError(f"run.max_epochs must be >= 1; got {self.max_epochs}")
        object.__setattr__(self, "report_to", tuple(self.report_to))
        from accelerate.utils import LoggerType

        known = [t.value for t in LoggerType]
        unknown = [t for t in self.report_to if t not in known]
        if unknown:
            raise ValueError(f"run.report_to: unknown tracker {unknown[0]!r}; known: {', '.join(known)}")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("run.push_to_hub needs run.hub_model_id ('owner/name'): pass --hub_model_id")
        if self.hub_model_id is not None:
            from magvit2.hub import is_repo_id

            if not is_repo_id(self.hub_model_id) or "/" not in self.hub_model_id:
                raise ValueError(f"run.hub_model_id must be a Hub repo id 'owner/name'; got {self.hub_model_id!r}")
            if not self.push_to_hub:
                raise ValueError("run.hub_model_id is where --push_to_hub uploads: pass --push_to_hub too")

    def trackers(self) -> list[str]:
        """The trackers to open: report_to plus the tensorboard / wandb_project shorthands ("all" kept as is)."""
        names = [*self.report_to, *(["tensorboard"] if self.tensorboard else []),
                 *(["wandb"] if self.wandb_project else [])]
        return list(dict.fromkeys(names))  # in order, once each


@dataclass(frozen=True)
class TokenizerTrainConfig:
    """Everything `magvit2-train-tokenizer` needs besides paths."""

    preset: str = "tiny"  # tokenizer architecture preset (magvit2.presets)
    tokenizer: dict[str, Any] = field(default_factory=dict)  # TokenizerConfig overrides on top of the preset
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    gen_optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, warmup_steps=1000))
    disc_optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, warmup_steps=1000))
    disc_start_step: int = 2000  # adversarial terms (and D updates) start here
    grad_accum: int | None = None  # micro-batches per update; None: the launcher's gradient accumulation (else 1)
    # train the decoder only: the encoder and the quantizer's input projection stay frozen, so the codes do not
    # change (VidTok's decoder fine-tuning; with --init-from a trained tokenizer)
    decoder_only: bool = False
    # share of each clip's codes replaced by uniformly random codes before decoding, in training only: the decoder
    # learns to draw clean frames from codes with a generator's errors (latent perturbation, RobusTok); with
    # decoder_only, a decoder fine-tuned for generation on codes that stay fixed (trainers.code_noise)
    code_noise: float = 0.0
    code_noise_clips: float = 1.0  # the share of clips that get code noise; the others decode clean

    def __post_init__(self) -> None:
        if not isinstance(self.decoder_only, bool):
            raise ValueError(f"decoder_only must be true or false; got {self.decoder_only!r}")
        if isinstance(self.code_noise, bool) or not isinstance(self.code_noise, (int, float)) \
                or not 0.0 <= self.code_noise < 1.0:
            raise ValueError(f"code_noise must be a share in [0, 1); got {self.code_noise!r}")
        if isinstance(self.code_noise_clips, bool) or not isinstance(self.code_noise_clips, (int, float)) \
                or not 0.0 < self.code_noise_clips <= 1.0:
            raise ValueError(f"code_noise_clips must be a share in (0, 1]; got {self.code_noise_clips!r}")
        if self.disc_start_step < 0 or (self.grad_accum is not None and self.grad_accum < 1):
            raise ValueError(f"disc_start_step must be >= 0 and grad_accum >= 1; got {self.disc_start_step}, "
                             f"{self.grad_accum}")
        _check_tokenizer_overrides(self.tokenizer, "tokenizer")


def _check_tokenizer_overrides(overrides: Any, where: str) -> None:
    """`tokenizer:` holds TokenizerConfig fields (known keys, right types) on top of the preset."""
    check_config_dict(TokenizerConfig, overrides, where, exclude=("format_version",))


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(read_utf8(path, "the config file")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of config sections; got {type(data).__name__}")
    return data


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: `override` wins; nested mappings merge key by key."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def dump_yaml(data: dict[str, Any], path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


# --------------------------------------------------------------------------------------------------------------
# stage two

_MASKGIT_FILLED = ("codebook_size", "latent_shape", "text_dim")  # MaskGitConfig fields the trainer fills in


@dataclass(frozen=True)
class MaskGitTrainConfig:
    """Everything `magvit2-train-maskgit` needs besides paths."""

    preset: str = "tiny"  # transformer size (maskgit.presets) + recipe (trainers.recipes.MASKGIT_RECIPES)
    maskgit: dict[str, Any] = field(default_factory=dict)  # MaskGitConfig overrides on top of the preset (dim, depth,
    # heads, self_condition, dropout, ...); codebook_size / latent_shape / text_dim come from the tokenizer, the codes
    # and the text encoder
    text_encoder: str = "default"  # 'default' (bundled MiniLM), 'tiny[:DIM]' (tests only), HF name or local folder
    text_max_length: int = 77  # prompt tokens kept by the text encoder
    data: DataConfig = field(default_factory=lambda: DataConfig(hflip=False, include_images=False))
    run: RunConfig = field(default_factory=RunConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, warmup_steps=1000, schedule="cosine"))
    grad_accum: int | None = None  # micro-batches per update; None: the launcher's gradient accumulation (else 1)
    mask_schedule: str = "cosine"  # training mask-ratio schedule (maskgit.schedule)
    min_mask_ratio: float = 0.0  # training mask ratios are at least this
    tube_mask_prob: float = 0.0  # per-sample probability of a temporal tube mask (maskgit.objective.tube_mask)
    prefix_mask_prob: float = 0.0  # per-sample probability of a frame-prediction mask: the first latent frames
    # given whole (maskgit.objective.prefix_frame_mask)
    frame_mask_prob: float = 0.0  # per-sample probability of masking one whole latent frame, the others given: the
    # state the frame refinement rounds redraw from (maskgit.objective.whole_frame_mask)
    loss_average: str = "token"  # masked-token loss: mean over the batch's masked tokens, or per "sample" first
    cond_drop_prob: float = 0.1  # per-sample probability of training on the null text (classifier-free guidance)
    label_smoothing: float = 0.0  # of the masked-token cross-entropy
    self_cond_prob: float = 0.5  # with maskgit.self_condition: probability of a self-conditioning first pass
    val_mask_ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # validation masks these fractions (fixed masks)
    pipeline: dict[str, Any] = field(default_factory=dict)  # PipelineDefaults (sampling settings) for the sample
    # videos and the exported pipeline
    lora: LoraSettings | None = None  # set: train a LoRA adapter on the --init-from pipeline (frozen) instead of
    # every weight; exported to RUN_DIR/lora/ (rank, alpha, targets, dropout; maskgit.lora)

    def __post_init__(self) -> None:
        from maskgit.schedule import SCHEDULES

        if (self.grad_accum is not None and self.grad_accum < 1) or self.text_max_length < 1:
            raise ValueError(f"grad_accum and text_max_length must be >= 1; got {self.grad_accum}, "
                             f"{self.text_max_length}")
        if self.mask_schedule not in SCHEDULES:
            raise ValueError(f"mask_schedule must be one of {SCHEDULES}; got {self.mask_schedule!r}")
        if self.loss_average not in ("token", "sample"):
            raise ValueError(f"loss_average must be 'token' or 'sample'; got {self.loss_average!r}")
        if not 0 <= self.min_mask_ratio < 1:
            raise ValueError(f"min_mask_ratio must be in [0, 1); got {self.min_mask_ratio}")
        for name in ("self_cond_prob", "cond_drop_prob", "tube_mask_prob", "prefix_mask_prob",
                     "frame_mask_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]; got {getattr(self, name)}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1); got {self.label_smoothing}")
        ratios = tuple(self.val_mask_ratios)
        object.__setattr__(self, "val_mask_ratios", ratios)
        if not ratios or not all(isinstance(r, (int, float)) and 0 < r <= 1 for r in ratios):
            raise ValueError(f"val_mask_ratios must be numbers in (0, 1]; got {list(ratios)}")
        _check_maskgit_overrides(self.maskgit, "maskgit")
        _check_pipeline_settings(self.pipeline, "pipeline")


def _check_maskgit_overrides(overrides: Any, where: str) -> None:
    """`maskgit:` holds MaskGitConfig fields (known keys, right types) except those the trainer fills in."""
    from maskgit.config import MaskGitConfig

    if not isinstance(overrides, dict):
        raise ValueError(f"{where} must be a mapping of MaskGitConfig fields; got {type(overrides).__name__}")
    filled = sorted(set(overrides) & set(_MASKGIT_FILLED))
    if filled:
        raise ValueError(f"{where}.{filled[0]} is set by the trainer (from the tokenizer, the codes and the text "
                         f"encoder); remove {filled} from the config")
    check_config_dict(MaskGitConfig, overrides, where, exclude=(*_MASKGIT_FILLED, "format_version"))


def _check_pipeline_settings(settings: Any, where: str) -> None:
    """`pipeline:` holds PipelineDefaults fields (sampling settings)."""
    from maskgit.pipeline_settings import PipelineDefaults

    check_config_dict(PipelineDefaults, settings, where)


_SECTION_CHECKS = {"tokenizer": _check_tokenizer_overrides, "maskgit": _check_maskgit_overrides,
                   "pipeline": _check_pipeline_settings}


# --------------------------------------------------------------------------------------------------------------
# assembling a run's config


def to_dict(config: Any) -> dict[str, Any]:
    """A train config as plain YAML types (what RUN_DIR/config.yaml holds)."""
    return config_to_dict(config)


DEFAULT_PRESET = "base"  # what the Python API (VideoTokenizerTrainer, build_config) and the training commands use


def build_config(kind: str, preset: str = DEFAULT_PRESET, config_file: str | Path | None = None,
                 overrides: dict[str, Any] | None = None) -> TokenizerTrainConfig | MaskGitTrainConfig:
    """The config of a `kind` ("tokenizer" or "maskgit") run: defaults < the preset's recipe < `config_file` (YAML)
    < `overrides` (nested mappings merge key by key), validated."""
    from trainers.recipes import MASKGIT_RECIPES, TOKENIZER_RECIPES

    cls, recipes = {"tokenizer": (TokenizerTrainConfig, TOKENIZER_RECIPES),
                    "maskgit": (MaskGitTrainConfig, MASKGIT_RECIPES)}[kind]
    if preset not in recipes:
        raise ValueError(f"unknown {kind} preset {preset!r}; known: {sorted(recipes)}")
    config = merge(to_dict(cls()), {"preset": preset, **recipes[preset]})
    if config_file is not None:
        data = load_yaml(config_file)
        try:  # the file's own mistakes are reported with its name and the key, before anything is merged
            check_config_dict(cls, data)
            for name, check in _SECTION_CHECKS.items():
                if name in data and name in {f.name for f in dataclasses.fields(cls)}:
                    check(data[name], name)
        except ValueError as e:
            raise ValueError(f"{config_file}: {e}") from None
        config = merge(config, data)
    return config_from_dict(cls, merge(config, overrides or {}), kind)
