"""The sentences `report.md` builds from a demo run's settings: how it sampled, trained and was cut, and whether the
machine gave its models the updates the recipe's published numbers come from."""

from __future__ import annotations

import math
from typing import Any

# The updates behind the recipe's numbers in README: its fresh-clone demos of waves 21-23 (2 cores with AMX, stage
# one in bf16 autocast) trained 610-772 stage-one clip updates and 883-1,131 MaskGit updates in the default minutes.
# A run below STARVED of these is an update-starved run (wave 25's CPU without native bf16: 217 and 383, and seen /
# held-out digit accuracy 28 / 18% against 90-98 / 80-98%), and its report says so.
RECIPE_UPDATES = {"tokenizer": 610, "maskgit": 883}
STARVED = 0.75
STAGE_NAMES = {"tokenizer": "stage one", "maskgit": "the MaskGit"}


def guidance_note(scale: float | list[float]) -> str:
    """'3.0', or '3.0 -> 2.0 over the steps' for a linear ramp (the refinement rounds use its last value)."""
    return f"{scale[0]} -> {scale[1]} over the steps" if isinstance(scale, (list, tuple)) else f"{scale}"


def maskgit_engine_note(mg: dict[str, Any]) -> str:
    """How the MaskGit's updates ran (compiled, bf16 autocast), for the report's first sentence; older reports
    without the keys say nothing."""
    parts = [name for name, on in (("torch.compile", mg.get("compiled")),
                                   ("bf16 autocast", mg.get("mixed_precision") == "bf16")) if on]
    return f" ({', '.join(parts)})" if parts else ""


def frame_mask_note(prob: float | None) -> str:
    """How the MaskGit's training masks included whole latent frames, for the report's sentence on its training."""
    if not prob:
        return ""
    return (f" ({prob:.0%} of them masked one whole latent frame and gave the others, the state the refinement rounds "
            "redraw from; the rest cosine-drawn random tokens)")


def refine_note(settings: dict[str, Any]) -> str:
    """' + R refinement rounds of <what each redraws>' for a report's sampling settings, '' when there were none
    (older reports; those also predate `refine_unit`, so they redrew a share of the tokens)."""
    rounds = settings.get("refine_steps", 0)
    if not rounds:
        return ""
    unit = settings.get("refine_unit", "token")
    what = {"token": f"{settings['refine_ratio']:.1%} of the tokens", "frame": "a random latent frame",
            "worst_frame": "the least likely latent frame"}[unit]
    greedy = " (most likely codes)" if settings.get("refine_temperature") == 0 else ""
    scale = settings.get("refine_guidance_scale")
    guided = "" if scale is None else (" without guidance" if scale == 1 else f" at guidance {scale}")
    return f" + {rounds} refinement rounds of {what}{greedy}{guided}"


STAGE_ONE = {  # the demo's --tokenizer choices, as the report names them
    "fsq": "Stage one (`--tokenizer fsq`, the default): FSQ codes, reconstruction loss only (no GAN).",
    "lfq-gan": "Stage one (`--tokenizer lfq-gan`): LFQ codes with the entropy and commitment losses, and the "
               "adversarial loss in the final phase.",
}


def temperature_note(settings: dict[str, Any]) -> str:
    """", temperature 0.7" when the codes were drawn at a temperature other than 1 (wave 16); else ""."""
    t = settings.get("temperature", 1.0)
    return "" if t == 1.0 else f", temperature {t:g}"


def best_of_note(settings: dict[str, Any]) -> str:
    """", the best of N decodes by ..." when each video was chosen among N = best_of decodes (wave 22); else ""."""
    n = settings.get("best_of", 1)
    return "" if n == 1 else (f", the best of {n} decodes by the model's own frame score (each latent frame's "
                              "likelihood given the others)")


def order_note(settings: dict[str, Any]) -> str:
    """", unmasking in Halton order" (or random / frame order) when the tokens were not unmasked most confident
    first, the default; reports written before the setting was recorded unmasked confidence-first."""
    order = settings.get("unmask_order", "confidence")
    return "" if order == "confidence" else f", unmasking in {order} order"


def deadline_note(settings: dict[str, Any]) -> str:
    """What the demo's deadline (`--finish-by`) left the training stages, when it cut them; else ""."""
    given = settings.get("training_minutes_given") or {}
    cut = {k: v for k, v in given.items() if v.get("given") is not None and v["given"] < v["asked"]}
    if not settings.get("finish_by") or not cut:
        return ""
    names = {"tokenizer": "stage one", "maskgit": "the MaskGit"}
    return (" To end by its deadline (`--finish-by`; `make demo`: DEMO_BUDGET, 15 minutes by default, from its start) "
            "the demo trained "
            + ", ".join(f"{names[k]} {v['given']:.2f} of {v['asked']:.2f} min" for k, v in cut.items()) + ".")


def update_shortfall(steps: dict[str, int], minutes: float, given: dict[str, dict[str, float | None]]) -> str:
    """A sentence when a stage trained fewer than STARVED x `RECIPE_UPDATES` (stage one: its clip updates), naming
    the training minutes (`make demo DEMO_MINUTES=...`, a multiple of 5) at which this machine's measured rate
    would reach the recipe's counts; else "". `steps`: {"tokenizer"|"maskgit": updates}; `minutes`: the run's
    training budget; `given`: {stage: {"asked", "given"}} minutes (the demo's `training_minutes_given`)."""
    short = {k: n for k, n in steps.items() if n < STARVED * RECIPE_UPDATES[k]}
    if not short:
        return ""
    def minutes_needed(stage: str, updates: int) -> float:  # updates grow with the minutes the stage was given
        asked = given.get(stage, {}).get("asked") or minutes
        got = given.get(stage, {}).get("given") or asked
        return minutes * RECIPE_UPDATES[stage] / max(updates, 1) * got / asked

    need = max(minutes_needed(k, n) for k, n in short.items())
    trained = ", ".join(f"{STAGE_NAMES[k]} {n:,} updates (the recipe's results: {RECIPE_UPDATES[k]:,} or more)"
                        for k, n in short.items())
    return (f" This machine trained {trained} in its minutes, so this run's numbers are an update-starved run's, "
            f"not the recipe's (README); at its rate `make demo DEMO_MINUTES={5 * math.ceil(need / 5)}` (no deadline) "
            "gives the models their updates.")
