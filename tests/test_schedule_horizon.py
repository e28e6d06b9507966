"""run.schedule_horizon: max_minutes: the LR decays over the steps that fit in the minutes, one horizon for every
process, kept across a resume."""

from __future__ import annotations

import json

import pytest

import trainers.base
from tests.helpers.commands import launch, ok
from tests.helpers.training import make_stage_two, maskgit_trainer
from trainers.checkpointing import CheckpointManager
from trainers.configs import RunConfig
from trainers.horizon import ScheduleHorizon
from trainers.optim import lr_at


@pytest.fixture(scope="module")
def stage_two(tmp_path_factory):
    return make_stage_two(tmp_path_factory.mktemp("stage2"))


def test_the_estimate_waits_for_a_fifth_of_the_minutes_then_the_smallest_wins():
    h = ScheduleHorizon("max_minutes", max_steps=1000, max_minutes=10.0)
    assert h.steps == 1000 and h.pending
    assert h.signal(9, 0, 1.0)[0] == 0.0  # 1 of 10 minutes: not yet
    ready, mine = h.signal(19, 0, 2.0)  # 20 updates in 2 minutes: 80 more fit, 95% of them counted
    assert ready == 1.0 and mine == -(20 + 76)
    other = -50.0  # a slower process's estimate; the all-reduce takes the MAX of the negatives
    assert h.agree(0.0, max(mine, other), 19) is None and h.pending  # nobody ready: nothing fixed
    assert h.agree(1.0, max(mine, other), 19) == 50 and h.steps == 50 and not h.pending
    assert h.signal(30, 0, 3.0) == (0.0, float("-inf"))  # fixed once
    resumed = ScheduleHorizon("max_minutes", max_steps=1000, max_minutes=10.0)
    resumed.load_state_dict(h.state_dict())
    assert resumed.steps == 50 and not resumed.pending
    by_steps = ScheduleHorizon("max_steps", max_steps=1000, max_minutes=10.0)
    by_steps.load_state_dict(h.state_dict())  # a run that decays over max_steps ignores a saved minutes horizon
    assert by_steps.steps == 1000 and by_steps.signal(19, 0, 2.0) == (0.0, float("-inf"))
    capped = ScheduleHorizon("max_minutes", max_steps=60, max_minutes=10.0)
    assert capped.agree(1.0, -5000.0, 19) == 60  # never beyond max_steps
    resumed_later = ScheduleHorizon("max_minutes", max_steps=1000, max_minutes=10.0)
    assert resumed_later.agree(1.0, -3.0, 19) == 20  # at least the update being made


def test_config_refuses_a_minutes_horizon_without_minutes():
    with pytest.raises(ValueError, match=r"needs run\.max_minutes"):
        RunConfig(schedule_horizon="max_minutes")
    with pytest.raises(ValueError, match=r"run\.schedule_horizon must be one of"):
        RunConfig(schedule_horizon="epochs", max_minutes=1.0)
    assert RunConfig(schedule_horizon="max_minutes", max_minutes=1.0).schedule_horizon == "max_minutes"


def test_a_run_stopped_by_time_ends_its_cosine_and_a_resume_keeps_the_horizon(stage_two, tmp_path, monkeypatch):
    """A clock of 0.1 minute per update and 1 minute: the rate is measured at 0.2 minutes (step 2), 14 steps fit
    (3 + 95% of 12), the run stops on time at step 11 with the LR on that cosine; the checkpoint holds the horizon."""
    flags = ("--max-steps", "1000", "--max-minutes", "1", "--schedule-horizon", "max_minutes")
    trainer = maskgit_trainer(stage_two, tmp_path / "run", *flags)

    class StepClock:
        def minutes(self) -> float:
            return trainer.step / 10

    monkeypatch.setattr(trainers.base, "Clock", StepClock)
    summary = trainer.fit()
    assert summary["step"] == 11 and trainer.horizon.steps == 14
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["lr"] for r in rows if r["kind"] == "train"}
    optim = trainer.config.optim
    assert lrs[3] == pytest.approx(lr_at(optim, 2, 1000))  # the update that measured the rate
    for step in range(4, 12):  # then the cosine over 14 steps
        assert lrs[step] == pytest.approx(lr_at(optim, step - 1, 14))
    assert lrs[11] < 0.4 * optim.lr < 0.99 * optim.lr < lr_at(optim, 10, 1000)  # decayed; a 1000-step one had not
    state = json.loads((CheckpointManager(tmp_path / "run").latest() / "state.json").read_text())
    assert state["schedule_horizon"] == {"mode": "max_minutes", "calibrated": 14}
    resumed = maskgit_trainer(stage_two, tmp_path / "run", *flags, resume="latest")
    assert resumed.horizon.steps == 14 and not resumed.horizon.pending


@pytest.mark.slow
def test_two_processes_decay_over_one_horizon(tmp_path, make_clip):
    """Process 1's clock runs twice as fast: it is ready first (step 2) and its estimate (14 steps) is the smaller
    one, so both processes take 14, and both stop when process 1's minutes are up (step 11)."""
    for photo in ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "brick"):
        make_clip(f"data/{photo}.mp4", num_frames=7, size=(20, 24), photo=photo)
    ok(launch("tests.distributed_worker", "horizon", str(tmp_path), processes=2))
    for rank in (0, 1):
        report = json.loads((tmp_path / f"horizon-{rank}.json").read_text())
        assert report == {"world_size": 2, "horizon": 14, "step": 11}
