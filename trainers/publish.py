"""`--push_to_hub`: the trained model goes to the Hugging Face Hub at every checkpoint and at the end, through the
exported model's own public `push_to_hub` (`magvit2.hub` behind it; nothing here talks to the Hub directly)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from trainers.configs import RunConfig


def check_push(run: RunConfig) -> None:
    """Before any work: an upload that cannot happen is refused now, not after hours of training."""
    if run.push_to_hub and os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise ValueError(f"--push_to_hub {run.hub_model_id}: HF_HUB_OFFLINE is set, so nothing can be uploaded; "
                         "unset it, or leave out --push_to_hub")


def push_export(model: Any, training: dict[str, Any], repo_id: str, step: int, log: logging.Logger,
                exported: Path) -> Exception | None:
    """`model.push_to_hub(repo_id, training=...)`; returns the error instead of raising (network, token: the run
    goes on; the next checkpoint retries, and the trainer fails at the end if the last upload did not go through)."""
    try:
        model.push_to_hub(repo_id, training=training, commit_message=f"magvit2-maskgit: step {step}")
    except Exception as e:  # any upload failure (HTTP, auth, network) must not lose the run
        log.warning("step %d: upload to %s failed (%s); the model is in %s; the next checkpoint retries", step,
                    repo_id, str(e).splitlines()[0] if str(e) else type(e).__name__, exported)
        return e
    log.info("step %d: pushed %s to the Hub repo %s", step, exported.name, repo_id)
    return None
