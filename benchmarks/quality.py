"""Controlled quality experiments on the demo's data (docs/experiments.md): one change at a time, the same data,
the same step budget, judged by the demo's own judges.

    python -m benchmarks.quality data --out runs/exp/data [--objects shapes] [--val-videos vtest.avi] \
        [--more-clips-per-pair 120]   # + digits/more/, the demo MaskGit's extra clips
    python -m benchmarks.quality tokenizer --data runs/exp/data --name base --steps 700 [--set key=value ...]
    python -m benchmarks.quality codes --data runs/exp/data --tokenizer runs/exp/tokenizer-base
    python -m benchmarks.quality maskgit --data runs/exp/data --codes runs/exp/codes-base --name tube \\
        --steps 1300 --set tube_mask_prob=0.5 [--sample unmask_order=random ...]
    python -m benchmarks.quality sample --data runs/exp/data --pipeline runs/exp/maskgit-tube/pipeline \\
        --name tube+random --sample unmask_order=random
    python -m benchmarks.quality legibility --data runs/exps/data --tokenizer runs/exp/tokenizer-base/tokenizer

`--set` overrides the demo recipe (dotted keys into the train config, values parsed as YAML: `maskgit.dim=192`,
`optim.lr=3e-3`); `--sample` overrides the pipeline's sampling settings at judging time. Every run appends one
JSON line to `<root>/results.jsonl` (root = the folder above `--data`): the change, the step count, the wall
minutes, and the demo's metrics (tokenizer: held-out PSNR / SSIM / usage, digit legibility; MaskGit: digit,
direction and joint accuracy and frame consistency on seen and held-out prompts, over `--videos-per-seen` x 30 +
`--videos-per-heldout` x 10 judged videos). Steps, not minutes, make runs comparable on a shared machine: the
step rate of each variant is measured separately (`make bench`).

`data --objects shapes` draws the captioned clips from procedurally drawn shapes instead of handwritten digits
(`trainers/demo/shapes.py`, "the triangle moving left"): a second data set, never used by the demo, to check that a
change which wins on digits is not tuned to digits. The other commands read the object set from the data folder's
`manifest.json` and judge with a classifier of those objects. `data --val-videos vtest.avi` holds out another
Debian clip (and trains on cityCC0.mpg): a second real-video set for the tokenizer's held-out PSNR.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from trainers.configs import build_config
from trainers.demo.digits import OBJECTS
from trainers.demo.photos import DEBIAN_VIDEOS, VAL_VIDEOS
from trainers.logging import get_logger

log = get_logger("magvit2.experiments")
NUM_FRAMES = 9


def parse_sets(items: list[str]) -> dict[str, Any]:
    """["a.b=1", "c=x"] -> {"a": {"b": 1}, "c": "x"} (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set/--sample expects KEY=VALUE; got {item!r}")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out


def record(root: Path, entry: dict[str, Any]) -> None:
    with open(root / "results.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")
    log.info("result: %s", json.dumps(entry))


def data_settings(data: Path) -> dict[str, Any]:
    """The moving-object settings the data folder was built with (its build manifest): "objects" ("digits" when
    the manifest does not say: builds from before shapes existed) and "seed"; digits and seed 0, with a warning,
    when the manifest is missing."""
    path = data / "manifest.json"
    if not path.is_file():
        log.warning("%s not found: judging the clips as digits of data seed 0", path)
        return {"objects": "digits", "seed": 0}
    settings = json.loads(path.read_text())["settings"]["digits"]
    return {"objects": settings.get("objects", "digits"), "seed": settings.get("seed", 0)}


def make_judge(a: argparse.Namespace):
    """The demo's judge for the objects of the ``--data`` folder, trained on the image half its clips' train split
    used (the data's seed, not the run's ``--seed``: a second training seed is judged by the same judge)."""
    from trainers.demo.judge import DigitJudge

    settings = data_settings(Path(a.data))
    return DigitJudge(seed=settings["seed"], objects=settings["objects"])


def cmd_data(a: argparse.Namespace) -> None:
    from trainers.demo import build_demo_data
    from trainers.demo.digits import DigitDataConfig
    from trainers.demo.photos import PhotoDataConfig

    build_demo_data(Path(a.out), digits=DigitDataConfig(seed=a.seed, objects=a.objects, warp=a.warp,
                                                        more_clips_per_pair=a.more_clips_per_pair),
                    photos=PhotoDataConfig(seed=a.seed, val_videos=a.val_videos), debian_dir=a.debian_clips)


def fit_or_exit(trainer: Any, run: Path) -> dict[str, Any]:
    """Train; a run stopped by SIGTERM saved a partly trained model: judging it costs minutes and would record a
    result that is not the experiment's, so the command records nothing and exits 3 (a --max-minutes stop is judged;
    --resume goes on from the saved run)."""
    from trainers.stopping import TrainingStopped

    try:
        return trainer.fit()
    except TrainingStopped as stopped:
        print(f"{run.name}: stopped by SIGTERM at step {stopped.step}; not judged, nothing recorded",
              file=sys.stderr)
        raise SystemExit(3) from None


def cmd_tokenizer(a: argparse.Namespace) -> None:
    from trainers.demo.report import digit_legibility, evaluate_tokenizer
    from trainers.tokenizer_trainer import TokenizerTrainer

    data, root = Path(a.data), Path(a.data).parent
    changes = parse_sets(a.set)
    run = root / f"tokenizer-{a.name}"
    overrides = {**changes, "run": {**changes.get("run", {}), "seed": a.seed, "max_steps": a.steps}}
    start = time.monotonic()
    trainer = TokenizerTrainer(build_config("tokenizer", "demo", overrides=overrides),
                               [data / "tokenizer/train", data / "digits/train"], run, val_dir=data / "tokenizer/val",
                               init_from=a.init_from, init_from_image=a.init_from_image,
                               resume="latest" if a.resume else None)
    summary = fit_or_exit(trainer, run)
    minutes = (time.monotonic() - start) / 60
    held_out = evaluate_tokenizer(run / "tokenizer", data / "tokenizer/val", NUM_FRAMES)
    legible = digit_legibility(run / "tokenizer", data / "digits/val", make_judge(a), NUM_FRAMES)
    record(root, {"kind": "tokenizer", "name": a.name, "set": changes, "steps": summary["step"],
                  "init_from": a.init_from, "init_from_image": a.init_from_image,
                  "minutes": round(minutes, 2), "resumed": a.resume, "seed": a.seed,
                  **{k: held_out[k] for k in ("psnr_db", "ssim", "codebook_usage", "perplexity")},
                  "psnr_db_by_source": held_out["psnr_db_by_source"],
                  "reconstructed_digit_acc": legible["reconstructed_digit_acc"],
                  "reconstructed_frame_consistency": legible["reconstructed_frame_consistency"]})


def cmd_codes(a: argparse.Namespace) -> None:
    from trainers.commands.tokenize_folder import tokenize_folder

    data, root = Path(a.data), Path(a.data).parent
    folder = Path(a.tokenizer)
    name = (folder.parent if folder.name == "tokenizer" else folder).name.removeprefix("tokenizer-")
    for split in ("train", "more", "val"):
        if (data / "digits" / split).is_dir():  # more/: only in data built with --more-clips-per-pair
            tokenize_folder(Path(a.tokenizer), data / "digits" / split, root / f"codes-{name}" / split,
                            num_frames=NUM_FRAMES)


def cmd_legibility(a: argparse.Namespace) -> None:
    """How legible `--tokenizer`'s reconstructions of `--data`'s validation clips are to that data's judge (the
    shapes set checks a tokenizer on objects the demo never shows it)."""
    from trainers.demo.report import digit_legibility

    data = Path(a.data)
    legible = digit_legibility(Path(a.tokenizer), data / "digits/val", make_judge(a), NUM_FRAMES)
    record(data.parent, {"kind": "legibility", "name": a.name, "tokenizer": a.tokenizer,
                         "objects": data_settings(data)["objects"], **legible})


def judge_pipeline(a: argparse.Namespace, pipeline: Any, out: Path) -> dict[str, Any]:
    from trainers.demo.report import generate_and_judge

    prompts = json.loads((Path(a.data) / "digits/prompts.json").read_text())
    scores, _ = generate_and_judge(pipeline, prompts, out, make_judge(a), per_seen=a.videos_per_seen,
                                   per_heldout=a.videos_per_heldout, seed=a.sample_seed, **parse_sets(a.sample))
    return scores


def cmd_maskgit(a: argparse.Namespace) -> None:
    from trainers.maskgit_trainer import MaskGitTrainer

    root = Path(a.data).parent
    codes = Path(a.codes)
    changes = parse_sets(a.set)
    run = root / f"maskgit-{a.name}"
    overrides = {**changes, "run": {**changes.get("run", {}), "seed": a.seed, "max_steps": a.steps}}
    tokenizer = root / f"tokenizer-{codes.name.removeprefix('codes-')}" / "tokenizer"
    start = time.monotonic()
    trainer = MaskGitTrainer(build_config("maskgit", "demo", overrides=overrides), tokenizer, run,
                             codes_dir=[codes / split for split in a.train_splits], val_codes_dir=codes / "val",
                             resume="latest" if a.resume else None)
    summary = fit_or_exit(trainer, run)
    minutes = (time.monotonic() - start) / 60
    scores = judge_pipeline(a, run / "pipeline", run / "judged")
    record(root, {"kind": "maskgit", "name": a.name, "set": changes, "sample": parse_sets(a.sample),
                  "codes": codes.name, "train_splits": a.train_splits, "train_clips": summary.get("train_clips"),
                  "steps": summary["step"], "minutes": round(minutes, 2), "resumed": a.resume, "seed": a.seed,
                  "val_accuracy": summary.get("val_accuracy"), "val_loss": summary.get("val_loss"), **scores})


def cmd_sample(a: argparse.Namespace) -> None:
    """Judge a pipeline's videos; with --tokenizer, the same sampled codes decoded by that tokenizer instead (one
    with the pipeline's encoder: a decoder fine-tuned with --decoder-only, e.g. with code noise)."""
    from magvit2 import VideoTokenizer
    from maskgit.pipeline import TextToVideoPipeline

    root = Path(a.data).parent
    pipeline = Path(a.pipeline)
    target: Path | TextToVideoPipeline = pipeline
    if a.tokenizer:
        loaded = TextToVideoPipeline.from_pretrained(pipeline)
        target = TextToVideoPipeline(VideoTokenizer.from_pretrained(a.tokenizer).eval(), loaded.text_encoder,
                                     loaded.transformer, loaded.defaults)
    scores = judge_pipeline(a, target, root / f"judged-{a.name}")
    record(root, {"kind": "sample", "name": a.name, "pipeline": str(pipeline), "tokenizer": a.tokenizer,
                  "sample": parse_sets(a.sample), "seed": a.sample_seed, **scores})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("data")
    d.add_argument("--out", required=True)
    d.add_argument("--debian-clips")
    d.add_argument("--objects", choices=OBJECTS, default="digits",
                   help="what the captioned clips show: handwritten digits (the demo's) or drawn shapes")
    d.add_argument("--more-clips-per-pair", type=int, default=0,
                   help="digits/more/: train clips beyond the 40 per pair (the demo's MaskGit trains on train + more)")
    d.add_argument("--warp", type=float, default=0.0,
                   help="a random affine warp of each train clip's digit image, this strong (DigitDataConfig.warp)")
    d.add_argument("--val-videos", nargs="+", choices=DEBIAN_VIDEOS, default=list(VAL_VIDEOS),
                   help="the Debian clips held out of the tokenizer's training (a second real-video set: vtest.avi)")
    for name in ("tokenizer", "codes", "maskgit", "sample", "legibility"):
        q = sub.add_parser(name)
        q.add_argument("--data", required=True)
        q.add_argument("--name", default=name)
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        q.add_argument("--sample", action="append", default=[], metavar="KEY=VALUE")
        q.add_argument("--steps", type=int, default=1000)
        q.add_argument("--tokenizer")
        q.add_argument("--codes")
        q.add_argument("--train-splits", nargs="+", default=["train"], choices=("train", "more"),
                       help="maskgit: the code folders under --codes it trains on (the demo's: train more)")
        q.add_argument("--pipeline")
        q.add_argument("--init-from")
        q.add_argument("--init-from-image")
        q.add_argument("--resume", action="store_true",
                       help="tokenizer, maskgit: go on from the run's latest checkpoint (one a SIGTERM stopped); the "
                            "recorded minutes are the resumed part's")
        q.add_argument("--videos-per-seen", type=int, default=4)
        q.add_argument("--videos-per-heldout", type=int, default=8)
        q.add_argument("--sample-seed", type=int, default=0)
    for q in sub.choices.values():
        q.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    {"data": cmd_data, "tokenizer": cmd_tokenizer, "codes": cmd_codes, "maskgit": cmd_maskgit,
     "sample": cmd_sample, "legibility": cmd_legibility}[a.command](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
