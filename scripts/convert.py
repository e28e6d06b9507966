"""magvit2-convert: turn released tokenizer weights into a tokenizer folder that every magvit2 command loads."""

from __future__ import annotations

import argparse
import sys

from magvit2.presets import OPEN_MAGVIT2_PRESETS
from scripts._cli import ArgumentParser, HelpFormatter, run


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="magvit2-convert", description=__doc__, formatter_class=HelpFormatter)
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    o = formats.add_parser(
        "open-magvit2", formatter_class=HelpFormatter,
        help="an Open-MAGVIT2 (TencentARC SEED-Voken) video tokenizer checkpoint",
        description="Convert an Open-MAGVIT2 video tokenizer checkpoint exactly (same codes, same reconstructions).",
        epilog="CKPT: a Lightning .ckpt (state_dict with encoder.*, decoder.*; loss.* is ignored; EMA copies under "
               "model_ema.*), a bare state dict saved with torch.save, or .safetensors. Pickle files are read with "
               "torch.load(weights_only=True) only.")
    o.add_argument("checkpoint", metavar="CKPT", help="checkpoint file (.ckpt, .pt, .pth or .safetensors)")
    o.add_argument("out", metavar="OUT_DIR", help="new tokenizer folder (config.json + model.safetensors)")
    o.add_argument("--ema", action="store_true", help="convert the EMA weights (model_ema.*), not the online ones")
    arch = o.add_mutually_exclusive_group()
    arch.add_argument("--preset", choices=sorted(OPEN_MAGVIT2_PRESETS),
                      help="architecture (default: video, their released 17x128x128 -> 5x16x16 model)")
    arch.add_argument("--config", metavar="JSON", help="architecture from a JSON file: their {\"ddconfig\": {...}, "
                      "\"n_embed\": N} or our OpenMagvit2Config fields")
    return p


def main_(args: argparse.Namespace) -> None:
    from trainers.commands.convert import convert_open_magvit2

    summary = convert_open_magvit2(args.checkpoint, args.out, ema=args.ema, preset=args.preset,
                                   config_path=args.config)
    t, h, w = summary["latent_shape"]
    print(f"wrote {summary['out']}: Open-MAGVIT2 tokenizer{' (EMA weights)' if args.ema else ''}, "
          f"{summary['num_parameters']:,} parameters, {summary['codebook_size']} codes; "
          f"{summary['num_frames']} frames -> {t}x{h}x{w} codes")


def main(argv: list[str] | None = None) -> int:
    return run(main_, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
