"""magvit2-train-tokenizer: train the MagViT2 video tokenizer on folders of videos and images."""

from __future__ import annotations

import argparse
import sys

from magvit2.presets import TOKENIZER_PRESETS
from scripts._cli import ArgumentParser, HelpFormatter, positive_float, positive_int, run
from trainers.configs import TokenizerTrainConfig, from_dict, load_yaml, merge, to_dict
from trainers.engine import crash_hook
from trainers.recipes import TOKENIZER_RECIPES


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="magvit2-train-tokenizer", description=__doc__,
                       formatter_class=HelpFormatter,
                       epilog="Config precedence: preset recipe < --config YAML < flags. Works under "
                              "`accelerate launch`. The EMA tokenizer is exported to RUN_DIR/tokenizer/.")
    p.add_argument("--data", nargs="+", required=True, metavar="DIR",
                   help="folder(s) of videos (mp4 webm avi mkv mpg mov gif) and images (jpg png webp), recursive")
    p.add_argument("--val-data", metavar="DIR", help="held-out folder for validation (default: data.val_fraction "
                   "of --data)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (checkpoints, samples, metrics)")
    p.add_argument("--preset", default="tiny", choices=sorted(TOKENIZER_PRESETS), help="architecture + recipe")
    p.add_argument("--config", metavar="FILE.yaml", help="overrides: sections tokenizer, loss, data, run, ema, "
                   "gen_optim, disc_optim and keys disc_start_step, grad_accum")
    p.add_argument("--max-steps", type=positive_int, help="stop after this many updates")
    p.add_argument("--max-minutes", type=positive_float, help="stop (checkpoint + export) after this much time")
    p.add_argument("--resume", metavar="latest|PATH", help="continue from the newest complete checkpoint or a "
                   "checkpoint folder")
    p.add_argument("--init-from", metavar="PATH", help="fine-tune: start from a tokenizer folder or run folder "
                   "(weights only; fresh optimizers, discriminator and schedule)")
    p.add_argument("--seed", type=int, help="seed of weights, data order and augmentation")
    p.add_argument("--batch-size", type=positive_int, help="clips per process per micro-batch")
    p.add_argument("--num-frames", type=positive_int, help="frames per training clip (1 + k*time_compression)")
    p.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), help="autocast precision")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the tokenizer forward")
    p.add_argument("--_test-crash-at", type=int, help=argparse.SUPPRESS)
    p.add_argument("--_test-break-restore", choices=("optimizer", "sampler"), help=argparse.SUPPRESS)
    return p


def make_config(args: argparse.Namespace) -> TokenizerTrainConfig:
    config = merge(to_dict(TokenizerTrainConfig()), {"preset": args.preset, **TOKENIZER_RECIPES[args.preset]})
    if args.config:
        config = merge(config, load_yaml(args.config))
    flags = {"run": {k: v for k, v in (("max_steps", args.max_steps), ("max_minutes", args.max_minutes),
                                       ("seed", args.seed), ("mixed_precision", args.mixed_precision),
                                       ("compile", args.compile)) if v is not None},
             "data": {k: v for k, v in (("batch_size", args.batch_size), ("num_frames", args.num_frames))
                      if v is not None}}
    return from_dict(TokenizerTrainConfig, merge(config, flags))


def train(args: argparse.Namespace) -> None:
    from trainers.tokenizer_trainer import TokenizerTrainer

    hooks = [crash_hook(args._test_crash_at)] if args._test_crash_at is not None else []
    trainer = TokenizerTrainer(make_config(args), args.data, args.out, val_dir=args.val_data, resume=args.resume,
                               init_from=args.init_from, hooks=hooks, break_restore=args._test_break_restore)
    summary = trainer.fit()
    if trainer.is_main:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in summary.items() if isinstance(v, (int, float)))
        print(f"done: {shown}; tokenizer at {trainer.run_dir / 'tokenizer'}")


def main(argv: list[str] | None = None) -> int:
    return run(train, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
