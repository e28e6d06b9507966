"""R6: non-finite losses/gradients stop (or skip) the update, with a message naming step, phase and component."""

from __future__ import annotations

import pytest
import torch

from trainers.guards import NonFiniteGuard, NonFiniteLossError, check_finite


def test_finite_values_pass():
    check_finite(1, "generator", {"recon": torch.tensor(0.5), "adv": 0.1, "per_sample": torch.ones(4)},
                 grad_norm=torch.tensor(3.0))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_loss_names_step_phase_component_and_checkpoint(bad):
    losses = {"recon": torch.tensor(0.3), "grad_penalty": torch.tensor(bad)}
    with pytest.raises(NonFiniteLossError, match=r"step 37 \(discriminator\): grad_penalty=(nan|inf|-inf); "
                                                 r"last good checkpoint: step-00000036"):
        check_finite(37, "discriminator", losses, last_checkpoint="step-00000036")


def test_non_finite_grad_norm_with_finite_loss():
    with pytest.raises(NonFiniteLossError, match=r"step 3 \(generator\): grad_norm=inf; last good checkpoint: none"):
        check_finite(3, "generator", {"loss": 1.0}, grad_norm=torch.tensor(float("inf")))


def test_guard_stops_before_the_update_like_torchtitan():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = NonFiniteGuard("raise")
    snapshot = None
    with pytest.raises(NonFiniteLossError, match="step 3"):
        for step in range(1, 5):
            loss = model(torch.ones(2, 3)).mean()
            if step == 3:
                loss = loss * float("nan")
                snapshot = [p.detach().clone() for p in model.parameters()]
            optimizer.zero_grad()
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if guard.check(step, "generator", {"loss": loss}, norm):
                optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), snapshot))


def test_skip_policy_counts_and_raises_after_too_many_in_a_row():
    guard = NonFiniteGuard("skip", max_consecutive_skips=3)
    nan = {"loss": float("nan")}
    assert guard.check(1, "generator", nan) is False
    assert guard.check(2, "generator", nan) is False
    assert guard.check(3, "generator", {"loss": 0.5}) is True  # a good step resets the run
    assert guard.total_skipped == 2
    for step in (4, 5, 6):
        assert guard.check(step, "generator", nan) is False
    assert guard.check(7, "discriminator", nan) is False  # phases are counted separately
    state = guard.state_dict()
    restored = NonFiniteGuard("skip", max_consecutive_skips=3)
    restored.load_state_dict(state)
    with pytest.raises(NonFiniteLossError, match=r"step 8 \(generator\).*4 consecutive"):
        restored.check(8, "generator", nan)
    with pytest.raises(ValueError, match="policy"):
        NonFiniteGuard("ignore")
