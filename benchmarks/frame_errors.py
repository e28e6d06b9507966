"""Where generated videos lose frame consistency: which frames the judge reads as another digit, and which digit.

`python -m benchmarks.frame_errors --prompts runs/exp/data/digits/prompts.json runs/exp/maskgit-x/judged ...`
reads the `samples.jsonl` that `trainers.demo.report.generate_and_judge` writes into each judged folder (the demo's
`samples/`, the quality harness's `judged*` folders) and prints, per prompt group (seen, held-out): how many videos
are frame-inconsistent; the wrong frames by video frame and by the latent frame that decodes them (the causal
tokenizer's first latent frame is video frame 0, each later one `--time-compression` frames); how many frames each
inconsistent video gets wrong; the most frequent (majority digit, wrong digit) pairs; and whether the wrong digit is
one the training clips show moving in the prompt's direction, against what a wrong digit drawn uniformly from the
other nine would give (a model that fills frames from the direction's usual digits scores above that chance).
A wrong frame is one whose judged digit differs from the video's majority digit.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path


def latent_frame(index: int, time_compression: int) -> int:
    """The latent frame of a causal video tokenizer that decodes video frame `index` (0 alone, then blocks)."""
    return 0 if index == 0 else (index - 1) // time_compression + 1


def frame_errors(records: Iterable[dict], seen_pairs: set[tuple[int, str]], time_compression: int = 4) -> dict:
    """Counts over judged records (`frame_digits`, `frame_consistent`, `direction`), as the module docstring says."""
    out = {"videos": 0, "inconsistent": 0, "by_frame": Counter(), "by_latent_frame": Counter(),
           "wrong_per_video": Counter(), "pairs": Counter(), "wrong_frames": 0, "seen_with_direction": 0,
           "chance_seen_with_direction": 0.0}
    for r in records:
        out["videos"] += 1
        digits = r["frame_digits"]
        if r["frame_consistent"] or not digits:
            continue
        out["inconsistent"] += 1
        majority = Counter(digits).most_common(1)[0][0]
        wrong = [i for i, d in enumerate(digits) if d != majority]
        out["wrong_per_video"][len(wrong)] += 1
        others = [d for d in range(10) if d != majority]
        chance = sum((d, r["direction"]) in seen_pairs for d in others) / len(others)
        for i in wrong:
            out["by_frame"][i] += 1
            out["by_latent_frame"][latent_frame(i, time_compression)] += 1
            out["pairs"][(majority, digits[i])] += 1
            out["wrong_frames"] += 1
            out["seen_with_direction"] += (digits[i], r["direction"]) in seen_pairs
            out["chance_seen_with_direction"] += chance
    return out


def report(name: str, c: dict) -> str:
    n = max(c["wrong_frames"], 1)
    return "\n".join([
        f"{name}: {c['inconsistent']} of {c['videos']} videos frame-inconsistent, {c['wrong_frames']} wrong frames",
        f"  wrong frames by video frame: {dict(sorted(c['by_frame'].items()))}",
        f"  by latent frame: {dict(sorted(c['by_latent_frame'].items()))}",
        f"  wrong frames per inconsistent video: {dict(sorted(c['wrong_per_video'].items()))}",
        f"  most frequent (majority, wrong) digits: {c['pairs'].most_common(8)}",
        f"  wrong digit seen moving the prompt's direction in training: {100 * c['seen_with_direction'] / n:.1f}% "
        f"(uniform over the other nine digits: {100 * c['chance_seen_with_direction'] / n:.1f}%)"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("judged", nargs="+", type=Path, help="folders holding a samples.jsonl")
    p.add_argument("--prompts", type=Path, required=True, help="the data's digits/prompts.json (its seen pairs)")
    p.add_argument("--time-compression", type=int, default=4)
    a = p.parse_args(argv)
    prompts = json.loads(a.prompts.read_text())
    seen_pairs = {(q["digit"], q["direction"]) for q in prompts["seen"]}
    records = [json.loads(line) for folder in a.judged
               for line in (folder / "samples.jsonl").read_text().splitlines() if line.strip()]
    print(f"{len(a.judged)} judged folders, {len(records)} videos, time compression {a.time_compression}")
    for group in ("seen", "held_out"):
        print(report(group, frame_errors([r for r in records if r["group"] == group], seen_pairs,
                                         a.time_compression)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
