import math

import pytest
import torch
import torch.nn.functional as F

from maskgit.config import MaskGitConfig
from maskgit.objective import masked_token_loss, random_token_mask
from maskgit.text import TextEmbedding
from maskgit.transformer import MaskGitTransformer
from tests.helpers.models import TEXT_DIM, FakeModel, codes_and_text, tiny_maskgit_config


def tiny_model(**overrides) -> MaskGitTransformer:
    torch.manual_seed(0)
    return MaskGitTransformer(tiny_maskgit_config(**overrides))


def test_at_least_one_masked_even_for_n_equals_1():
    model = FakeModel(MaskGitConfig(codebook_size=64, latent_shape=(1, 1, 1), text_dim=TEXT_DIM))
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 64, (512, 1), generator=gen)
    _, stats = masked_token_loss(model, codes, None, gen)
    assert stats.mask.all()
    model = FakeModel(MaskGitConfig(codebook_size=64, latent_shape=(2, 4, 4), text_dim=TEXT_DIM))
    for seed in range(20):
        _, stats = masked_token_loss(model, codes_and_text(64, 32, seed)[0], None, torch.Generator().manual_seed(seed))
        assert (stats.mask.sum(-1) >= 1).all()


def test_random_token_mask_counts_and_uniformity():
    gen = torch.Generator().manual_seed(0)
    counts = torch.tensor([1, 5, 32, 17] * 500)
    mask = random_token_mask(counts, 32, gen, torch.device("cpu"))
    assert torch.equal(mask.sum(-1), counts)
    per_position = mask[counts == 5].float().mean(0)  # each position equally likely: 5/32
    assert torch.all((per_position - 5 / 32).abs() < 0.06)


def test_inputs_are_masked_and_mask_fraction_matches_cosine():
    model = FakeModel(MaskGitConfig(codebook_size=64, latent_shape=(2, 4, 4), text_dim=TEXT_DIM))
    codes, _ = codes_and_text(4000, 32)
    _, stats = masked_token_loss(model, codes, None, torch.Generator().manual_seed(0))
    inputs = model.calls[0]["inputs"]
    assert torch.all(inputs[stats.mask] == 64) and torch.equal(inputs[~stats.mask], codes[~stats.mask])
    assert stats.mask_fraction == pytest.approx(2 / math.pi, abs=0.02)  # E[cos(pi/2 U)]


def test_loss_only_on_masked_positions():
    config = MaskGitConfig(codebook_size=64, latent_shape=(2, 4, 4), text_dim=TEXT_DIM)
    codes, text = codes_and_text()

    def unmasked_noise(inputs, logits):
        noise = 100 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(5))
        return logits + noise * (inputs != 64)[..., None]

    def masked_noise(inputs, logits):
        noise = 100 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(5))
        return logits + noise * (inputs == 64)[..., None]

    base, stats = masked_token_loss(FakeModel(config), codes, text, torch.Generator().manual_seed(1))
    same, _ = masked_token_loss(FakeModel(config, unmasked_noise), codes, text, torch.Generator().manual_seed(1))
    other, _ = masked_token_loss(FakeModel(config, masked_noise), codes, text, torch.Generator().manual_seed(1))
    assert float(base) == float(same)
    assert abs(float(other) - float(base)) > 1.0  # negative control
    table = FakeModel(config).table.expand(8, -1, -1)
    expected = F.cross_entropy(table[stats.mask], codes[stats.mask])
    assert float(base) == pytest.approx(float(expected), rel=1e-6)
    smoothed, _ = masked_token_loss(FakeModel(config), codes, text, torch.Generator().manual_seed(1),
                                    label_smoothing=0.1)
    expected = F.cross_entropy(table[stats.mask], codes[stats.mask], label_smoothing=0.1)
    assert float(smoothed) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize(("p", "lo", "hi"), [(0.1, None, None), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)])
def test_condition_dropout_rate(p, lo, hi):
    config = MaskGitConfig(codebook_size=64, latent_shape=(1, 2, 2), text_dim=TEXT_DIM)
    model = FakeModel(config)
    b = 4000
    codes = torch.randint(0, 64, (b, 4), generator=torch.Generator().manual_seed(0))
    text = TextEmbedding(torch.zeros(b, 1, TEXT_DIM), torch.ones(b, 1, dtype=torch.bool))
    _, stats = masked_token_loss(model, codes, text, torch.Generator().manual_seed(0), cond_drop_prob=p)
    assert torch.equal(model.calls[0]["drop_text"], stats.drop_text)
    rate = stats.drop_text.float().mean().item()
    assert rate == stats.drop_fraction
    if lo is None:
        sigma = math.sqrt(p * (1 - p) / b)
        assert abs(rate - p) < 3 * sigma
    else:
        assert lo <= rate <= hi


def test_condition_dropout_default_is_explicit():
    config = MaskGitConfig(codebook_size=64, latent_shape=(1, 2, 2), text_dim=TEXT_DIM)
    assert not hasattr(config, "cond_drop_prob")  # a training setting: the caller passes it
    codes = torch.randint(0, 64, (4000, 4), generator=torch.Generator().manual_seed(0))
    _, default = masked_token_loss(FakeModel(config), codes, None, torch.Generator().manual_seed(0))
    _, explicit = masked_token_loss(FakeModel(config), codes, None, torch.Generator().manual_seed(0),
                                    cond_drop_prob=0.1)
    assert torch.equal(default.drop_text, explicit.drop_text)  # the default is 0.1
    assert abs(default.drop_fraction - 0.1) < 3 * math.sqrt(0.1 * 0.9 / 4000)
    _, always = masked_token_loss(FakeModel(config), codes[:16], None, torch.Generator().manual_seed(0),
                                  cond_drop_prob=1.0)
    assert always.drop_text.all()
    for name, value in (("cond_drop_prob", 1.5), ("label_smoothing", 1.0)):
        with pytest.raises(ValueError, match=name):
            masked_token_loss(FakeModel(config), codes[:16], None, torch.Generator().manual_seed(0), **{name: value})


def test_dropped_rows_really_see_the_null_embedding():
    model = tiny_model().eval()
    codes, text = codes_and_text(8, 32, seed=3)
    recorded = {}

    def recorder(inputs, text_, drop_text=None, **kwargs):
        recorded.update(inputs=inputs, drop=drop_text)
        recorded["logits"] = model(inputs, text_, drop_text, **kwargs)
        return recorded["logits"]

    recorder.config = model.config
    masked_token_loss(recorder, codes, text, torch.Generator().manual_seed(0), cond_drop_prob=0.5)
    drop = recorded["drop"]
    assert drop.any() and (~drop).any()
    garbage = TextEmbedding(torch.randn(8, 11, TEXT_DIM), torch.ones(8, 11, dtype=torch.bool))
    with torch.no_grad():
        null_logits = model(recorded["inputs"], garbage, torch.ones(8, dtype=torch.bool))[0]
    logits = recorded["logits"][0].detach()
    assert torch.allclose(logits[drop], null_logits[drop], atol=1e-5)
    assert not torch.allclose(logits[~drop], null_logits[~drop], atol=1e-3)


def test_real_model_loss_deterministic_backprop_and_global_rng():
    model = tiny_model()
    codes, text = codes_and_text()
    state = torch.get_rng_state()
    loss_a, stats_a = masked_token_loss(model, codes, text, torch.Generator().manual_seed(7))
    loss_b, stats_b = masked_token_loss(model, codes, text, torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)
    assert loss_a.item() == loss_b.item() and torch.equal(stats_a.mask, stats_b.mask)
    assert loss_a.item() == pytest.approx(math.log(64), rel=0.1)  # near-uniform logits at init
    loss_a.backward()
    assert model.null_text.grad is not None or not stats_a.drop_text.any()
    assert set(stats_a.as_dict()) == {"loss", "accuracy", "mask_fraction", "drop_fraction", "self_conditioned"}
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        masked_token_loss(model, torch.full((2, 32), 64), None, torch.Generator())


def test_factorised_loss_sums_two_factors():
    model = tiny_model(codebook_size=2**18)
    codes = torch.randint(0, 2**18, (4, 2, 4, 4), generator=torch.Generator().manual_seed(0))
    loss, stats = masked_token_loss(model, codes, None, torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(2 * math.log(512), rel=0.1)
    assert stats.mask.shape == (4, 32)
    loss.backward()


def test_self_conditioning_two_passes():
    model = tiny_model(self_condition=True)
    codes, text = codes_and_text(4)
    calls = []

    def counting(*args, **kwargs):
        calls.append(kwargs.get("self_cond"))
        return model(*args, **kwargs)

    counting.config = model.config
    loss, stats = masked_token_loss(counting, codes, text, torch.Generator().manual_seed(0), self_cond_prob=1.0)
    assert stats.self_conditioned and len(calls) == 2 and calls[0] is None and calls[1].shape == (4, 32, 32)
    assert not calls[1].requires_grad
    loss.backward()
    calls.clear()
    _, stats = masked_token_loss(counting, codes, text, torch.Generator().manual_seed(0), self_cond_prob=0.0)
    assert not stats.self_conditioned and len(calls) == 1
