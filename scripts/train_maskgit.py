"""magvit2-train-maskgit: train the text-conditioned MaskGit transformer (stage two) on a frozen tokenizer's codes."""

from __future__ import annotations

import argparse
import sys

from scripts._cli import (
    TRAINER_FLAGS,
    ArgumentParser,
    HelpFormatter,
    add_training_flags,
    fit_and_report,
    positive_float,
    positive_int,
    run,
    training_flag_overrides,
)
from trainers.configs import DEFAULT_PRESET, MaskGitTrainConfig, build_config
from trainers.recipes import MASKGIT_RECIPES


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="magvit2-train-maskgit", description=__doc__,
                       formatter_class=HelpFormatter,
                       epilog="Config precedence: preset recipe < --config YAML < flags. Works under `accelerate "
                              "launch`. The EMA pipeline is exported to RUN_DIR/pipeline/ (magvit2-generate --model "
                              "RUN_DIR).")
    p.add_argument("--tokenizer", required=True, metavar="PATH", help="frozen tokenizer: a tokenizer folder, a run or "
                   "pipeline folder holding one, or a Hugging Face Hub repo id")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--codes", metavar="CODES_DIR", nargs="+", help="code shards written by magvit2-tokenize "
                        "(fast path); several folders of one tokenizer train as one set")
    source.add_argument("--data", "--train_data_dir", dest="data", nargs="+", metavar="DIR",
                        help="captioned clip folder(s), tokenized on the fly "
                        "(captions from metadata.jsonl or NAME.txt sidecars), or packed shards (a folder, URL or "
                        "'pipe:CMD {file}' spec)")
    val = p.add_mutually_exclusive_group()
    val.add_argument("--val-codes", metavar="DIR", help="held-out code shards (default: data.val_fraction of the "
                     "training files)")
    val.add_argument("--val-data", metavar="DIR", help="held-out captioned clip folder")
    p.add_argument("--out", "--output_dir", dest="out", required=True, metavar="RUN_DIR",
                   help="run folder (checkpoints, samples, metrics)")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(MASKGIT_RECIPES),
                   help="model size + recipe (default: %(default)s, as the Python API: a 12 x 768 transformer; tiny: "
                        "2 x 32, for tests; demo: 4 x 128; paper: 24 x 1024)")
    p.add_argument("--config", metavar="FILE.yaml", help="overrides: keys maskgit, text_encoder, data, run, ema, "
                   "optim, grad_accum, mask_schedule, cond_drop_prob, label_smoothing, self_cond_prob, "
                   "val_mask_ratios, pipeline")
    p.add_argument("--text-encoder", metavar="SPEC", help="'default' (bundled MiniLM), 'tiny' / 'tiny:DIM' (tests "
                   "only), or a Hugging Face name or local folder (default: the preset's)")
    p.add_argument("--sample-prompts", metavar="FILE", help="prompts (one per line) rendered to mp4 + gif at every "
                   "validation")
    add_training_flags(p, init_from="fine-tune: start from a pipeline, MaskGit run or checkpoint folder, "
                       "or a Hub repo id (transformer weights only; fresh optimizer and schedule)",
                       seed="seed of weights, data order, masks and samples",
                       num_frames="with --data: frames per clip (1 + k*time_compression)", compiled="transformer")
    lora = p.add_argument_group("LoRA (needs the [lora] extra; exports RUN_DIR/lora/ instead of RUN_DIR/pipeline/)")
    lora.add_argument("--lora-rank", type=positive_int, metavar="R",
                      help="train a rank-R LoRA adapter on the --init-from pipeline, whose weights stay frozen "
                           "(aMUSEd: 16)")
    lora.add_argument("--lora-alpha", type=positive_float, metavar="A", help="adapter scale A/R (default: 2R)")
    lora.add_argument("--lora-targets", metavar="REGEX",
                      help="the linear layers that get adapters: 'attention' (to_q, to_k, to_v, to_out of self- and "
                           "cross-attention; the default), 'attention+ff' (and the feed-forward's ff.0.proj, ff.2), "
                           r"or a regex over full module names, e.g. '.*\.(to_q|to_v)$'")
    lora.add_argument("--lora-dropout", type=float, metavar="P", help="dropout on the adapters' input (default 0)")
    return p


def make_config(args: argparse.Namespace) -> MaskGitTrainConfig:
    flags = training_flag_overrides(args, "maskgit")
    if args.text_encoder is not None:
        flags["text_encoder"] = args.text_encoder
    extra = {k: v for k, v in (("alpha", args.lora_alpha), ("targets", args.lora_targets),
                               ("dropout", args.lora_dropout)) if v is not None}
    if args.lora_rank is not None:
        flags["lora"] = {"rank": args.lora_rank, **extra}
    elif extra:
        raise ValueError(f"--lora-{next(iter(extra))} needs --lora-rank R (LoRA is off without it)")
    return build_config("maskgit", args.preset, args.config, flags)


def train(args: argparse.Namespace) -> None:
    from trainers.data.captions import read_prompt_file
    from trainers.maskgit_trainer import MaskGitTrainer

    prompts = args.sample_prompts
    if args.validation_prompts:  # diffusers' flag: prompts given inline, after those of --sample-prompts
        prompts = [*(read_prompt_file(prompts, "--sample-prompts") if prompts else []), *args.validation_prompts]
    trainer = MaskGitTrainer(make_config(args), args.tokenizer, args.out, codes_dir=args.codes, data_dirs=args.data,
                             val_codes_dir=args.val_codes, val_data_dir=args.val_data, resume=args.resume,
                             init_from=args.init_from, sample_prompts=prompts, names=TRAINER_FLAGS)
    fit_and_report(trainer, "LoRA adapter" if trainer.lora else "pipeline")


def main(argv: list[str] | None = None) -> int:
    return run(train, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
