"""magvit2-pack: pack a folder of videos (and images) into webdataset tar shards that training reads by random access.

OUT receives shard-00000.tar, ... (members <key>.mp4|.png|..., <key>.txt caption, <key>.json facts) and shards.json
(every member's offset and size), written last. Train on it with `--data OUT`, like on the folder itself.
"""

from __future__ import annotations

import argparse
import os
import sys

from scripts._cli import ArgumentParser, HelpFormatter, positive_int, run


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="magvit2-pack", description=__doc__, formatter_class=HelpFormatter,
                       epilog="Unreadable files are left out and listed; see README 'Dataset format'.")
    p.add_argument("data", metavar="DIR", help="dataset folder (searched recursively; captions from metadata.jsonl "
                   "or NAME.txt)")
    p.add_argument("out", metavar="OUT", help="new (or empty) folder for the shards")
    p.add_argument("--shard-size", type=positive_int, default=1000, metavar="N", help="samples per shard")
    p.add_argument("--include-images", action="store_true", help="pack images too (as 1-frame samples)")
    p.add_argument("--workers", type=positive_int, default=min(8, os.cpu_count() or 1),
                   help="threads probing files the dataset index lacks")
    return p


def main_(args: argparse.Namespace) -> None:
    from trainers.commands.pack import pack_folder

    result = pack_folder(args.data, args.out, shard_size=args.shard_size, include_images=args.include_images,
                         workers=args.workers)
    print(f"packed {result['samples']} samples into {len(result['shards'])} shards -> {result['manifest']} "
          f"({len(result['skipped'])} unusable files left out)")
    for rel, why in result["skipped"][:20]:
        print(f"  skipped: {rel}: {why}")
    if len(result["skipped"]) > 20:
        print(f"  ... and {len(result['skipped']) - 20} more (all listed in {result['manifest']})")


def main(argv: list[str] | None = None) -> int:
    return run(main_, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
