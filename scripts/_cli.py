"""Shared command-line plumbing: user errors exit 2 with one line on stderr and no traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from trainers.argnames import ArgNames
from trainers.checkpointing import CheckpointError
from trainers.disk_space import disk_full
from trainers.guards import NonFiniteLossError
from trainers.stopping import TrainingStopped

# Errors a user can cause (bad paths, values or files; a missing optional extra): exit 2, one line. Malformed
# configs, metadata, shard indexes and model folders raise ValueError naming the file and the key (data that will
# not load: trainers.data.folders.DataQualityError, a ValueError); malformed checkpoints CheckpointError; outputs
# that would overwrite a user's file FileExistsError. Anything else is a bug and keeps its traceback. A run stopped
# by the non-finite guard exits 1 with its one-line reason.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError,
                                               FileExistsError, IsADirectoryError, CheckpointError, ImportError)


# how the trainers' errors name their inputs when called from these commands (the Python API names its keywords)
TRAINER_FLAGS = ArgNames(run_dir="--out", resume="--resume", init_from="--init-from",
                         init_from_image="--init-from-image", data="--data",
                         val_data="--val-data", codes="--codes", val_codes="--val-codes", tokenizer="--tokenizer",
                         sample_prompts="--sample-prompts", batch_size="--batch-size", keep_last="--keep-last")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only when there is one worth showing (not None/False, not already in the help text)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that exits 2 with a single line (not the usage block) on bad arguments."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def say(line: str) -> None:
    """`line` and its newline on stderr in one write: print() writes them separately (stderr is write-through), so
    the lines of several processes sharing one pipe (torchrun) could interleave; one short write is atomic."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def run(main: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser,
        argv: Sequence[str] | None = None) -> int:
    """Parse, call `main(args)`, map user errors to exit code 2 with one line."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parser.parse_args(argv)
    try:
        main(args)
    except USER_ERRORS as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        say(f"{parser.prog}: error: {message}")
        return 2
    except OSError as e:
        if not disk_full(e):  # a full disk anywhere (metrics, samples, outputs): one line too
            raise
        say(f"{parser.prog}: error: {e}")
        return 2
    except NonFiniteLossError as e:
        say(f"{parser.prog}: stopped: {e}")
        return 1
    except TrainingStopped as e:  # pre-empted: saved, and the process ends as the signal asked
        say(f"{parser.prog}: {e}")
        return int(e.code)
    except KeyboardInterrupt:
        say(f"{parser.prog}: interrupted")
        return 130
    return 0


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text}")
    return value


def nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {text}")
    return value


def nonnegative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0; got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1]; got {text}")
    return value


LR_SCHEDULERS = {"constant": "constant", "constant_with_warmup": "constant", "linear": "linear", "cosine": "cosine"}
PRESET_HELP = ("architecture + recipe (default: %(default)s, as the Python API: 128x128, 17-frame clips; tiny: 16x16, "
               "5 frames, for tests; demo: 32x32, 9 frames; paper: MAGVIT-v2's size)")


def tracker_names(text: str) -> list[str]:
    """--report_to: one tracker, a comma-separated list, "all" (every one installed) or "none"."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    return [] if names == ["none"] else names


def add_training_flags(p: argparse.ArgumentParser, *, init_from: str, seed: str, num_frames: str,
                       compiled: str) -> None:
    """The flags both trainers share (stopping, resume, fine-tuning, batch, precision, tracking, the Hub, and the
    settings users know from diffusers' / accelerate's training scripts); the keyword arguments are the help texts that
    differ between them. Underscore spellings (diffusers') and dash spellings (ours) are the same flag. The few that
    mean nothing for one trainer are accepted by its parser (so --help lists them) and refused in one line."""
    tokenizer = compiled == "tokenizer"
    both = " (both optimizers: generator and discriminator)" if tokenizer else ""
    p.add_argument("--max-steps", "--max_train_steps", dest="max_steps", type=positive_int,
                   help="stop after this many updates (wins over --num_train_epochs)")
    p.add_argument("--num-epochs", "--num_train_epochs", dest="num_train_epochs", type=positive_int, metavar="N",
                   help="train for N passes over the training data: sets run.max_steps from the data size "
                        "(run.max_epochs; ignored when --max_train_steps is given, as in diffusers)")
    p.add_argument("--max-minutes", type=positive_float, help="stop (checkpoint + export) after this much time")
    p.add_argument("--schedule-horizon", choices=("max_steps", "max_minutes"),
                   help="what a cosine / linear LR decays over: --max-steps, or max_minutes: the steps that fit in "
                        "--max-minutes at the step rate measured after a fifth of them (run.schedule_horizon)")
    p.add_argument("--resume", "--resume_from_checkpoint", dest="resume", metavar="latest|PATH",
                   help="continue from the newest complete checkpoint or a checkpoint folder")
    p.add_argument("--init-from", "--pretrained_model_name_or_path", dest="init_from", metavar="PATH", help=init_from)
    p.add_argument("--seed", type=int, help=seed)
    p.add_argument("--batch-size", "--train_batch_size", dest="batch_size", type=positive_int,
                   help="clips per process per micro-batch")
    p.add_argument("--num-frames", type=positive_int, help=num_frames)
    p.add_argument("--resolution", type=positive_int, metavar="N",
                   help="frame size N x N of the tokenizer (tokenizer.image_size)" if tokenizer else
                   "(not for this trainer: clips take the frozen tokenizer's frame size)")
    p.add_argument("--learning-rate", "--learning_rate", dest="learning_rate", type=positive_float, metavar="LR",
                   help="peak learning rate" + both)
    p.add_argument("--lr-scheduler", "--lr_scheduler", dest="lr_scheduler", metavar="NAME",
                   help=f"LR after warmup{both}: constant (no warmup, as diffusers'), constant_with_warmup, linear or "
                        "cosine (decaying to optim.min_lr_ratio x LR at the last step)")
    p.add_argument("--lr-warmup-steps", "--lr_warmup_steps", dest="lr_warmup_steps", type=nonnegative_int,
                   metavar="N", help=f"linear warmup updates{both}")
    p.add_argument("--weight-decay", "--adam_weight_decay", dest="weight_decay", type=nonnegative_float,
                   metavar="W", help=f"AdamW decoupled weight decay on matrices and kernels{both}")
    p.add_argument("--max-grad-norm", "--max_grad_norm", dest="max_grad_norm", type=positive_float, metavar="N",
                   help=f"clip the global gradient norm{both}")
    p.add_argument("--gradient-accumulation-steps", "--gradient_accumulation_steps", dest="grad_accum",
                   type=positive_int, metavar="N", help="micro-batches per update (grad_accum)")
    p.add_argument("--use-ema", "--use_ema", dest="use_ema", action="store_true",
                   help="accepted for diffusers' scripts: the EMA is always on here and is what gets exported "
                        "(ema.beta, ema.update_after_step)")
    p.add_argument("--num-workers", "--dataloader_num_workers", dest="num_workers", type=nonnegative_int,
                   metavar="N", help="DataLoader worker processes (data.num_workers)")
    p.add_argument("--caption-column", "--caption_column", dest="caption_column", metavar="KEY",
                   help="(not for this trainer: it trains without captions)" if tokenizer else
                   "the metadata.jsonl key holding captions (data.caption_column; default: text, or caption)")
    p.add_argument("--validation-prompts", "--validation_prompts", dest="validation_prompts", nargs="+",
                   metavar="PROMPT", help="(not for this trainer: validation reconstructs held-out clips)" if tokenizer
                   else "prompts rendered to mp4 + gif at every validation (besides --sample-prompts)")
    p.add_argument("--checkpoint-every", "--checkpointing_steps", dest="checkpoint_every", type=positive_int,
                   metavar="N", help="checkpoint (and export) every N updates (run.checkpoint_every)")
    p.add_argument("--keep-last", "--checkpoints_total_limit", dest="keep_last", type=positive_int, metavar="N",
                   help="keep the newest N checkpoints (run.keep_last)")
    p.add_argument("--report-to", "--report_to", dest="report_to", type=tracker_names, metavar="TRACKERS",
                   help="experiment trackers besides metrics.jsonl (always written), through accelerate: tensorboard, "
                        "wandb, mlflow, comet_ml, aim, clearml, dvclive, ... (comma-separated), all (every one "
                        "installed) or none (run.report_to)")
    p.add_argument("--tracker-project-name", "--tracker_project_name", dest="tracker_project_name", metavar="NAME",
                   help="the trackers' project, e.g. the wandb project (run.tracker_project_name; default: magvit2)")
    p.add_argument("--logging-dir", "--logging_dir", dest="logging_dir", metavar="DIR",
                   help="where tensorboard (and other file-based trackers) write, relative to the run folder "
                        "(run.logging_dir; default: logs)")
    p.add_argument("--push-to-hub", "--push_to_hub", dest="push_to_hub", action="store_true", default=None,
                   help="upload the exported model to --hub_model_id at every checkpoint and at the end")
    p.add_argument("--hub-model-id", "--hub_model_id", dest="hub_model_id", metavar="OWNER/NAME",
                   help="the Hugging Face Hub repo of --push_to_hub (created if needed; token from `hf auth login` or "
                        "HF_TOKEN)")
    p.add_argument("--max-bad-fraction", "--max_bad_fraction", dest="max_bad_fraction", type=fraction,
                   metavar="F", help="stop when more than this fraction of the files cannot be read "
                   "(data.max_bad_fraction)")
    p.add_argument("--mixed-precision", "--mixed_precision", dest="mixed_precision",
                   choices=("no", "bf16", "fp16", "auto"),
                   help="autocast precision; auto: bf16 where the GPU or CPU (AMX, AVX512-BF16) computes in bf16 "
                   "natively, else no (default: the launcher's, e.g. accelerate launch --mixed_precision bf16)")
    p.add_argument("--dist-timeout-minutes", type=positive_float, metavar="M",
                   help="how long a process waits for the others (the process-group timeout; NCCL's default is 10) "
                   "and for rank 0's work, e.g. an index build, to show signs of life (run.dist_timeout_minutes)")
    p.add_argument("--allow-tf32", "--allow_tf32", dest="allow_tf32", action="store_true", default=None,
                   help="TF32 matmuls and convolutions on Ampere+ GPUs (run.allow_tf32)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help=f"torch.compile the {compiled} forward (run.compile; default: the recipe's; eager with a "
                   "warning where no C++ compiler is found)")
    p.add_argument("--gradient-checkpointing", "--gradient_checkpointing", dest="gradient_checkpointing",
                   action="store_true", default=None,
                   help=f"recompute the {compiled}'s block activations in the backward (less memory, ~30%% slower)")


def _refuse(args: argparse.Namespace, command: str, flags: dict[str, str]) -> None:
    """One line for a flag that means nothing for this trainer."""
    for dest, why in flags.items():
        if getattr(args, dest, None) is not None:
            raise ValueError(f"--{dest} does not apply to {command}: {why}")


def training_flag_overrides(args: argparse.Namespace, kind: str = "tokenizer") -> dict:
    """The config overrides given by `add_training_flags` flags (unset flags are left out); `kind` ("tokenizer" or
    "maskgit") says where the optimizer flags go (both optimizers of the GAN, or the transformer's) and which flags
    are refused."""
    if kind == "tokenizer":
        _refuse(args, "magvit2-train-tokenizer", {
            "validation_prompts": "the tokenizer is not text-conditioned; its validation reconstructs held-out clips "
                                  "(--val-data, or data.val_fraction of --data)",
            "caption_column": "the tokenizer trains without captions"})
        if args.resolution is not None and args.init_from is not None:
            raise ValueError("--resolution with --init-from: the architecture, frame size included, comes from the "
                             "--init-from tokenizer")
    else:
        _refuse(args, "magvit2-train-maskgit", {
            "resolution": "clips are cut to the frozen tokenizer's frame size (--tokenizer); train a tokenizer at "
                          "another size with magvit2-train-tokenizer --resolution N"})
    scheduler = None
    if args.lr_scheduler is not None:
        scheduler = LR_SCHEDULERS.get(args.lr_scheduler)
        if scheduler is None:
            raise ValueError(f"--lr_scheduler {args.lr_scheduler} is not supported; choose one of "
                             f"{', '.join(LR_SCHEDULERS)}")
        if args.lr_scheduler == "constant" and args.lr_warmup_steps:
            raise ValueError("--lr_scheduler constant has no warmup (as in diffusers); use constant_with_warmup with "
                             "--lr_warmup_steps")
    tracking: dict = {}
    if args.report_to is not None:  # the flag replaces every tracker setting of the recipe / YAML
        tracking.update(report_to=args.report_to, tensorboard=False, wandb_project=None)
    run_flags = (("max_steps", args.max_steps), ("max_minutes", args.max_minutes), ("seed", args.seed),
                 ("mixed_precision", args.mixed_precision), ("compile", args.compile),
                 ("gradient_checkpointing", args.gradient_checkpointing),
                 ("checkpoint_every", args.checkpoint_every), ("keep_last", args.keep_last),
                 ("max_epochs", args.num_train_epochs if args.max_steps is None else None),
                 ("allow_tf32", args.allow_tf32), ("tracker_project_name", args.tracker_project_name),
                 ("logging_dir", args.logging_dir), ("push_to_hub", args.push_to_hub),
                 ("hub_model_id", args.hub_model_id), ("dist_timeout_minutes", args.dist_timeout_minutes),
                 ("schedule_horizon", args.schedule_horizon))
    data_flags = (("batch_size", args.batch_size), ("num_frames", args.num_frames),
                  ("num_workers", args.num_workers), ("max_bad_fraction", args.max_bad_fraction),
                  ("caption_column", args.caption_column))
    out = {"run": {**{k: v for k, v in run_flags if v is not None}, **tracking},
           "data": {k: v for k, v in data_flags if v is not None}}
    if args.grad_accum is not None:
        out["grad_accum"] = args.grad_accum
    if kind == "tokenizer" and args.resolution is not None:
        out["tokenizer"] = {"image_size": [args.resolution, args.resolution]}
    optim = {k: v for k, v in (("lr", args.learning_rate), ("schedule", scheduler),
                                 ("warmup_steps", 0 if args.lr_scheduler == "constant" else args.lr_warmup_steps),
                                 ("weight_decay", args.weight_decay), ("max_grad_norm", args.max_grad_norm))
             if v is not None}
    if optim:
        out.update({name: dict(optim) for name in (("gen_optim", "disc_optim") if kind == "tokenizer" else ("optim",))})
    return out


def fit_and_report(trainer, exported: str) -> None:
    """Run `trainer.fit()` and print its summary (main process) with where the model was exported."""
    summary = trainer.fit()
    trainer.close()
    if trainer.is_main:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in summary.items() if isinstance(v, (int, float)))
        print(f"done: {shown}; {exported} at {trainer.run_dir / trainer.export_name}")
