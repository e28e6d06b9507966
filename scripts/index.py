"""magvit2-index: probe every video/image of a dataset folder once, in parallel, into DIR/.magvit2/index.json (for a
folder we cannot write, a read-only mount say, into the per-user cache $MAGVIT2_INDEX_CACHE, default
~/.cache/magvit2/index/<hash of DIR's path>/, where every training run looks for it).

Every training run, on every rank and at every restart, reads this index instead of opening each file again; files
changed since are probed again and folders with added or removed files are rescanned (only new files are probed).
An interrupted build resumes: the index is written every --checkpoint-seconds and a rerun keeps what it holds.
"""

from __future__ import annotations

import argparse
import os
import sys

from scripts._cli import ArgumentParser, HelpFormatter, positive_float, positive_int, run


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="magvit2-index", description=__doc__, formatter_class=HelpFormatter,
                       epilog="Output: DIR/.magvit2/index.json, or the cache for a read-only DIR (path, size, mtime, "
                              "frames, fps, width, height, caption, and why a file is unusable); see README 'Dataset "
                              "format'. On a big folder, run it before a multi-GPU run.")
    p.add_argument("data", metavar="DIR", help="dataset folder (searched recursively)")
    p.add_argument("--index", metavar="PATH", help="where the index lives (default: DIR/.magvit2/index.json, or the "
                   "per-user cache when DIR cannot be written; a PATH given here must be passed to the dataset too)")
    p.add_argument("--workers", type=positive_int, default=min(8, os.cpu_count() or 1),
                   help="probing processes")
    p.add_argument("--rebuild", action="store_true", help="probe every file again (needed for an index built for "
                   "another folder, e.g. after moving the dataset)")
    p.add_argument("--checkpoint-seconds", type=positive_float, default=60.0,
                   help="write the partial index this often (an interrupted build resumes from it)")
    return p


def main_(args: argparse.Namespace) -> None:
    from pathlib import Path

    from trainers.data.index import DatasetIndex, build_index, default_index_path, index_path, read_index, summary

    path = Path(args.index) if args.index else index_path(args.data)
    previous = None
    if args.rebuild and path.exists():
        previous = DatasetIndex(Path(args.data).resolve(), [], {}, None, complete=False)  # reuse nothing
        if path == index_path(args.data) and path.is_file():
            path.unlink()  # our own place (.magvit2/ or the cache): a corrupt index there is replaced; else refused
    elif path.exists():
        previous = read_index(path, args.data)  # refuses a foreign or corrupt index with what to run
    elif default_index_path(args.data).is_file():  # a read-only folder's own index: start from its rows
        previous = read_index(default_index_path(args.data), args.data)
    index = build_index(args.data, path, workers=args.workers, processes=True, previous=previous,
                        checkpoint_seconds=args.checkpoint_seconds)
    info = summary(index)
    print(f"indexed {info['files']} files under {index.root} ({info['usable']} usable, {index.probed} probed now, "
          f"{info['files'] - index.probed} unchanged) -> {path}")
    for rel, why in info["unusable"][:20]:
        print(f"  unusable: {rel}: {why}")
    if len(info["unusable"]) > 20:
        print(f"  ... and {len(info['unusable']) - 20} more (all listed in {path})")


def main(argv: list[str] | None = None) -> int:
    return run(main_, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
