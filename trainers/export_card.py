"""What a trainer's export tells its model card: the training record (trainer, preset, step, processes, clips) and
the newest sample GIF the run wrote (RUN_DIR/samples/step-N/*.gif), for `save_pretrained(**export_card(...))`."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def latest_sample(run_dir: Path) -> Path | None:
    """The first GIF of the newest RUN_DIR/samples/step-N folder that has one, or None."""
    for folder in sorted((run_dir / "samples").glob("step-*"), reverse=True):
        gifs = sorted(folder.glob("*.gif"))
        if gifs:
            return gifs[0]
    return None


def export_card(trainer: Any, training: dict[str, Any] | None = None) -> dict[str, Any]:
    """`save_pretrained` keywords for a trainer's export: `training` (its record, plus `training`) and the card's
    sample."""
    record = {"trainer": trainer.name, "preset": getattr(trainer.config, "preset", None), "step": trainer.step,
              "processes": trainer.world_size}
    train_set = getattr(trainer, "train_set", None)
    if train_set is not None:
        record["train_clips"] = len(train_set)
    record = {k: v for k, v in {**record, **(training or {})}.items() if v is not None}
    sample = latest_sample(Path(trainer.run_dir))
    return {"training": record, "model_card_kwargs": {"sample": sample} if sample is not None else None}
