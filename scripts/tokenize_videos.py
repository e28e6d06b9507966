"""magvit2-tokenize: turn a folder of clips (with captions) into code shards for fast stage-two training.

Rerun the same command to resume a killed run (finished shards are kept); run it under `torchrun --nproc_per_node N`
to split the shards over N processes (rank 0 merges the index)."""

from __future__ import annotations

import argparse
import os
import sys

from scripts._cli import ArgumentParser, HelpFormatter, positive_int, run


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="magvit2-tokenize", description=__doc__,
                       formatter_class=HelpFormatter,
                       epilog="Output: CODES_DIR/index.json + codes-NNNNN.safetensors (int16|int32 (n, t', h', w')) + "
                              "codes-NNNNN.jsonl (path, caption per clip).")
    p.add_argument("--tokenizer", required=True, metavar="PATH",
                   help="a tokenizer folder, a run or pipeline folder holding one, or a Hugging Face Hub repo id")
    p.add_argument("--data", required=True, metavar="DIR", help="folder of videos/images; captions from "
                   "metadata.jsonl or NAME.txt sidecars (empty caption when none)")
    p.add_argument("--out", required=True, metavar="CODES_DIR", help="new folder for the code shards")
    p.add_argument("--num-frames", type=positive_int, help="frames per clip, 1 + k*f (default: 1 + 4*f, e.g. 17)")
    p.add_argument("--epochs", type=positive_int, default=1, help="clips per file: 1 = center crop from frame 0; "
                   "E > 1 = E random crops (seeded)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="clips encoded per forward pass")
    p.add_argument("--shard-size", type=positive_int, default=4096, help="clips per shard file")
    p.add_argument("--max-bad-fraction", type=float, default=0.05, help="fail when more files than this are "
                   "unreadable or too short (they are skipped and listed in index.json otherwise)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random crops (with --epochs > 1)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    return p


def main_(args: argparse.Namespace) -> None:
    from trainers.commands.tokenize_folder import tokenize_folder

    index = tokenize_folder(args.tokenizer, args.data, args.out, num_frames=args.num_frames, epochs=args.epochs,
                            batch_size=args.batch_size, shard_size=args.shard_size, seed=args.seed,
                            device=args.device, max_bad_fraction=args.max_bad_fraction)
    if index.get("world_size", 1) > 1 and os.environ.get("RANK", "0") != "0":
        return  # rank 0 reports for all
    print(f"wrote {index['num_clips']} clips of codes {tuple(index['latent_shape'])} to {args.out} "
          f"({len(index['skipped'])} files skipped)")


def main(argv: list[str] | None = None) -> int:
    return run(main_, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
