"""magvit2-train-tokenizer: train the MagViT2 video tokenizer on folders of videos and images."""

from __future__ import annotations

import argparse
import sys

from magvit2.presets import TOKENIZER_PRESETS
from scripts._cli import (
    PRESET_HELP,
    TRAINER_FLAGS,
    ArgumentParser,
    HelpFormatter,
    add_training_flags,
    fit_and_report,
    run,
    training_flag_overrides,
)
from trainers.configs import DEFAULT_PRESET, TokenizerTrainConfig, build_config


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="magvit2-train-tokenizer", description=__doc__,
                       formatter_class=HelpFormatter,
                       epilog="Config precedence: preset recipe < --config YAML < flags. Works under "
                              "`accelerate launch`. The EMA tokenizer is exported to RUN_DIR/tokenizer/.")
    p.add_argument("--data", "--train_data_dir", dest="data", nargs="+", required=True, metavar="DIR",
                   help="folder(s) of videos (mp4 webm avi mkv mpg mov gif) and images (jpg png webp), recursive; or "
                   "packed shards (magvit2-pack): a folder, an http(s):// or file:// URL, or a 'pipe:CMD {file}' spec")
    p.add_argument("--val-data", metavar="DIR", help="held-out folder for validation (default: data.val_fraction "
                   "of --data)")
    p.add_argument("--out", "--output_dir", dest="out", required=True, metavar="RUN_DIR",
                   help="run folder (checkpoints, samples, metrics)")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(TOKENIZER_PRESETS), help=PRESET_HELP)
    p.add_argument("--config", metavar="FILE.yaml", help="overrides: sections tokenizer, loss, data, run, ema, "
                   "gen_optim, disc_optim and keys disc_start_step, grad_accum")
    add_training_flags(p, init_from="fine-tune: start from a tokenizer folder, run folder or Hub repo id (weights "
                       "only; fresh optimizers, discriminator and schedule; its architecture replaces the preset's)",
                       seed="seed of weights, data order and augmentation",
                       num_frames="frames per training clip (1 + k*time_compression)", compiled="tokenizer")
    p.add_argument("--init-from-image", metavar="PATH", help="start from a tokenizer trained on still images "
                   "(--num-frames 1), inflated to video: each causal conv's temporal taps summed into its newest "
                   "one, so the video model starts as the image model on every frame (MAGVIT-v2); weights only, "
                   "as --init-from")
    p.add_argument("--decoder-only", action="store_true", help="train the decoder only: the encoder and the "
                   "quantizer's input projection stay frozen, so every clip keeps its codes (decoder fine-tuning of a "
                   "trained tokenizer, given with --init-from or --resume)")
    p.add_argument("--code-noise", type=float, metavar="SHARE", help="in training, redraw this share of each clip's "
                   "codes uniformly at random before decoding, so the decoder learns to draw clean frames from a "
                   "generator's imperfect codes (e.g. 0.2 with --decoder-only; default 0: off)")
    p.add_argument("--code-noise-clips", type=float, metavar="SHARE", help="with --code-noise: the share of each "
                   "batch's clips that get it; the others decode clean, which keeps the decoder's fidelity on clean "
                   "codes (default 1: every clip)")
    return p


def make_config(args: argparse.Namespace) -> TokenizerTrainConfig:
    overrides = training_flag_overrides(args)
    if args.decoder_only:
        overrides["decoder_only"] = True
    for key in ("code_noise", "code_noise_clips"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    return build_config("tokenizer", args.preset, args.config, overrides)


def train(args: argparse.Namespace) -> None:
    from trainers.tokenizer_trainer import TokenizerTrainer

    trainer = TokenizerTrainer(make_config(args), args.data, args.out, val_dir=args.val_data, resume=args.resume,
                               init_from=args.init_from, init_from_image=args.init_from_image, names=TRAINER_FLAGS)
    fit_and_report(trainer, "tokenizer")


def main(argv: list[str] | None = None) -> int:
    return run(train, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
