"""Build the demo datasets: moving digits (text-to-video) and real photo/video clips (tokenizer).

    python -m scripts.build_demo_data --out data/demo [--size 32] [--frames 17] [--seed 0]
        [--clips-per-pair 40] [--debian-clips DIR] [--force]

Writes data/demo/digits/{train,val,heldout}, data/demo/tokenizer/{train,val} and data/demo/manifest.json; a second
run with the same settings does nothing. Get the optional Debian clips with ``scripts/fetch_demo_clips.sh DIR``.
"""

from __future__ import annotations

import argparse
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line on stderr, exit 2, no usage block
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _Parser(prog="build_demo_data", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder, e.g. data/demo")
    p.add_argument("--size", type=int, default=32, help="frame height = width (default 32)")
    p.add_argument("--frames", type=int, default=17, help="frames per clip, 1 + 4k (default 17)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clips-per-pair", type=int, default=40, help="train clips per seen (digit, direction) pair")
    p.add_argument("--val-clips-per-pair", type=int, default=4)
    p.add_argument("--heldout-clips-per-pair", type=int, default=8)
    p.add_argument("--clips-per-photo", type=int, default=12, help="tokenizer train clips per photo")
    p.add_argument("--speed-words", action="store_true", help='vary speed and caption it ("slowly"/"quickly")')
    p.add_argument("--debian-clips", default=None, help="folder filled by scripts/fetch_demo_clips.sh (optional)")
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--force", action="store_true", help="rebuild even if the manifest matches")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from trainers.demo import DigitDataConfig, PhotoDataConfig, build_demo_data

    try:
        digits = DigitDataConfig(
            seed=args.seed,
            size=args.size,
            num_frames=args.frames,
            clips_per_pair=args.clips_per_pair,
            val_clips_per_pair=args.val_clips_per_pair,
            heldout_clips_per_pair=args.heldout_clips_per_pair,
            speed_words=args.speed_words,
        )
        photos = PhotoDataConfig(
            seed=args.seed, size=args.size, num_frames=args.frames, fps=args.fps, clips_per_photo=args.clips_per_photo
        )
        result = build_demo_data(args.out, digits, photos, debian_dir=args.debian_clips, force=args.force)
    except (ValueError, FileNotFoundError) as exc:
        print(f"build_demo_data: error: {exc}", file=sys.stderr)
        return 2
    state = "already built (same settings)" if result["skipped"] else "built"
    print(f"{args.out}: {state}")
    for group, counts in result["counts"].items():
        line = ", ".join(f"{split} {n}" for split, n in counts.items())
        print(f"  {group}: {line} clips ({result['seconds'][group]:.1f} s)")
    if result["settings"]["debian_clips"]:
        print(f"  Debian clips: {', '.join(result['settings']['debian_clips'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
