"""What LoRA learns against a full fine-tune in the same minutes: adapt the demo pipeline to a phrasing of every
prompt it never saw, then judge prompt following with the demo's judges (digit classifier + direction of motion).

    python -m benchmarks.lora_learning --demo runs/demo [--minutes 3] [--out runs/lora-learning] [--threads N]

Needs a finished demo run (`make demo`). Its training codes are re-captioned, caption by caption, from
"the digit seven moving up slowly" to "a handwritten 7 heading north at a crawl" (numerals, compass words, other
verbs), then the demo's MaskGit pipeline is fine-tuned on them for `--minutes` twice, through `MaskGitTrainer` as
`magvit2-train-maskgit --init-from` runs it: with a LoRA adapter (rank 16, alpha 32, attention, LR 2e-3) and as a full
fine-tune (every weight, LR 5e-4); constant LR after 20 warm-up steps, the demo recipe otherwise. Reported for the
base, LoRA and the full fine-tune: digit / direction / joint accuracy on the new phrasing (the 30 seen pairs and the
10 pairs held out of the demo's data) and on the demo's own prompts; and whether the base pipeline's own prompts give
the same codes, bit for bit, after the adapter is loaded and unloaded.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import time
import warnings
from pathlib import Path
from typing import Any

import torch

DIRECTION_WORDS = {"up": "north", "down": "south", "left": "west", "right": "east"}
SPEED_PHRASES = {"slowly": "at a crawl", "quickly": "at speed"}
_CAPTION = re.compile(r"^the digit (\w+) moving (up|down|left|right)(?: (slowly|quickly))?$")
LORA_LR, FULL_LR = 2e-3, 5e-4


def rephrase(caption: str) -> str:
    """The demo's caption in words the base never saw: 'the digit seven moving up slowly' ->
    'a handwritten 7 heading north at a crawl'."""
    from trainers.demo.digits import DIGIT_WORDS

    m = _CAPTION.match(caption)
    if m is None:
        raise ValueError(f"not a demo digit caption: {caption!r}")
    digit, direction, speed = m.groups()
    text = f"a handwritten {DIGIT_WORDS.index(digit)} heading {DIRECTION_WORDS[direction]}"
    return f"{text} {SPEED_PHRASES[speed]}" if speed else text


def recaption(src: Path, dst: Path) -> int:
    """Code shards `src` -> `dst` with every caption rephrased (the same codes)."""
    from trainers.data.codes import CodeShardDataset, CodeShardWriter, read_index

    shards, index = CodeShardDataset(src), read_index(src)
    writer = CodeShardWriter(dst, codebook_size=shards.codebook_size)
    for i, record in enumerate(shards.records):
        writer.add(shards.codes[i], rephrase(record["caption"]), record["path"], record.get("clip", 0))
    info = {k: v for k, v in index.items() if k not in ("format_version", "shards", "num_clips")}
    return writer.close(info)["num_clips"]


def fine_tune(demo: Path, codes: Path, out: Path, minutes: float, lora: bool, text_encoder: str) -> dict[str, Any]:
    from trainers.configs import build_config
    from trainers.maskgit_trainer import MaskGitTrainer

    overrides: dict[str, Any] = {
        "text_encoder": text_encoder,
        "run": {"max_minutes": minutes, "max_steps": 1_000_000, "val_every": 1_000_000,
                "checkpoint_every": 1_000_000, "seed": 0},
        "optim": {"lr": LORA_LR if lora else FULL_LR, "warmup_steps": 20, "schedule": "constant"}}
    if lora:
        overrides["lora"] = {"rank": 16}
    trainer = MaskGitTrainer(build_config("maskgit", "demo", overrides=overrides), demo / "tokenizer", out,
                             codes_dir=codes / "train", val_codes_dir=codes / "val",
                             init_from=demo / "maskgit" / "pipeline")
    return trainer.fit()


def judge(pipeline, prompts: dict, out: Path, seed: int, held_out: bool = True) -> dict[str, Any]:
    """Digit / direction / joint accuracy of one video per prompt (seen pairs; held-out pairs too if asked)."""
    from trainers.demo.report import generate_and_judge

    with warnings.catch_warnings():  # the mean over no held-out videos is nan, and not reported
        warnings.simplefilter("ignore", RuntimeWarning)
        scores, _ = generate_and_judge(pipeline, prompts, out, _digit_judge(), per_seen=1,
                                       per_heldout=int(held_out), seed=seed)
    return {group: scores[group] for group in (("seen", "held_out") if held_out else ("seen",))}


@functools.cache
def _digit_judge() -> Any:
    from trainers.demo.judge import DigitJudge

    return DigitJudge(seed=0)  # trained once (an SVM on rendered digits)


def run(demo: Path, out: Path, minutes: float, seed: int = 0) -> dict[str, Any]:
    from maskgit import TextToVideoPipeline
    from trainers.demo.digits import prompts_table

    out.mkdir(parents=True, exist_ok=False)
    clock, stamps = time.monotonic(), {}
    original = prompts_table()
    rephrased = {group: [{**p, "prompt": rephrase(p["prompt"])} for p in original[group]]
                 for group in ("seen", "heldout")}
    clips = {split: recaption(demo / "codes" / split, out / "codes" / split) for split in ("train", "val")}
    base = TextToVideoPipeline.from_pretrained(demo / "maskgit" / "pipeline")
    own = [p["prompt"] for p in original["seen"] + original["heldout"]]
    own_codes = base(own, generator=torch.Generator().manual_seed(seed), output_type="latent").frames
    results: dict[str, Any] = {"base": {"new_phrasing": judge(base, rephrased, out / "samples/base-new", seed),
                                        "own_prompts": judge(base, original, out / "samples/base-own", seed,
                                                             held_out=False)}}
    stamps["base"] = time.monotonic() - clock
    summaries = {}
    for name, lora in (("lora", True), ("full", False)):
        start = time.monotonic()
        summaries[name] = fine_tune(demo, out / "codes", out / f"{name}-run", minutes, lora, base.text_encoder.spec)
        stamps[f"{name}_training"] = time.monotonic() - start
    base.load_lora_weights(out / "lora-run", adapter_name="new_phrasing")
    results["lora"] = {"new_phrasing": judge(base, rephrased, out / "samples/lora-new", seed),
                       "own_prompts": judge(base, original, out / "samples/lora-own", seed, held_out=False)}
    base.unload_lora_weights()
    unloaded = base(own, generator=torch.Generator().manual_seed(seed), output_type="latent").frames
    full = TextToVideoPipeline.from_pretrained(out / "full-run" / "pipeline")
    results["full"] = {"new_phrasing": judge(full, rephrased, out / "samples/full-new", seed),
                       "own_prompts": judge(full, original, out / "samples/full-own", seed, held_out=False)}
    adapter_mb = sum(p.stat().st_size for p in (out / "lora-run" / "lora").iterdir()) / 2**20
    report = {
        "minutes_each": minutes, "clips": clips, "example": {"old": original["seen"][0]["prompt"],
                                                            "new": rephrased["seen"][0]["prompt"]},
        "results": results,
        "steps": {name: s["step"] for name, s in summaries.items()},
        "base_steps": json.loads((demo / "maskgit" / "summary.json").read_text())["step"],
        "val_loss": {name: s.get("val_loss") for name, s in summaries.items()},
        "lora_trainable_params": summaries["lora"]["lora_trainable_params"], "adapter_mb": adapter_mb,
        "base_unchanged_after_unload": bool(torch.equal(own_codes, unloaded)),
        "seconds": {**stamps, "total": time.monotonic() - clock},
        "settings": {"lora": {"rank": 16, "alpha": 32, "targets": "attention", "lr": LORA_LR},
                     "full": {"lr": FULL_LR}, "seed": seed, "demo": str(demo), "threads": torch.get_num_threads()},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def table(report: dict[str, Any]) -> str:
    r = report["results"]
    lines = [f"Base: the demo's MaskGit after {report['base_steps']} updates. "
             f"{report['minutes_each']:g} minutes each on the new phrasing ({report['example']['old']!r} -> "
             f"{report['example']['new']!r}); steps: LoRA {report['steps']['lora']}, full {report['steps']['full']}; "
             f"validation loss (new phrasing): LoRA {report['val_loss']['lora']:.3f}, full "
             f"{report['val_loss']['full']:.3f}",
             "", "| pipeline | new phrasing, seen pairs: digit / direction / joint | new phrasing, held-out pairs: "
             "joint | own prompts, seen: digit / direction / joint |", "|---|---|---|---|"]
    for name, label in (("base", "base (demo pipeline)"), ("lora", "base + LoRA adapter"), ("full", "full fine-tune")):
        new, own = r[name]["new_phrasing"], r[name]["own_prompts"]
        lines.append(f"| {label} | {new['seen']['digit_acc']:.0%} / {new['seen']['direction_acc']:.0%} / "
                     f"{new['seen']['joint_acc']:.0%} | {new['held_out']['joint_acc']:.0%} | "
                     f"{own['seen']['digit_acc']:.0%} / {own['seen']['direction_acc']:.0%} / "
                     f"{own['seen']['joint_acc']:.0%} |")
    lines.append(f"\nBase pipeline's own prompts after load + unload of the adapter: "
                 f"{'the same codes, bit for bit' if report['base_unchanged_after_unload'] else 'CHANGED'}; "
                 f"adapter {report['adapter_mb']:.2f} MB, {report['lora_trainable_params']:,} parameters.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", type=Path, default=Path("runs/demo"), help="a finished `make demo` run folder")
    p.add_argument("--out", type=Path, default=Path("runs/lora-learning"))
    p.add_argument("--minutes", type=float, default=3.0, help="training minutes of each fine-tune")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run(args.demo, args.out, args.minutes, args.seed)
    print(table(report))
    (args.out / "report.md").write_text(table(report) + "\n")


if __name__ == "__main__":
    main()
