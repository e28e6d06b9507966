"""How different are the videos one prompt gives? The check beside a sampling change that sharpens the draws.

`python -m benchmarks.diversity runs/exp/s0/judged-base runs/exp/s0/judged-base-t07 ...` reads folders the quality
harness judged (`benchmarks.quality`: `samples.jsonl` + the videos) and prints, per folder and prompt group (seen /
held-out), the mean RMS distance in 0-255 pixel values between every two videos of the same prompt, and how many pairs
that mean covers. Two draws of one prompt differ mostly in where the object starts and how it is drawn, so a sampler
that collapses to one video per prompt shows up as a fall of this number (wave 16: temperature 0.7 moved it by -3% to
+4%, docs/experiments.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
from collections import defaultdict
from pathlib import Path

import numpy as np


def within_prompt_distance(folder: str | Path) -> dict[str, tuple[float, int]]:
    """{"seen" / "held_out": (mean RMS distance between two videos of one prompt in [0, 255], pairs)} of a judged
    folder; (nan, 0) for a group with no prompt judged twice."""
    from trainers.data.video_io import read_video

    folder = Path(folder)
    videos: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
    for line in (folder / "samples.jsonl").read_text().splitlines():
        record = json.loads(line)
        clip = np.asarray(read_video(folder / record["file"]), dtype=np.float32)  # (t, h, w, 3) in [0, 255]
        videos[(record["group"], record["prompt"])].append(clip)
    out = {}
    for group in ("seen", "held_out"):
        dists = [float(np.sqrt(((a - b) ** 2).mean())) for (g, _), clips in videos.items() if g == group
                 for a, b in itertools.combinations(clips, 2)]
        out[group] = (float(np.mean(dists)) if dists else float("nan"), len(dists))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="folders with samples.jsonl, as benchmarks.quality writes them")
    args = p.parse_args(argv)
    print(f"# within-prompt distance (RMS, 0-255) | python {platform.python_version()} | {platform.machine()}")
    for folder in args.folders:
        d = within_prompt_distance(folder)
        print(f"{folder}: seen {d['seen'][0]:.2f} ({d['seen'][1]} pairs), held-out {d['held_out'][0]:.2f} "
              f"({d['held_out'][1]} pairs)")


if __name__ == "__main__":
    main()
