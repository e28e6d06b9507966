"""magvit2-reconstruct: reconstruct videos/images with a trained tokenizer; write mp4s and PSNR/SSIM metrics."""

from __future__ import annotations

import argparse
import sys

from scripts._cli import ArgumentParser, HelpFormatter, positive_int, run


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="magvit2-reconstruct", description=__doc__,
                       formatter_class=HelpFormatter,
                       epilog="Inputs are resized (short side) and center-cropped to the tokenizer's image size. "
                              "Videos use their first frames: --num-frames, else the longest 1 + k*f up to the "
                              "tokenizer's training clip length (recorded in its folder by magvit2-train-tokenizer; "
                              "1 + 8f for folders without it), taking every --frame-stride-th frame (default: the "
                              "training stride, else 1).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video or image files")
    p.add_argument("--tokenizer", required=True, metavar="PATH",
                   help="a tokenizer folder, a run or pipeline folder holding one, or a Hugging Face Hub repo id")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="where <name>.mp4 and metrics.json go")
    p.add_argument("--num-frames", type=positive_int, help="frames per clip (1 + k*f; default: the tokenizer's "
                   "training clip length when the clip is long enough)")
    p.add_argument("--frame-stride", type=positive_int, help="take every n-th frame (default: the tokenizer's "
                   "training stride, else 1)")
    p.add_argument("--lossless", action="store_true", help="lossless H.264 (yuv444p, crf 0) instead of crf 18")
    p.add_argument("--side-by-side", action="store_true", help="write original | reconstruction")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier outputs of the same names in --out-dir "
                   "(never an input file)")
    return p


def main_(args: argparse.Namespace) -> None:
    from trainers.commands.reconstruct import reconstruct_files

    metrics = reconstruct_files(args.tokenizer, args.inputs, args.out_dir, num_frames=args.num_frames,
                                lossless=args.lossless, side_by_side=args.side_by_side, device=args.device,
                                overwrite=args.overwrite, frame_stride=args.frame_stride)
    for clip in metrics["clips"]:
        print(f"{clip['input']}: {clip['frames']} frames, PSNR {clip['psnr_db']:.2f} dB, SSIM {clip['ssim']:.3f}")
    print(f"mean PSNR {metrics['mean_psnr_db']:.2f} dB, mean SSIM {metrics['mean_ssim']:.3f} (on [0, 1]) -> "
          f"{args.out_dir}/metrics.json")


def main(argv: list[str] | None = None) -> int:
    return run(main_, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
