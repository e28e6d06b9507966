"""Does a MaskGit know which of its videos hold together? The check behind `best_of` (`maskgit.sampler`).

`python -m benchmarks.frame_score --data runs/exp/data --pipeline runs/demo/maskgit/pipeline [--sample k=v ...]`
generates the quality harness's videos (`benchmarks.quality`: 4 per seen prompt, 8 per held-out prompt, sampling seed
0, the pipeline's sampling defaults unless `--sample` changes them), scores each with the sampler's own
`frame_scores` (every latent frame masked in turn and scored given the others under the guided distribution, averaged
over frames: what `best_of` ranks candidates by) and judges each with the demo's judges. It prints, over the pairs of
videos of one prompt whose judgement differs, how often the higher score goes with the frame-consistent video and
with the right digit (0.5: the score knows nothing), and writes one JSON line per video to `--out`. Prints the
config, versions and machine first.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
from collections.abc import Callable, Sequence
from pathlib import Path

import torch


def pair_agreement(records: Sequence[dict], good: Callable[[dict], bool], key: str = "score") -> tuple[float, int]:
    """Over the pairs of records with the same "prompt" where `good` holds for exactly one: the share in which that
    one has the higher `key` (ties count half), and the number of such pairs ((nan, 0) when there are none)."""
    by_prompt: dict[str, list[dict]] = {}
    for r in records:
        by_prompt.setdefault(r["prompt"], []).append(r)
    wins, pairs = 0.0, 0
    for group in by_prompt.values():
        for a, b in itertools.combinations(group, 2):
            if good(a) == good(b):
                continue
            better, worse = (a, b) if good(a) else (b, a)
            pairs += 1
            wins += 1.0 if better[key] > worse[key] else 0.5 if better[key] == worse[key] else 0.0
    return (wins / pairs if pairs else float("nan")), pairs


@torch.no_grad()
def score_and_judge(pipeline_dir: Path, data: Path, settings: dict, per_seen: int = 4, per_heldout: int = 8,
                    seed: int = 0, batch_size: int = 16) -> list[dict]:
    """One record per generated video: prompt, group, digit, judged digit and direction, frame consistency, score."""
    from magvit2.pixels import to_uint8
    from maskgit.pipeline import TextToVideoPipeline
    from maskgit.sampler import frame_scores, make_guided_logits_fn
    from trainers.demo.judge import DigitJudge, judge_direction
    from trainers.demo.report import judged_jobs
    from trainers.rng import make_generator

    pipe = TextToVideoPipeline.from_pretrained(pipeline_dir)
    pipe.defaults = pipe.settings(**settings)
    s = pipe.settings()
    scale = s.guidance_scale[1] if isinstance(s.guidance_scale, tuple) else s.guidance_scale
    built = json.loads((data / "manifest.json").read_text())["settings"]["digits"]
    judge = DigitJudge(seed=built.get("seed", 0), objects=built.get("objects", "digits"))
    prompts = json.loads((data / "digits/prompts.json").read_text())
    jobs = judged_jobs(prompts, per_seen, per_heldout)  # the same videos as the harness's judging
    transformer = pipe.transformer.eval()
    records = []
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        texts = [p["prompt"] for _, p in chunk]
        codes = pipe(texts, generator=make_generator(seed, start), output_type="latent").frames  # (b, t, h, w)
        b, t, h, w = codes.shape
        cond, uncond = pipe.encode_prompt(texts)
        logits_fn = make_guided_logits_fn(transformer, cond, uncond, batch_size=b, grid=(t, h, w))
        flat = codes.reshape(b, -1)
        scores = frame_scores(logits_fn, flat, torch.ones_like(flat, dtype=torch.bool), h * w,
                              transformer.vocab_sizes, transformer.mask_id, scale).mean(dim=-1)  # (b,)
        videos = pipe.tokenizer.decode_from_code_indices(codes).clamp(-1, 1)
        for (group, p), video, score in zip(chunk, videos, scores.tolist()):
            frames = to_uint8(video)
            records.append({"prompt": p["prompt"], "group": group, "digit": p["digit"], "direction": p["direction"],
                            "judged_digit": judge.judge_digit(frames)[0],
                            "judged_direction": judge_direction(frames)[0],
                            "frame_consistent": bool(judge.frame_consistent(frames)), "score": score})
    return records


def main(argv: list[str] | None = None) -> int:
    from benchmarks.quality import parse_sets

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a data folder of `benchmarks.quality data` (prompts and judge)")
    p.add_argument("--pipeline", required=True, help="a pipeline folder trained on that data")
    p.add_argument("--sample", action="append", default=[], metavar="KEY=VALUE", help="sampling setting to change")
    p.add_argument("--out", default="frame_scores.jsonl", help="one JSON line per video (default: %(default)s)")
    a = p.parse_args(argv)
    settings = parse_sets(a.sample)
    print(f"frame_score: pipeline {a.pipeline}, data {a.data}, sampling {settings or 'the pipeline defaults'}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    records = score_and_judge(Path(a.pipeline), Path(a.data), settings)
    Path(a.out).write_text("".join(json.dumps(r) + "\n" for r in records))
    for name, good in (("frame-consistent", lambda r: r["frame_consistent"]),
                       ("right digit", lambda r: r["judged_digit"] == r["digit"])):
        share, pairs = pair_agreement(records, good)
        print(f"the higher score goes with the {name} video in {share:.1%} of {pairs} same-prompt pairs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
