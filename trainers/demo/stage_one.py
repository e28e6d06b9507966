"""The demo's stage one: still frames first, then the video tokenizer inflated from them (docs/experiments.md, wave
5). A third of stage one's minutes trains on 1-frame clips of the same data, 32 frames a batch; the video run then
starts from that model through `init_from_image` (each causal conv's temporal taps summed into its newest, so it
begins as the image model on every frame) and gets the rest of the minutes, the first phase's overhead included."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from trainers.configs import build_config
from trainers.tokenizer_trainer import TokenizerTrainer

IMAGE_SHARE = 1 / 3  # of stage one's minutes
# frames per image batch (the video batches hold 8 clips of 9 frames). Half of both (16 / 4, wave 30: ~1.7x the updates)
# left PSNR where it was over four pairs, raised codebook usage, and the MaskGit on such codes lost frame consistency
IMAGE_BATCH = 32


def train_stage_one(preset: str, overrides: dict[str, Any], data_dirs: list[Path], val_dir: Path, out: Path,
                    limit: dict[str, float], image_batch: int | None = IMAGE_BATCH) -> dict[str, int]:
    """Images into `out/tokenizer-image`, then video into `out/tokenizer`. `limit` is stage one's whole budget:
    {"max_minutes", "max_steps"} (each phase decays its LR over the steps that fit in its minutes), or {"max_steps"}
    alone (that many steps per phase). `image_batch`: frames per image batch (None: the recipe's batch size).
    Returns both phases' step counts."""
    start, run = time.monotonic(), dict(overrides.get("run", {}))

    def phase(name: str, run_limits: dict[str, Any], data: dict[str, Any], **init: Path) -> int:
        config = build_config("tokenizer", preset, overrides={**overrides, "run": {**run, **run_limits},
                                                              "data": {**overrides.get("data", {}), **data}})
        trainer = TokenizerTrainer(config, data_dirs, out / name, val_dir=val_dir, **init)
        return trainer.fit()["step"]

    timed = "max_minutes" in limit
    minutes = limit.get("max_minutes", 0.0)
    # timed: the minutes end the image phase (its step cap is only a bound: image steps are cheaper than clip steps)
    image_limits = ({"max_minutes": round(minutes * IMAGE_SHARE, 2), "max_steps": 20 * int(limit["max_steps"]),
                     "schedule_horizon": "max_minutes"} if timed else {"max_steps": limit["max_steps"]})
    image_data = {"num_frames": 1, **({"batch_size": image_batch} if image_batch else {})}
    image_steps = phase("tokenizer-image", image_limits, image_data)
    left = max(minutes - (time.monotonic() - start) / 60, 0.1)
    # timed: likewise a bound only (bf16 on a CPU with AMX runs ~1.7x the fp32 clip steps in the same minutes)
    video_limits = ({"max_minutes": round(left, 2), "max_steps": 4 * int(limit["max_steps"]),
                     "schedule_horizon": "max_minutes"} if timed else {"max_steps": limit["max_steps"]})
    steps = phase("tokenizer", video_limits, {}, init_from_image=out / "tokenizer-image" / "tokenizer")
    return {"image_steps": image_steps, "steps": steps}
