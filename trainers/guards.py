"""Non-finite loss / gradient guards (torchtitan semantics: check before ``optimizer.step()``, never after).

Usage in a loop::

    guard = NonFiniteGuard(policy="raise")
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    if guard.check(step, "generator", parts, grad_norm, last_checkpoint=str(ckpt.latest())):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)

With ``policy="raise"`` a non-finite value raises ``NonFiniteLossError("step 37 (discriminator):
grad_penalty=nan; last good checkpoint: step-00000036")``; with ``"skip"`` the update is skipped (``check``
returns False) up to ``max_consecutive_skips`` times in a row per phase, then it raises.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch

__all__ = ["NonFiniteGuard", "NonFiniteLossError", "check_finite", "nonfinite_names"]

logger = logging.getLogger(__name__)

Number = torch.Tensor | float | int


class NonFiniteLossError(FloatingPointError):
    """A loss component or the gradient norm is NaN or Inf."""


def _format(value: Number) -> str:
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.numel() == 1:
            return f"{value.item():.6g}"
        bad = int((~torch.isfinite(value)).sum())
        return f"{bad} of {value.numel()} values non-finite"
    return f"{float(value):.6g}"


def nonfinite_names(values: Mapping[str, Number | None]) -> list[str]:
    """Names of the non-finite entries; one device sync for all tensor entries together."""
    names = [k for k, v in values.items() if v is not None]
    tensors = [(k, v) for k, v in values.items() if isinstance(v, torch.Tensor)]
    bad: set[str] = set()
    if tensors:
        flags = torch.stack([torch.isfinite(v.detach()).all() for _, v in tensors]).cpu()  # (n,) bool
        bad |= {k for (k, _), ok in zip(tensors, flags.tolist()) if not ok}
    bad |= {k for k, v in values.items() if isinstance(v, (float, int)) and not math.isfinite(v)}
    return [k for k in names if k in bad]


def check_finite(
    step: int,
    phase: str,
    losses: Mapping[str, Number],
    grad_norm: Number | None = None,
    last_checkpoint: str | None = None,
) -> None:
    """Raise ``NonFiniteLossError`` if any loss component (any shape) or ``grad_norm`` is NaN/Inf.

    The message names the step, the phase, every non-finite component with its value, and the last good
    checkpoint, e.g. ``"step 3 (generator): recon=nan, grad_norm=inf; last good checkpoint: step-00000002"``.
    """
    values: dict[str, Number | None] = dict(losses)
    if grad_norm is not None:
        values["grad_norm"] = grad_norm
    bad = nonfinite_names(values)
    if bad:
        parts = ", ".join(f"{k}={_format(values[k])}" for k in bad)
        raise NonFiniteLossError(
            f"step {step} ({phase}): {parts}; last good checkpoint: {last_checkpoint or 'none'}"
        )


class NonFiniteGuard:
    """Stateful guard: ``check(...)`` returns True when the update may proceed.

    Args:
        policy: "raise" (stop at the first non-finite value) or "skip" (skip the update, count it).
        max_consecutive_skips: with "skip", raise when a phase has more than this many non-finite steps in a row.

    ``state_dict()``/``load_state_dict()`` carry the counters (plain ints) through checkpoints.
    """

    def __init__(self, policy: str = "raise", max_consecutive_skips: int = 3) -> None:
        if policy not in ("raise", "skip"):
            raise ValueError(f"policy must be 'raise' or 'skip'; got {policy!r}")
        if max_consecutive_skips < 0:
            raise ValueError(f"max_consecutive_skips must be >= 0; got {max_consecutive_skips}")
        self.policy = policy
        self.max_consecutive_skips = max_consecutive_skips
        self.total_skipped = 0
        self.consecutive: dict[str, int] = {}

    def check(
        self,
        step: int,
        phase: str,
        losses: Mapping[str, Number],
        grad_norm: Number | None = None,
        last_checkpoint: str | None = None,
        failed_elsewhere: bool = False,
    ) -> bool:
        """True when the update may proceed. `failed_elsewhere`: another data-parallel process saw a non-finite
        value at this step; this one then raises or skips too, so every process takes the same decision."""
        try:
            check_finite(step, phase, losses, grad_norm, last_checkpoint)
            if failed_elsewhere:
                raise NonFiniteLossError(f"step {step} ({phase}): another process saw a non-finite loss or gradient; "
                                         f"last good checkpoint: {last_checkpoint or 'none'}")
        except NonFiniteLossError as exc:
            if self.policy == "raise":
                raise
            run = self.consecutive.get(phase, 0) + 1
            if run > self.max_consecutive_skips:
                raise NonFiniteLossError(f"{exc} ({run} consecutive non-finite {phase} steps, more than "
                                         f"max_consecutive_skips={self.max_consecutive_skips})") from None
            self.consecutive[phase] = run
            self.total_skipped += 1
            logger.warning("skipping the update: %s (skip %d in a row, %d in total)", exc, run, self.total_skipped)
            return False
        self.consecutive[phase] = 0
        return True

    def passed(self, phase: str) -> None:
        """Record a step whose values were all finite on every process (ends a run of skips of `phase`)."""
        self.consecutive[phase] = 0

    def state_dict(self) -> dict[str, object]:
        return {"total_skipped": self.total_skipped, "consecutive": dict(self.consecutive)}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        self.total_skipped = int(state["total_skipped"])  # type: ignore[arg-type]
        self.consecutive = {str(k): int(v) for k, v in dict(state["consecutive"]).items()}  # type: ignore[arg-type]
