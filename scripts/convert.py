"""magvit2-convert: turn released weights into files every magvit2 command loads: an Open-MAGVIT2 tokenizer into a
tokenizer folder, the TorchScript I3D of the common FVD code into magvit2-evaluate's --i3d-weights."""

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
    i = formats.add_parser(
        "i3d", formatter_class=HelpFormatter,
        help="the TorchScript Inception-I3D of the common FVD code (i3d_torchscript.pt); LOADING IT RUNS ITS CODE",
        description="Convert the TorchScript Inception-I3D used by the common FVD code (i3d_torchscript.pt of "
                    "StyleGAN-V, DIGAN and many published FVD tables) into a safetensors state dict for "
                    "magvit2-evaluate --i3d-weights, once. WARNING: loading a TorchScript file runs the code inside it "
                    "(torch.jit.load); only convert a file you trust. Nothing else in magvit2 loads TorchScript; the "
                    "output is plain tensors, and records the source file's sha256 in its metadata.",
        epilog="The weights are matched by structure (convolutions and batch norms in Inception-I3D's forward order, "
               "every shape checked), then verified: the TorchScript model's own features (return_features=True) "
               "and the converted ones must agree on random 16x224x224 clips, raw and through its rescale/resize "
               "preprocessing, or nothing is written. The output gives the 400-d logits features published FVDs "
               "use: magvit2-evaluate --i3d-weights OUT.safetensors --fvd-frames 16.")
    i.add_argument("torchscript", metavar="FILE", help="the TorchScript file, e.g. i3d_torchscript.pt")
    i.add_argument("out", metavar="OUT.safetensors", help="new weights file")
    i.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    i.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the feature check (for a module whose forward differs from i3d_torchscript.pt's)")
    return p


def main_(args: argparse.Namespace) -> None:
    if args.format == "i3d":
        from trainers.commands.convert_i3d import convert_i3d_torchscript

        summary = convert_i3d_torchscript(args.torchscript, args.out, overwrite=args.overwrite, check=args.verify)
        checks = summary["checks"]
        print(f"wrote {summary['out']}: Inception-I3D, {summary['tensors']} tensors, from {args.torchscript} (sha256 "
              f"{summary['source_sha256']}); "
              + ("features verified: max relative difference "
                 f"{max(checks.values()):.1e}" if checks else "features NOT verified (--no-verify)"))
        return
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
