"""The Python training API of the seed (`magvit2-pytorch`), on our trainers: `VideoTokenizerTrainer(tokenizer,
dataset_folder=..., batch_size=..., ...)`, `.train()`, `.ema_tokenizer`, `use_wandb_tracking` and the `.trackers(...)`
context manager. Also re-exported lazily as `magvit2.VideoTokenizerTrainer` (importing `magvit2` stays light).

There is one training loop: this class maps the seed's keywords onto `trainers.configs.build_config("tokenizer",
preset, config, overrides)` (precedence: the preset's recipe < the YAML `config` < `overrides` < the seed keywords
given) and runs `trainers.tokenizer_trainer.TokenizerTrainer` on a copy of the tokenizer passed in (its architecture
and weights, exactly as with `--init-from`); after `train()` the passed tokenizer holds the trained weights too.
Keywords left out take the recipe's values, not the seed's defaults. Stage two's Python API is
`trainers.maskgit_trainer.MaskGitTrainer` (also exported here).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from magvit2.tokenizer import VideoTokenizer
from trainers.argnames import ArgNames
from trainers.configs import TokenizerTrainConfig, build_config, merge
from trainers.maskgit_trainer import MaskGitTrainer
from trainers.tokenizer_trainer import TokenizerTrainer

__all__ = ["MaskGitTrainer", "VideoTokenizerTrainer"]

# seed keywords this trainer cannot honour, and what to use instead
_UNSUPPORTED = {
    "dataset": "pass dataset_folder= (a folder, or a list of folders, of videos and images)",
    "checkpoints_folder": "checkpoints are written to run_dir/checkpoints/ (pass run_dir= or results_folder=)",
    "scheduler": "the LR schedule is set by overrides={'gen_optim': {'schedule': 'cosine', ...}}",
    "scheduler_kwargs": "use overrides={'gen_optim': {...}, 'disc_optim': {...}}",
    "optimizer_kwargs": "use overrides={'gen_optim': {...}, 'disc_optim': {...}}",
    "accelerate_kwargs": "launch with `accelerate launch` (its settings apply) or set overrides={'run': {...}}",
    "dataset_kwargs": "use overrides={'data': {...}}",
}


class VideoTokenizerTrainer:
    """Train `model` (a `VideoTokenizer`) on a folder of clips, with the seed's keywords.

    Seed keywords: `batch_size` (data.batch_size), `num_train_steps` (run.max_steps), `learning_rate` (both
    optimizers' lr), `grad_accum_every` (grad_accum), `dataset_folder` (a folder or a list), `dataset_type`
    ('videos': the folder's videos only; 'images': its images too, as 1-frame clips beside the videos),
    `valid_frac` (data.val_fraction), `validate_every_step` (run.val_every), `checkpoint_every_step`
    (run.checkpoint_every), `num_frames` (data.num_frames), `discr_start_after_step` (disc_start_step),
    `warmup_steps` and `max_grad_norm` (both optimizers), `apply_gradient_penalty_every` (loss.r1_interval),
    `ema_kwargs` (beta, update_after_step, update_every), `use_wandb_tracking`, `results_folder` (the run folder).
    Ours: `run_dir` (the run folder; default `results_folder` or ./results), `preset` (the recipe: LRs, loss
    settings, steps; default 'base'), `config` (a YAML file), `overrides` (a nested config dict), `val_folder`,
    `resume` ('latest' or a checkpoint folder), `seed`, `num_workers`.
    """

    def __init__(self, model: VideoTokenizer, *, batch_size: int | None = None, num_train_steps: int | None = None,
                 learning_rate: float | None = None, grad_accum_every: int | None = None,
                 dataset_folder: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                 dataset_type: str = "videos", valid_frac: float | None = None,
                 validate_every_step: int | None = None, checkpoint_every_step: int | None = None,
                 num_frames: int | None = None, use_wandb_tracking: bool = False,
                 discr_start_after_step: int | None = None, warmup_steps: int | None = None,
                 max_grad_norm: float | None = None, apply_gradient_penalty_every: int | None = None,
                 ema_kwargs: dict[str, Any] | None = None, results_folder: str | os.PathLike | None = None,
                 run_dir: str | os.PathLike | None = None, preset: str = "base",
                 config: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None,
                 val_folder: str | os.PathLike | None = None, resume: str | None = None, seed: int | None = None,
                 num_workers: int | None = None, **unsupported: Any) -> None:
        for name in unsupported:
            if name in _UNSUPPORTED:
                raise ValueError(f"VideoTokenizerTrainer: {name}= is not supported here; {_UNSUPPORTED[name]}")
            raise TypeError(f"VideoTokenizerTrainer got an unexpected keyword argument {name!r}")
        if not isinstance(model, VideoTokenizer):
            raise ValueError(f"expected a magvit2.VideoTokenizer to train; got {type(model).__name__}")
        if dataset_folder is None:
            raise ValueError("VideoTokenizerTrainer needs dataset_folder= (a folder of videos and/or images)")
        if dataset_type not in ("videos", "images"):
            raise ValueError(f"dataset_type must be 'videos' or 'images'; got {dataset_type!r}")
        folders = [dataset_folder] if isinstance(dataset_folder, (str, os.PathLike)) else list(dataset_folder)
        seed_kwargs = _seed_overrides(
            batch_size=batch_size, num_train_steps=num_train_steps, learning_rate=learning_rate,
            grad_accum_every=grad_accum_every, dataset_type=dataset_type, valid_frac=valid_frac,
            validate_every_step=validate_every_step, checkpoint_every_step=checkpoint_every_step,
            num_frames=num_frames, discr_start_after_step=discr_start_after_step, warmup_steps=warmup_steps,
            max_grad_norm=max_grad_norm, apply_gradient_penalty_every=apply_gradient_penalty_every,
            ema_kwargs=ema_kwargs, seed=seed, num_workers=num_workers)
        self.config: TokenizerTrainConfig = build_config("tokenizer", preset, config,
                                                         merge(overrides or {}, seed_kwargs))
        if use_wandb_tracking and "wandb" not in self.config.run.trackers():  # through accelerate's log_with
            run = dataclasses.replace(self.config.run, report_to=(*self.config.run.report_to, "wandb"))
            self.config = dataclasses.replace(self.config, run=run)
        self.model = model
        self.use_wandb_tracking = use_wandb_tracking
        run_dir = run_dir if run_dir is not None else results_folder if results_folder is not None else "./results"
        # errors name this class's keywords; paths are made absolute by the trainer (a later chdir changes nothing)
        names = ArgNames(run_dir="run_dir=" if results_folder is None else "results_folder=", data="dataset_folder=",
                         val_data="val_folder=", batch_size="batch_size=", init_from="model")
        with tempfile.TemporaryDirectory(prefix="magvit2-api-") as tmp:  # the model's architecture + weights
            folder = model.save_pretrained(Path(tmp) / "tokenizer")
            self.trainer = TokenizerTrainer(self.config, folders, run_dir, val_dir=val_folder, resume=resume,
                                            init_from=folder, names=names)
        self.run_dir = self.trainer.run_dir

    # the seed's interface ----------------------------------------------------------------------------------------

    @property
    def ema_tokenizer(self) -> VideoTokenizer:
        """The EMA of the trained tokenizer (what RUN_DIR/tokenizer/ holds), in eval mode."""
        return self.trainer.ema.ema_model.eval()

    @property
    def tokenizer(self) -> VideoTokenizer:
        """The online (non-EMA) tokenizer being trained."""
        return self.trainer.tokenizer

    def train(self) -> dict[str, Any]:
        """Train to num_train_steps (or run.max_minutes); returns the run's summary (also RUN_DIR/summary.json).
        The tokenizer passed in receives the trained (online) weights."""
        summary = self.trainer.fit()
        self.model.load_state_dict(self.trainer.tokenizer.state_dict())
        return summary

    @contextlib.contextmanager
    def trackers(self, project_name: str, run_name: str | None = None,
                 hps: dict[str, Any] | None = None) -> Iterator[VideoTokenizerTrainer]:
        """Within the block, metrics also go to Weights & Biases (`use_wandb_tracking=True`) under `project_name`
        / `run_name`, with `hps` (default: the run's config) as its config; metrics.jsonl is always written. Offline
        when wandb has no credentials (never interactive)."""
        if not self.use_wandb_tracking:
            raise ValueError("trackers() logs to Weights & Biases: construct the trainer with use_wandb_tracking=True")
        metrics = self.trainer.metrics
        metrics.close_trackers()  # open only after a previous train(): the new names start a new run
        metrics.project_name, metrics.run_name = project_name, run_name
        if hps is not None:
            metrics.config = dict(hps)
        try:
            yield self
        finally:
            self.trainer.metrics.close()


def _seed_overrides(*, batch_size, num_train_steps, learning_rate, grad_accum_every, dataset_type, valid_frac,
                    validate_every_step, checkpoint_every_step, num_frames, discr_start_after_step, warmup_steps,
                    max_grad_norm, apply_gradient_penalty_every, ema_kwargs, seed, num_workers) -> dict[str, Any]:
    """The seed's keywords as nested `build_config` overrides (keywords left as None are left out)."""
    out: dict[str, Any] = {"data": {}, "run": {}, "gen_optim": {}, "disc_optim": {}, "loss": {}}

    def put(section: str | None, key: str, value: Any) -> None:
        if value is not None:
            (out if section is None else out[section])[key] = value

    put("data", "batch_size", batch_size)
    put("data", "num_frames", num_frames)
    put("data", "val_fraction", valid_frac)
    put("data", "num_workers", num_workers)
    if dataset_type == "videos":
        out["data"]["include_images"] = False
    put("run", "max_steps", num_train_steps)
    put("run", "val_every", validate_every_step)
    put("run", "checkpoint_every", checkpoint_every_step)
    put("run", "seed", seed)
    for optim in ("gen_optim", "disc_optim"):
        put(optim, "lr", learning_rate)
        put(optim, "warmup_steps", warmup_steps)
        put(optim, "max_grad_norm", max_grad_norm)
    put(None, "grad_accum", grad_accum_every)
    put(None, "disc_start_step", None if discr_start_after_step is None else int(discr_start_after_step))
    put("loss", "r1_interval", apply_gradient_penalty_every)
    if ema_kwargs:
        known = {"beta", "update_after_step", "update_every"}
        if set(ema_kwargs) - known:
            raise ValueError(f"ema_kwargs: supported keys are {sorted(known)}; got {sorted(ema_kwargs)}")
        out["ema"] = dict(ema_kwargs)
    return {k: v for k, v in out.items() if v or not isinstance(v, dict)}
