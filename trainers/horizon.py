"""What a decaying learning-rate schedule spans: run.max_steps, or the steps that fit in run.max_minutes.

With `run.schedule_horizon: max_minutes`, a run that stops on time still ends its cosine (or linear) decay: once a
fifth of the minutes has passed, each process estimates how many updates fit in the whole budget from its own step
rate (with a 5% margin for validations and checkpoints); the processes agree on the smallest estimate, in the same
all-reduce as the other per-update decisions (`Trainer.update`), and the LR is a pure function of the step and that
horizon from then on. The horizon is kept in checkpoints: a resumed run decays over the same steps. Without it, a
run stopped by time ends with its LR wherever the step count left it (the demo's used to stop at 60% of its cosine).
"""

from __future__ import annotations

from typing import Any

HORIZONS = ("max_steps", "max_minutes")
CALIBRATE_AT = 0.2  # share of run.max_minutes after which the step rate is measured
MARGIN = 0.95  # share of the estimated remaining steps the schedule spans (validation, checkpoints, rate drift)


class ScheduleHorizon:
    """The LR schedule's step horizon (`steps`), fixed by every process together when it comes from the minutes."""

    def __init__(self, mode: str, max_steps: int, max_minutes: float | None) -> None:
        if mode not in HORIZONS:
            raise ValueError(f"run.schedule_horizon must be one of {HORIZONS}; got {mode!r}")
        if mode == "max_minutes" and max_minutes is None:
            raise ValueError("run.schedule_horizon max_minutes needs run.max_minutes (--max-minutes)")
        self.mode, self.max_steps, self.max_minutes = mode, max_steps, max_minutes
        self.calibrated: int | None = None

    @property
    def pending(self) -> bool:
        return self.mode == "max_minutes" and self.calibrated is None

    @property
    def steps(self) -> int:
        """The horizon the schedule decays over (never beyond run.max_steps)."""
        return self.calibrated if self.calibrated is not None else self.max_steps

    def signal(self, step: int, start_step: int, minutes: float) -> tuple[float, float]:
        """This process's (ready, -estimate) for the update that makes step `step` + 1, in a run (invocation) that
        started at `start_step` `minutes` ago; (0, -inf) when nothing is to calibrate. Reduced with MAX over the
        processes: ready anywhere, and the smallest estimate."""
        if not self.pending or minutes <= 0:
            return 0.0, float("-inf")
        done = step + 1 - start_step
        remaining = max(self.max_minutes - minutes, 0.0) * done / minutes  # updates that fit at this rate
        estimate = step + 1 + int(MARGIN * remaining)
        return float(minutes >= CALIBRATE_AT * self.max_minutes), -float(estimate)

    def agree(self, ready_any: float, neg_estimate: float, step: int) -> int | None:
        """Fix the horizon when any process was ready (the agreed values of `signal`); returns it when it was set
        now."""
        if not self.pending or not ready_any:
            return None
        self.calibrated = max(min(int(-neg_estimate), self.max_steps), step + 1)
        return self.calibrated

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "calibrated": self.calibrated}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """A checkpoint's horizon; kept only when this run also takes it from the minutes."""
        if state and state.get("mode") == self.mode == "max_minutes" and state.get("calibrated") is not None:
            self.calibrated = min(int(state["calibrated"]), self.max_steps)
