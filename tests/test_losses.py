"""Loss functions (known values) and TokenizerLoss (gradient routing, temporal discriminators, state_dict)."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from magvit2.config import TokenizerConfig
from magvit2.losses import (
    LeCamEMA,
    LossConfig,
    TokenizerLoss,
    adaptive_weight,
    hinge_d_loss,
    hinge_g_loss,
    lecam_reg,
    r1_penalty,
    reconstruction_loss,
)
from magvit2.perceptual import LPIPSDistance

TOKENIZER = TokenizerConfig(image_size=16, init_dim=8, max_dim=16, codebook_size=2**4,
                            layers=("residual", "compress_space"))


# -- stand-ins for the tokenizer's TokenizerOutput / QuantizerOutput (the tokenizer is not imported here) --------

@dataclass
class FakeQuantizerOutput:
    aux_loss: torch.Tensor
    per_sample_entropy: torch.Tensor
    codebook_entropy: torch.Tensor
    commitment: torch.Tensor
    entropy_weight: float
    usage: torch.Tensor
    perplexity: torch.Tensor


@dataclass
class FakeTokenizerOutput:
    recon: torch.Tensor
    quantizer: FakeQuantizerOutput


class FakeTokenizer(nn.Module):
    """recon = conv(video) with a 1x1x1 'last layer'; aux loss tied to a parameter."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.last = nn.Conv3d(3, 3, 1)
        self.code_scale = nn.Parameter(torch.tensor(0.5))

    def reconstruct(self, video: torch.Tensor) -> FakeTokenizerOutput:
        recon = self.last(video if video.ndim == 5 else video.unsqueeze(2)).view(video.shape)
        q = FakeQuantizerOutput(aux_loss=self.code_scale**2, per_sample_entropy=torch.tensor(0.1),
                                codebook_entropy=torch.tensor(2.0), commitment=torch.tensor(0.3), entropy_weight=0.1,
                                usage=torch.tensor(0.5), perplexity=torch.tensor(7.0))
        return FakeTokenizerOutput(recon=recon, quantizer=q)


def video(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def make_loss(**overrides) -> TokenizerLoss:
    torch.manual_seed(0)
    return TokenizerLoss(LossConfig(**overrides), TOKENIZER)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- pure functions -----------------------------------------------------------------------------------------------

def test_reconstruction_and_hinge_values():
    x, y = torch.zeros(2, 3), torch.full((2, 3), 0.5)
    assert reconstruction_loss(x, y, "l1").item() == pytest.approx(0.5)
    assert reconstruction_loss(x, y, "l2").item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="'l1' or 'l2'"):
        reconstruction_loss(x, y, "l3")
    with pytest.raises(ValueError, match="same-shape"):
        reconstruction_loss(x, y[:1])
    real, fake = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([-2.0, 0.5, 1.0])
    # real: relu(1 - [2, 0, -1]) = [0, 1, 2] -> 1; fake: relu(1 + [-2, .5, 1]) = [0, 1.5, 2] -> 7/6
    assert hinge_d_loss(real, fake).item() == pytest.approx(1 + 7 / 6)
    assert hinge_g_loss(fake).item() == pytest.approx(0.5 / 3)  # -mean(fake)


def test_adaptive_weight_matches_hand_computed_ratio():
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -1.0]]))
    x = torch.tensor([3.0, 4.0])
    out = layer(x)  # 0.5 * 3 - 4 = -2.5
    nll, g = out.pow(2).sum(), -3 * out.sum()
    # d nll / dW = 2 * out * x -> norm 2 * 2.5 * 5 = 25;  d g / dW = -3 x -> norm 15
    w = adaptive_weight(nll, g, layer.weight)
    assert w.item() == pytest.approx(25 / (15 + 1e-4))
    assert not w.requires_grad
    (nll + g).backward()  # graphs were retained
    unrelated = torch.tensor(1.0, requires_grad=True) * 2  # does not reach the layer: a zero gradient
    assert adaptive_weight(unrelated, layer(x).sum(), layer.weight).item() == 0.0
    assert adaptive_weight(layer(x).sum(), unrelated, layer.weight, max_weight=7.0).item() == 7.0  # clamped
    with pytest.raises(ValueError, match="requires grad"):
        adaptive_weight(nll, g, torch.zeros(2))


def test_r1_equals_the_analytic_gradient_norm():
    a = torch.randn(3, 2, 4, 4, generator=gen(1)).requires_grad_(True)
    x = video(5, 3, 2, 4, 4).requires_grad_(True)
    logits = (a * x).flatten(1).sum(dim=1)  # D(x) = sum(a * x): gradient a for every sample
    penalty = r1_penalty(logits, x)
    assert penalty.item() == pytest.approx(a.pow(2).sum().item(), rel=1e-5)
    (grad_a,) = torch.autograd.grad(penalty, a)  # create_graph: the penalty trains D
    torch.testing.assert_close(grad_a, 2 * a.detach())
    with pytest.raises(ValueError, match="require grad"):
        r1_penalty(logits, x.detach())


def test_lecam():
    ema_real, ema_fake = torch.tensor(1.0), torch.tensor(-1.0)
    assert lecam_reg(torch.tensor([-1.0, -1.0]), torch.tensor([1.0, 1.0]), ema_real, ema_fake).item() == 0.0
    assert lecam_reg(torch.tensor([-3.0]), torch.tensor([4.0]), ema_real, ema_fake).item() == 0.0  # one-sided
    # relu(0.5 - (-1))^2 = 2.25; relu(1 - 0)^2 = 1
    assert lecam_reg(torch.tensor([0.5]), torch.tensor([0.0]), ema_real, ema_fake).item() == pytest.approx(3.25)
    ema = LeCamEMA(decay=0.9)
    assert set(ema.state_dict()) == {"ema_real", "ema_fake"}
    reg = ema(torch.tensor([2.0, 4.0]), torch.tensor([-1.0]))  # uses the EMAs (0, 0), then updates them
    assert reg.item() == pytest.approx((4 + 16) / 2 + 1)
    assert ema.ema_real.item() == pytest.approx(0.3) and ema.ema_fake.item() == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="decay"):
        LeCamEMA(decay=1.0)


def test_loss_config_validation_and_round_trip():
    for bad in ({"recon_loss": "l3"}, {"adversarial_weight": -1.0}, {"temporal_window_lengths": (1,)},
                {"temporal_window_lengths": (4, 4)}, {"r1_interval": 0}, {"lecam_decay": 1.0},
                {"disc_dim": 0}, {"perceptual_max_frames": 0}, {"adaptive_weight_max": 0.0}):
        with pytest.raises(ValueError):
            LossConfig(**bad)
    config = LossConfig(temporal_window_lengths=[4, 8], disc_dim=32)
    assert config.temporal_window_lengths == (4, 8)
    assert LossConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown keys in LossConfig"):
        LossConfig.from_dict({"disc_weight": 1.0})


# -- TokenizerLoss ------------------------------------------------------------------------------------------------

def grads(params) -> list:
    return [p.grad for p in params]


def test_generator_loss_without_adversarial_skips_the_discriminators(monkeypatch):
    loss_fn, tok = make_loss(temporal_window_lengths=(2,)), FakeTokenizer()
    for module in (loss_fn.discriminator, *loss_fn.temporal.discriminators):
        monkeypatch.setattr(module, "forward", lambda *a: pytest.fail("discriminator ran"))
    x = video(2, 3, 5, 16, 16)
    total, parts = loss_fn.generator_loss(x, tok.reconstruct(x), tok.last.weight, step=0, use_adversarial=False)
    total.backward()
    assert all(g is None for g in grads(loss_fn.discriminator_parameters()))
    assert all(g is not None and torch.isfinite(g).all() for g in grads(tok.parameters()))
    d = parts.as_dict()
    assert all(type(v) is float for v in d.values()) and len(d) == 13
    assert d["adversarial"] == d["temporal_adversarial"] == d["adaptive_weight"] == 0.0
    assert d["total"] == pytest.approx(d["recon"] + d["quantizer_aux"])
    assert d["entropy_weight"] == pytest.approx(0.1) and d["perplexity"] == 7.0


def test_generator_loss_with_adversarial_trains_only_the_tokenizer():
    loss_fn, tok = make_loss(temporal_window_lengths=(2, 4)), FakeTokenizer()
    x = video(2, 3, 5, 16, 16)
    total, parts = loss_fn.generator_loss(x, tok.reconstruct(x), tok.last.weight, step=3, use_adversarial=True,
                                          generator=gen())
    total.backward()
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads(tok.parameters()))
    assert all(g is None for g in grads(loss_fn.discriminator_parameters()))  # D weights frozen in the G step
    assert all(p.requires_grad for p in loss_fn.discriminator_parameters())  # ... and unfrozen afterwards
    d = parts.as_dict()
    assert d["adaptive_weight"] > 0 and d["adversarial"] != 0 and d["temporal_adversarial"] != 0
    expected = d["recon"] + d["quantizer_aux"] + d["adaptive_weight"] * 0.1 * (d["adversarial"] +
                                                                                 d["temporal_adversarial"])
    assert d["total"] == pytest.approx(expected, rel=1e-5)
    again, _ = loss_fn.generator_loss(x, tok.reconstruct(x), tok.last.weight, use_adversarial=True, generator=gen())
    assert again.item() == total.item()  # deterministic given the generator
    with pytest.raises(ValueError, match="last_layer"):
        loss_fn.generator_loss(x, tok.reconstruct(x), None, use_adversarial=True, generator=gen())


def test_generator_loss_really_goes_through_the_discriminators(monkeypatch):
    """The reference applied hinge_g to raw pixels (-mean(recon)); a D that says 5 must give exactly -5."""
    loss_fn, tok = make_loss(temporal_window_lengths=(2, 4), use_adaptive_weight=False), FakeTokenizer()
    seen = []
    const = lambda w: seen.append(tuple(w.shape)) or torch.full((w.shape[0],), 5.0) + 0 * w.sum()  # noqa: E731
    for module in (loss_fn.discriminator, *loss_fn.temporal.discriminators):
        monkeypatch.setattr(module, "forward", const)
    x = video(2, 3, 5, 16, 16)
    _, parts = loss_fn.generator_loss(x, tok.reconstruct(x), tok.last.weight, use_adversarial=True, generator=gen())
    d = parts.as_dict()
    assert d["adversarial"] == -5.0 and d["temporal_adversarial"] == -5.0 and d["adaptive_weight"] == 1.0
    assert d["total"] == pytest.approx(d["recon"] + d["quantizer_aux"] - 0.5 - 0.5, rel=1e-5)
    assert seen == [(2, 3, 5, 16, 16), (2, 3, 2, 16, 16), (2, 3, 4, 16, 16)]


def test_discriminator_loss_trains_only_the_discriminators():
    loss_fn, tok = make_loss(temporal_window_lengths=(2, 4)), FakeTokenizer()
    x = video(2, 3, 5, 16, 16)
    recon = tok.reconstruct(x).recon  # not detached on purpose: the loss must detach it
    total, parts = loss_fn.discriminator_loss(x, recon, apply_r1=True, generator=gen())
    total.backward()
    assert all(g is None for g in grads(tok.parameters()))
    assert all(g is not None and torch.isfinite(g).all() for g in grads(loss_fn.discriminator_parameters()))
    d = parts.as_dict()
    assert all(type(v) is float for v in d.values())
    assert d["r1"] > 0 and d["temporal_hinge"] > 0
    c = loss_fn.config
    expected = d["hinge"] + d["temporal_hinge"] + c.lecam_weight * d["lecam"] + c.r1_weight * c.r1_interval * d["r1"]
    assert d["total"] == pytest.approx(expected, rel=1e-5)
    assert loss_fn.lecam.ema_real.item() != 0 and all(e.ema_fake.item() != 0 for e in loss_fn.temporal_lecam)
    _, no_r1 = loss_fn.discriminator_loss(x, recon, apply_r1=False, generator=gen())
    assert no_r1.r1.item() == 0.0
    assert [loss_fn.should_apply_r1(s) for s in range(5)] == [True, False, False, False, True]


def test_temporal_discriminators_judge_real_and_fake_on_the_same_windows(monkeypatch):
    loss_fn = make_loss(temporal_window_lengths=(2, 3))
    seen = {0: [], 1: []}
    for i, disc in enumerate(loss_fn.temporal.discriminators):
        monkeypatch.setattr(disc, "forward", lambda w, i=i: seen[i].append(w.detach().clone()) or w.mean((1, 2, 3, 4)))
    real, fake = video(3, 3, 7, 16, 16, seed=1), video(3, 3, 7, 16, 16, seed=2)
    loss_fn.discriminator_loss(real, fake, generator=gen(5))
    starts = loss_fn.temporal.sample_starts(3, 7, gen(5))  # the draw the D step made
    for i, (real_w, fake_w) in seen.items():
        length = loss_fn.temporal.window_lengths[i]
        for j, s in enumerate(starts[i].tolist()):
            torch.testing.assert_close(real_w[j], real[j, :, s:s + length])
            torch.testing.assert_close(fake_w[j], fake[j, :, s:s + length])


def test_images_work_end_to_end():
    loss_fn, tok = make_loss(temporal_window_lengths=(2,)), FakeTokenizer()
    x = video(2, 3, 16, 16)
    total, parts = loss_fn.generator_loss(x, tok.reconstruct(x), tok.last.weight, use_adversarial=True)
    total.backward()
    assert parts.temporal_adversarial.item() == 0.0 and parts.adversarial.item() != 0.0
    d_total, d_parts = loss_fn.discriminator_loss(x, tok.reconstruct(x).recon, apply_r1=True)
    d_total.backward()
    assert d_parts.temporal_hinge.item() == 0.0 and d_parts.r1.item() > 0
    with pytest.raises(ValueError, match="same shape"):
        loss_fn.discriminator_loss(x, x[:, :, :8])


def test_perceptual_term_and_state_dict_excludes_the_frozen_network():
    torch.manual_seed(0)
    config = LossConfig(perceptual_weight=0.1, perceptual_max_frames=2, temporal_window_lengths=(2,))
    loss_fn = TokenizerLoss(config, TOKENIZER, perceptual=LPIPSDistance(random_init=True))
    tok = FakeTokenizer()
    x = video(2, 3, 5, 16, 16)
    with pytest.raises(ValueError, match="generator"):
        loss_fn.generator_loss(x, tok.reconstruct(x), tok.last.weight, use_adversarial=False)
    total, parts = loss_fn.generator_loss(x, tok.reconstruct(x), tok.last.weight, use_adversarial=False,
                                          generator=gen())
    total.backward()
    assert parts.perceptual.item() > 0
    assert parts.total.item() == pytest.approx(parts.recon.item() + 0.1 * parts.perceptual.item() + 0.25, rel=1e-5)
    loss_fn.discriminator_loss(x, tok.reconstruct(x).recon, generator=gen())  # move the LeCam EMAs off 0
    state = loss_fn.state_dict()
    assert not any("perceptual" in k or "vgg" in k for k in state)
    assert {"lecam.ema_real", "lecam.ema_fake", "temporal_lecam.0.ema_real"} <= set(state)
    assert any(k.startswith("discriminator.") for k in state) and any(k.startswith("temporal.") for k in state)
    assert sum(p.numel() for p in loss_fn.parameters()) == sum(p.numel() for p in loss_fn.discriminator_parameters())
    for perceptual in (LPIPSDistance(random_init=True), None):
        fresh = TokenizerLoss(config if perceptual else LossConfig(temporal_window_lengths=(2,)), TOKENIZER,
                              perceptual=perceptual)
        fresh.load_state_dict(state, strict=True)
        for k, v in fresh.state_dict().items():
            torch.testing.assert_close(v, state[k])
