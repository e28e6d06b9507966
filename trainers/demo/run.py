"""The end-to-end demo: data -> tokenizer -> code shards -> MaskGit -> generated videos -> report.

Every stage calls the library functions behind the commands a user runs (`build_config` + the trainers,
`tokenize_folder`), with the same recipes and precedence. `tiny=True` runs the same pipeline in seconds for the test
suite.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from trainers.commands.tokenize_folder import tokenize_folder
from trainers.configs import build_config, load_yaml
from trainers.demo import build_demo_data
from trainers.demo.digits import DigitDataConfig
from trainers.demo.photos import PhotoDataConfig
from trainers.demo.report_notes import update_shortfall
from trainers.demo.stage_one import IMAGE_BATCH, train_stage_one
from trainers.logging import get_logger
from trainers.maskgit_trainer import MaskGitTrainer
from trainers.recipes import MASKGIT_RECIPES, TOKENIZER_RECIPES

log = get_logger("magvit2.demo")
# stage one as `make demo` trains it: "fsq" (the default: FSQ codes, no GAN, what learned digit shapes fastest in
# these minutes) or "lfq-gan" (the paper's design: 2^10 LFQ codes with the entropy weight annealed 4x -> 1x over the
# first 200 steps, the adversarial loss from step 200 on), so a user sees both (DEMO_TOKENIZER=lfq-gan make demo).
# lfq-gan trains in fp32: GAN updates under CPU bf16 autocast are not validated (README's known issue)
DEMO_TOKENIZERS: dict[str, dict[str, Any]] = {
    "fsq": {},
    "lfq-gan": {"tokenizer": {"use_fsq": False, "fsq_levels": None, "codebook_size": 2**10,
                              "lfq_entropy_anneal_steps": 200, "lfq_entropy_anneal_start_weight": 0.4},
                "disc_start_step": 200, "run": {"mixed_precision": "no"}},
}
TOKENIZER_SHARE = 0.4  # of the training minutes; the MaskGit gets the rest (prompt following is the harder part)
# the MaskGit trains on 4x stage one's digit clips (digits/train + digits/more: 160 per seen pair, new positions and
# pairings of the same handwriting); at its ~1,100 updates, 1,200 clips overfit (docs/experiments.md, wave 13)
MORE_CLIPS_PER_PAIR = 120
DEFAULT_MINUTES = 12.0  # the demo recipes' max_steps are what 2 CPU cores reach in this budget
# With a deadline (`finish_by`: `make demo` passes 15 minutes from its start, the install included) each training
# stage gets what fits before it, keeping these minutes for the stages after training. Measured in fresh-clone demos
# on 2 cores: tokenizing 0.34-0.90 min; generating the 100 judged videos 1.15-1.39, the report ~0.1, and each training
# stage's final validation and save up to 0.15 (docs/experiments.md, waves 13-16).
TOKENIZE_RESERVE = 1.0
AFTER_TRAINING_RESERVE = 2.0
# each further decode of a recipe's best-of-N sampling (`best_of`) generates the videos again: those minutes come out
# of the MaskGit's, not stage one's (its split of the minutes stays as measured); the demo recipe decodes once
DECODE_RESERVE = 1.4
# on a slower machine generating grows with everything else: it took 1.8-2.4x the tokenizing stage's minutes in the
# fresh-clone demos (0.64-1.24 min tokenizing, 1.14-2.23 generating; waves 15-24), so a decode is reserved at least
# this multiple of the measured tokenizing (a 3x slower draw overran the 15 minutes by 38 s with the fixed reserve)
DECODE_PER_TOKENIZE = 2.4
LEAST_SHARE = 0.25  # a stage never gets less than this share of its minutes: past the deadline, a late demo beats none


def _budget(minutes: float, share: float, recipe: dict, fits: float | None = None) -> dict[str, float]:
    """Stop at `share` of the minutes (or at `fits` minutes when fewer fit before the demo's deadline), or at the
    recipe's step count scaled to the budget (a bigger budget trains proportionally longer). The LR schedule spans
    that step count, so on 2 cores a run stops before its cosine ends: decaying over the steps that fit instead
    (`run.schedule_horizon: max_minutes`) measured no better for the MaskGit (docs/experiments.md, wave 2; wave
    26's paired fresh-clone demos on a CPU without bf16: lower validation loss, lower judged numbers)."""
    steps = max(1, round(recipe["run"]["max_steps"] * minutes / DEFAULT_MINUTES))
    asked = minutes * share
    given = asked if fits is None else max(min(asked, fits), LEAST_SHARE * asked)
    if fits is not None and fits < LEAST_SHARE * asked:
        log.warning("demo: %.2f training minutes fit before the deadline; training %.2f (%.0f%% of %.2f), so the "
                    "demo will end late", max(fits, 0.0), given, 100 * LEAST_SHARE, asked)
    return {"max_minutes": round(given, 2), "max_steps": steps}


def _maskgit_reserve(recipe: dict, tokenize_minutes: float = 0.0) -> float:
    """The minutes the MaskGit leaves before the deadline: what follows training (the final validation, the report,
    one generation of the judged videos), and a generation per extra decode of the recipe's best-of-N sampling; a
    generation is reserved `DECODE_RESERVE` minutes, or `DECODE_PER_TOKENIZE` x `tokenize_minutes` (this machine's
    measured tokenizing stage) where that is more."""
    decode = max(DECODE_RESERVE, DECODE_PER_TOKENIZE * tokenize_minutes)
    return AFTER_TRAINING_RESERVE - DECODE_RESERVE + decode * recipe.get("pipeline", {}).get("best_of", 1)


def _minutes_left(finish_by: float | None, reserve: float) -> float | None:
    """Wall-clock minutes until `finish_by` (seconds since the epoch, as `date +%s`) less `reserve`; None: no
    deadline."""
    return None if finish_by is None else (finish_by - time.time()) / 60 - reserve


def run_demo(out: str | Path = "runs/demo", data: str | Path = "data/demo", minutes: float = DEFAULT_MINUTES,
             debian_dir: str | Path | None = None, seed: int = 0, tiny: bool = False,
             tokenizer: str = "fsq", finish_by: float | None = None) -> dict[str, Any]:
    """Run every stage; `minutes` is the training budget, split between the tokenizer and the MaskGit;
    `tokenizer` picks stage one's quantizer and losses (`DEMO_TOKENIZERS`); `finish_by` (seconds since the epoch, or
    None) is a deadline for the whole demo: each training stage gets at most what fits before it."""
    if tokenizer not in DEMO_TOKENIZERS:
        raise ValueError(f"unknown demo tokenizer {tokenizer!r}; expected one of {', '.join(DEMO_TOKENIZERS)}")
    from trainers.demo.judge import DigitJudge
    from trainers.demo.report import (
        aims_met,
        contact_sheet,
        digit_legibility,
        environment,
        evaluate_tokenizer,
        generate_and_judge,
        plot_curves,
        showcase_gif,
        write_report,
    )

    out, data = Path(out), Path(data)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; remove it or pass another --out")
    out.mkdir(parents=True, exist_ok=True)
    clock, stamps = time.monotonic(), {}

    def stage(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        stamps[name] = (now - clock) / 60
        clock = now
        log.info("demo: %s done in %.2f min", name, stamps[name])

    digits = DigitDataConfig(seed=seed, more_clips_per_pair=1 if tiny else MORE_CLIPS_PER_PAIR,
                             **({"clips_per_pair": 2, "val_clips_per_pair": 1, "heldout_clips_per_pair": 1} if tiny
                                else {}))
    photos = PhotoDataConfig(seed=seed, **({"clips_per_photo": 1, "val_clips_per_photo": 1, "gif_clips": 2,
                                            "face_clips": 4} if tiny else {}))
    build_demo_data(data, digits=digits, photos=photos, debian_dir=None if tiny else debian_dir)
    stage("data")

    preset = "tiny" if tiny else "demo"
    fits = _minutes_left(finish_by, TOKENIZE_RESERVE + AFTER_TRAINING_RESERVE)  # both training stages
    limit = {"max_steps": 6} if tiny else _budget(minutes, TOKENIZER_SHARE, TOKENIZER_RECIPES["demo"],
                                                  None if fits is None else fits * TOKENIZER_SHARE)
    given = {"tokenizer": {"asked": round(minutes * TOKENIZER_SHARE, 2), "given": limit.get("max_minutes")}}
    tok_run = out / "tokenizer"
    choice = DEMO_TOKENIZERS[tokenizer]
    stage_one = train_stage_one(preset, {**choice, "run": {**choice.get("run", {}), "seed": seed}},
                                [data / "tokenizer/train", data / "digits/train"], data / "tokenizer/val", out, limit,
                                image_batch=None if tiny else IMAGE_BATCH)  # tiny: the tiny recipe's batch
    stage("tokenizer")
    short = "" if tiny else update_shortfall({"tokenizer": stage_one["steps"]}, minutes, given)
    if short:  # said now, not only in the report: the user may stop here and rerun with more minutes
        log.warning("demo:%s", short)

    frames = 5 if tiny else 9
    for split in ("train", "more", "val"):
        tokenize_folder(tok_run, data / "digits" / split, out / "codes" / split, num_frames=frames)
    stage("tokenize")

    prompts = json.loads((data / "digits/prompts.json").read_text())
    sample_prompts = out / "sample_prompts.txt"
    sample_prompts.write_text("\n".join(p["prompt"] for p in prompts["seen"][:3] + prompts["heldout"][:3]) + "\n")
    mg_run = out / "maskgit"
    mg_recipe = MASKGIT_RECIPES["demo"]
    fits = _minutes_left(finish_by, _maskgit_reserve(mg_recipe, stamps["tokenize"]))
    limit = {"max_steps": 6} if tiny else _budget(minutes, 1 - TOKENIZER_SHARE, mg_recipe, fits)
    given["maskgit"] = {"asked": round(minutes * (1 - TOKENIZER_SHARE), 2), "given": limit.get("max_minutes")}
    mg_config = build_config("maskgit", preset, overrides={"run": {"seed": seed, **limit}})
    mg_trainer = MaskGitTrainer(mg_config, tok_run, mg_run,
                                codes_dir=[out / "codes/train", out / "codes/more"], val_codes_dir=out / "codes/val",
                                sample_prompts=sample_prompts)
    mg_trainer.fit()
    stage("maskgit")

    judge = DigitJudge(seed=seed)
    scores, records = generate_and_judge(mg_run / "pipeline", prompts, out / "samples", judge,
                                         per_seen=1 if tiny else 2, per_heldout=1 if tiny else 4, seed=seed)
    contact_sheet(records, out / "samples", out / "samples" / "contact_sheet.png")
    _, shown = showcase_gif(records, out / "samples", out / "samples" / "showcase.gif")
    stage("generate")

    tok_summary = json.loads((tok_run / "summary.json").read_text())
    mg_summary = json.loads((mg_run / "summary.json").read_text())
    report = {
        "tokenizer": {**evaluate_tokenizer(tok_run / "tokenizer", data / "tokenizer/val", frames),
                      "steps": tok_summary["step"], "image_steps": stage_one["image_steps"],
                      "mixed_precision": load_yaml(tok_run / "config.yaml")["launch"]["mixed_precision"]},
        "maskgit": {"val_token_accuracy": mg_summary["val_accuracy"], "val_loss": mg_summary["val_loss"],
                    "accuracy_by_ratio": {k.split("@")[1]: v for k, v in mg_summary.items()
                                          if k.startswith("val_accuracy@")},
                    "steps": mg_summary["step"], "train_clips": mg_summary["train_clips"],
                    "frame_mask_prob": mg_config.frame_mask_prob,
                    "mixed_precision": load_yaml(mg_run / "config.yaml")["launch"]["mixed_precision"],
                    "compiled": isinstance(mg_trainer.model, torch._dynamo.eval_frame.OptimizedModule)},
        "prompt_following": {**scores, "judge": {"digit_val_accuracy": judge.val_accuracy},
                             "legibility": digit_legibility(tok_run / "tokenizer", data / "digits/val", judge, frames)},
        "showcase": {"file": "samples/showcase.gif", "prompts": [r["prompt"] for r in shown]},
        "environment": environment(),
        "settings": {"minutes_budget": minutes, "seed": seed, "tiny": tiny, "data": str(data),
                     "tokenizer": tokenizer, "finish_by": finish_by, "training_minutes_given": given},
    }
    plot_curves(tok_run, ["generator.recon", "generator.usage", "generator.codebook_entropy"],
                out / "tokenizer_curves.png", "tokenizer training")
    plot_curves(mg_run, ["loss", "accuracy"], out / "maskgit_curves.png", "MaskGit training")
    stage("report")
    report["minutes"] = {**stamps, "total": sum(stamps.values())}
    report["aims"] = aims_met(report)
    write_report(report, out)
    return report
