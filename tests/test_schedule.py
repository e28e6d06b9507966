import math

import pytest
import torch

from maskgit.schedule import SCHEDULES, mask_ratio, num_to_mask, sample_mask_ratios, train_num_masked


def test_cosine_values():
    assert mask_ratio(0.0) == 1.0
    assert mask_ratio(0.5) == pytest.approx(math.cos(math.pi / 4))
    assert mask_ratio(1.0) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("kind", SCHEDULES)
def test_schedules_monotone_with_endpoints(kind):
    r = torch.linspace(0, 1, 101, dtype=torch.float64)
    ratios = mask_ratio(r, kind)
    assert torch.all(ratios[1:] <= ratios[:-1])
    assert ratios[0] == pytest.approx(1.0)
    assert ratios[-1] == pytest.approx(0.0, abs=1e-12)
    assert torch.all((ratios >= 0) & (ratios <= 1))
    for x in (0.0, 0.3, 0.77, 1.0):  # float and tensor paths agree
        assert mask_ratio(x, kind) == pytest.approx(float(mask_ratio(torch.tensor(x, dtype=torch.float64), kind)))


def test_known_closed_forms():
    assert mask_ratio(0.5, "linear") == pytest.approx(0.5)
    assert mask_ratio(0.5, "square") == pytest.approx(0.75)
    assert mask_ratio(0.25, "sqrt") == pytest.approx(0.5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown mask schedule"):
        mask_ratio(0.5, "nope")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mask_ratio(1.5)


def test_num_to_mask_floors():
    assert num_to_mask(100, 0.5) == math.floor(100 * math.cos(math.pi / 4))  # 70
    assert num_to_mask(100, 1.0) == 0
    assert num_to_mask(7, 0.0) == 7
    got = num_to_mask(torch.tensor([10, 100]), 0.5)
    assert got.tolist() == [7, 70]


def test_training_ratio_sampler_is_seeded_and_leaves_global_rng():
    state = torch.get_rng_state()
    a = sample_mask_ratios(1000, torch.Generator().manual_seed(3))
    b = sample_mask_ratios(1000, torch.Generator().manual_seed(3))
    c = sample_mask_ratios(1000, torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (1000,) and torch.all((a >= 0) & (a <= 1))
    # E[cos(pi/2 U)] = 2/pi
    assert float(a.mean()) == pytest.approx(2 / math.pi, abs=0.03)


def test_train_num_masked_at_least_one():
    ratios = torch.tensor([0.0, 1e-6, 0.5, 1.0])
    assert train_num_masked(ratios, 10).tolist() == [1, 1, 5, 10]
    assert train_num_masked(ratios, 1).tolist() == [1, 1, 1, 1]
