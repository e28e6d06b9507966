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

# Errors a user can cause (bad paths, values or files; a missing optional extra): exit 2, one line. Malformed
# configs, metadata, shard indexes and model folders raise ValueError naming the file and the key (data that will
# not load: trainers.data.folders.DataQualityError, a ValueError); malformed checkpoints CheckpointError; outputs
# that would overwrite a user's file FileExistsError. Anything else is a bug and keeps its traceback. A run stopped
# by the non-finite guard exits 1 with its one-line reason.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError,
                                               FileExistsError, IsADirectoryError, CheckpointError, ImportError)


# how the trainers' errors name their inputs when called from these commands (the Python API names its keywords)
TRAINER_FLAGS = ArgNames(run_dir="--out", resume="--resume", init_from="--init-from", data="--data",
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


def run(main: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser,
        argv: Sequence[str] | None = None) -> int:
    """Parse, call `main(args)`, map user errors to exit code 2 with one line."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parser.parse_args(argv)
    try:
        main(args)
    except USER_ERRORS as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2
    except OSError as e:
        if not disk_full(e):  # a full disk anywhere (metrics, samples, outputs): one line too
            raise
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"{parser.prog}: stopped: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
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


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1]; got {text}")
    return value


REPORT_TO = ("tensorboard", "wandb", "all", "none")


def add_training_flags(p: argparse.ArgumentParser, *, init_from: str, seed: str, num_frames: str,
                       compiled: str) -> None:
    """The flags both trainers share (stopping, resume, fine-tuning, batch, precision, the settings users know from
    diffusers' / accelerate's training scripts); the keyword arguments are the help texts that differ between them.
    Underscore spellings (diffusers') and dash spellings (ours) are the same flag."""
    p.add_argument("--max-steps", "--max_train_steps", dest="max_steps", type=positive_int,
                   help="stop after this many updates")
    p.add_argument("--max-minutes", type=positive_float, help="stop (checkpoint + export) after this much time")
    p.add_argument("--resume", "--resume_from_checkpoint", dest="resume", metavar="latest|PATH",
                   help="continue from the newest complete checkpoint or a checkpoint folder")
    p.add_argument("--init-from", metavar="PATH", help=init_from)
    p.add_argument("--seed", type=int, help=seed)
    p.add_argument("--batch-size", "--train_batch_size", dest="batch_size", type=positive_int,
                   help="clips per process per micro-batch")
    p.add_argument("--num-frames", type=positive_int, help=num_frames)
    p.add_argument("--learning-rate", "--learning_rate", dest="learning_rate", type=positive_float, metavar="LR",
                   help="peak learning rate" + (" of both optimizers (generator and discriminator)"
                                                if compiled == "tokenizer" else ""))
    p.add_argument("--gradient-accumulation-steps", "--gradient_accumulation_steps", dest="grad_accum",
                   type=positive_int, metavar="N", help="micro-batches per update (grad_accum)")
    p.add_argument("--num-workers", "--dataloader_num_workers", dest="num_workers", type=nonnegative_int,
                   metavar="N", help="DataLoader worker processes (data.num_workers)")
    p.add_argument("--checkpoint-every", "--checkpointing_steps", dest="checkpoint_every", type=positive_int,
                   metavar="N", help="checkpoint (and export) every N updates (run.checkpoint_every)")
    p.add_argument("--keep-last", "--checkpoints_total_limit", dest="keep_last", type=positive_int, metavar="N",
                   help="keep the newest N checkpoints (run.keep_last)")
    p.add_argument("--report-to", "--report_to", dest="report_to", choices=REPORT_TO,
                   help="trackers besides metrics.jsonl (always written): run.tensorboard / run.wandb_project")
    p.add_argument("--tracker-project-name", "--tracker_project_name", dest="tracker_project_name", metavar="NAME",
                   help="the wandb project with --report_to wandb|all (default: magvit2)")
    p.add_argument("--max-bad-fraction", "--max_bad_fraction", dest="max_bad_fraction", type=fraction,
                   metavar="F", help="stop when more than this fraction of the files cannot be read "
                   "(data.max_bad_fraction)")
    p.add_argument("--mixed-precision", "--mixed_precision", dest="mixed_precision", choices=("no", "bf16", "fp16"),
                   help="autocast precision (default: the launcher's, e.g. accelerate launch --mixed_precision bf16)")
    p.add_argument("--dist-timeout-minutes", type=positive_float, metavar="M",
                   help="how long a process waits for the others (the process-group timeout; NCCL's default is 10) "
                   "and for rank 0's work, e.g. an index build, to show signs of life (run.dist_timeout_minutes)")
    p.add_argument("--compile", action="store_true", default=None, help=f"torch.compile the {compiled} forward")
    p.add_argument("--gradient-checkpointing", "--gradient_checkpointing", dest="gradient_checkpointing",
                   action="store_true", default=None,
                   help=f"recompute the {compiled}'s block activations in the backward (less memory, ~30%% slower)")


def training_flag_overrides(args: argparse.Namespace, kind: str = "tokenizer") -> dict:
    """The config overrides given by `add_training_flags` flags (unset flags are left out); `kind` ("tokenizer" or
    "maskgit") says where --learning_rate goes (both optimizers of the GAN, or the transformer's)."""
    report_to, project = getattr(args, "report_to", None), getattr(args, "tracker_project_name", None)
    if project is not None and report_to not in ("wandb", "all"):
        raise ValueError("--tracker_project_name names the wandb project: pass it with --report_to wandb (or all)")
    tracking: dict = {}
    if report_to is not None:
        tracking["tensorboard"] = report_to in ("tensorboard", "all")
        tracking["wandb_project"] = (project or "magvit2") if report_to in ("wandb", "all") else None
    run_flags = (("max_steps", args.max_steps), ("max_minutes", args.max_minutes), ("seed", args.seed),
                 ("mixed_precision", args.mixed_precision), ("compile", args.compile),
                 ("gradient_checkpointing", args.gradient_checkpointing),
                 ("checkpoint_every", args.checkpoint_every), ("keep_last", args.keep_last),
                 ("dist_timeout_minutes", args.dist_timeout_minutes))
    data_flags = (("batch_size", args.batch_size), ("num_frames", args.num_frames),
                  ("num_workers", args.num_workers), ("max_bad_fraction", args.max_bad_fraction))
    out = {"run": {**{k: v for k, v in run_flags if v is not None}, **tracking},
           "data": {k: v for k, v in data_flags if v is not None}}
    if args.grad_accum is not None:
        out["grad_accum"] = args.grad_accum
    if args.learning_rate is not None:
        optims = ("gen_optim", "disc_optim") if kind == "tokenizer" else ("optim",)
        out.update({name: {"lr": args.learning_rate} for name in optims})
    return out


def fit_and_report(trainer, exported: str) -> None:
    """Run `trainer.fit()` and print its summary (main process) with where the model was exported."""
    summary = trainer.fit()
    trainer.close()
    if trainer.is_main:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in summary.items() if isinstance(v, (int, float)))
        print(f"done: {shown}; {exported} at {trainer.run_dir / trainer.export_name}")
