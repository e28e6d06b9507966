"""LFQ/FSQ adapters: agreement with vector-quantize-pytorch, exact factorised entropy, 2^18 codes in little memory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from vector_quantize_pytorch import LFQ

import magvit2.quantize as quantize
from magvit2 import TokenizerConfig
from magvit2.metrics import codebook_usage
from magvit2.quantize import LFQuantizer, entropy_weight_at


def config(bits=8, **kw) -> TokenizerConfig:
    return TokenizerConfig(image_size=8, codebook_size=2**bits, layers=("residual",), **kw)


def latents(dim, n_frames=2, seed=0, scale=0.01):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, dim, n_frames, 4, 4, generator=g) * scale


def test_indices_and_eval_codes_match_the_library():
    q = LFQuantizer(16, config(8)).eval()
    lib = LFQ(dim=16, codebook_size=2**8, channel_first=True).eval()
    lib.load_state_dict(q.lfq.state_dict())
    x = latents(16, scale=1.0)
    ours = q(x)
    lib_out, lib_indices, _ = lib(x)
    assert torch.equal(ours.indices, lib_indices)
    torch.testing.assert_close(ours.quantized, lib_out)
    assert torch.equal(q.indices_to_codes(ours.indices), ours.quantized)


def test_factorised_entropies_equal_the_librarys_full_softmax():
    # one group of 8 bits is the exact codebook entropy; per-sample entropy factorises exactly
    q = LFQuantizer(8, config(8)).train()
    lib = LFQ(dim=8, codebook_size=2**8, channel_first=True).train()  # dim == bits: no projections in either
    x = latents(8, scale=0.01)  # small values: soft assignments, away from the library's log clamp
    ours = q(x)
    _, (lib_per_sample, lib_codebook, _) = lib(x, inv_temperature=100.0, return_loss_breakdown=True)
    torch.testing.assert_close(ours.per_sample_entropy, lib_per_sample, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.codebook_entropy, lib_codebook, atol=1e-4, rtol=1e-4)
    assert ours.per_sample_entropy > 0 and ours.codebook_entropy > 0


def test_grouped_codebook_entropy_upper_bounds_the_exact_one():
    x = latents(8, scale=0.02, seed=3)
    exact = LFQuantizer(8, config(8)).train()(x).codebook_entropy
    grouped = LFQuantizer(8, config(8, lfq_entropy_groups=2)).train()(x).codebook_entropy
    assert grouped >= exact - 1e-5  # entropy is subadditive: H(joint) <= sum of the groups' entropies
    assert grouped <= 8 * torch.log(torch.tensor(2.0)) + 1e-5


def test_chunked_entropy_equals_unchunked_values_and_gradients(monkeypatch):
    x = latents(8, scale=0.02, seed=1).requires_grad_()
    q = LFQuantizer(8, config(8, lfq_entropy_groups=2)).train()
    full = q(x).aux_loss
    (grad_full,) = torch.autograd.grad(full, x)
    monkeypatch.setattr(quantize, "ENTROPY_CHUNK", 7)
    chunked = q(x).aux_loss
    (grad_chunked,) = torch.autograd.grad(chunked, x)
    torch.testing.assert_close(chunked, full)
    torch.testing.assert_close(grad_chunked, grad_full)


def test_aux_loss_combines_weights_and_commitment():
    cfg = config(6, lfq_entropy_loss_weight=0.1, lfq_commitment_loss_weight=0.25, lfq_diversity_gamma=1.0)
    out = LFQuantizer(6, cfg).train()(latents(6, scale=0.5))
    expected = 0.1 * (out.per_sample_entropy - out.codebook_entropy) + 0.25 * out.commitment
    torch.testing.assert_close(out.aux_loss, expected)
    assert out.commitment > 0
    evaluated = LFQuantizer(6, cfg).eval()(latents(6))
    assert evaluated.aux_loss == 0


def test_entropy_weight_annealing_schedule():
    cfg = config(6, lfq_entropy_loss_weight=0.1, lfq_entropy_anneal_steps=100, lfq_entropy_anneal_start_weight=0.5)
    assert entropy_weight_at(cfg, 0) == pytest.approx(0.5)
    assert entropy_weight_at(cfg, 50) == pytest.approx(0.3)
    assert entropy_weight_at(cfg, 100) == pytest.approx(0.1)
    assert entropy_weight_at(cfg, 10_000) == pytest.approx(0.1)
    assert entropy_weight_at(config(6), 0) == pytest.approx(0.1)
    q = LFQuantizer(6, cfg).train()
    assert q(latents(6), step=50).entropy_weight == pytest.approx(0.3)


def test_codebook_usage_and_perplexity():
    usage, perplexity = codebook_usage(torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]), 8)
    assert usage == pytest.approx(0.5)
    assert perplexity == pytest.approx(4.0)
    usage, perplexity = codebook_usage(torch.zeros(10, dtype=torch.long), 8)
    assert usage == pytest.approx(1 / 8) and perplexity == pytest.approx(1.0)


def test_entropy_loss_pushes_toward_confident_and_diverse_codes():
    torch.manual_seed(0)
    cfg = config(4, lfq_entropy_loss_weight=1.0, lfq_commitment_loss_weight=0.0)
    q = LFQuantizer(4, cfg).train()
    x = (torch.randn(4, 4, 1, 8, 8) * 0.001).requires_grad_()
    opt = torch.optim.Adam([x], lr=0.01)
    start = None
    for _ in range(60):
        out = q(x)
        start = start if start is not None else float(out.usage)
        opt.zero_grad()
        out.aux_loss.backward()
        opt.step()
    out = q(x)
    assert out.per_sample_entropy.item() < 0.5  # confident
    assert out.codebook_entropy.item() > 0.9 * 4 * 0.693  # close to uniform over 16 codes
    assert float(out.usage) == 1.0


MEMORY_PROBE = r"""
import json, resource, torch
from magvit2 import TokenizerConfig
from magvit2.quantize import LFQuantizer
torch.manual_seed(0)
cfg = TokenizerConfig(image_size=8, codebook_size=2**18, layers=("residual",))
q = LFQuantizer(64, cfg).train()
x = (torch.randn(1, 64, 5, 16, 16) * 0.1).requires_grad_()  # 1 x 5 x 16 x 16 = 1,280 tokens
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = q(x)
out.aux_loss.backward()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"delta_mb": (after - before) / 1024, "finite": bool(torch.isfinite(x.grad).all()),
                  "codebook_entropy": float(out.codebook_entropy), "usage_codes": int(out.indices.unique().numel())}))
"""


def test_2_to_the_18_lfq_loss_runs_in_far_less_memory_than_the_full_matrix():
    result = subprocess.run([sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    full_matrix_mb = 1280 * 2**18 * 4 / 2**20  # one fp32 tokens x codes matrix: 1,280 MB (softmax + grad: several)
    assert stats["finite"]
    assert stats["delta_mb"] < full_matrix_mb / 10, stats
    assert 0 < stats["codebook_entropy"] <= 18 * 0.6932


def fsq_config(**kw) -> TokenizerConfig:
    return TokenizerConfig(image_size=8, use_fsq=True, fsq_levels=(8, 5, 3), layers=("residual",), **kw)


@pytest.mark.parametrize("symmetric", [False, True])
def test_fsq_level_values_round_to_the_librarys_codes(symmetric):
    """The soft assignment's centres are the library's levels: rounding the level-unit values gives its indices."""
    q = quantize.FSQuantizer(16, fsq_config(fsq_entropy_loss_weight=0.1, fsq_preserve_symmetry=symmetric)).train()
    x = latents(16, scale=2.0)
    out = q(x)
    z = q.fsq.project_in(x.permute(0, 2, 3, 4, 1).reshape(-1, 16))
    levels = q.level_values(z).round().long()  # (n, 3) level indices
    assert levels.min() >= 0 and bool((levels < torch.tensor([8, 5, 3])).all())
    assert torch.equal((levels * torch.tensor([1, 8, 40])).sum(-1), out.indices.flatten())


def test_fsq_codebook_entropy_is_the_exact_joint_entropy_in_chunks(monkeypatch):
    q = quantize.FSQuantizer(16, fsq_config(fsq_entropy_loss_weight=0.1)).train()
    z = torch.randn(50, 3, generator=torch.Generator().manual_seed(1))
    probs = (-(q.level_values(z)[..., None] - torch.arange(8.0)) ** 2 / 0.5)
    probs = [probs[:, d, :n].softmax(-1) for d, n in enumerate((8, 5, 3))]
    joint = torch.einsum("na,nb,nc->ncba", *probs).reshape(50, -1).mean(0)  # first dimension fastest
    expected = -(joint * joint.log()).sum()
    per_token, codebook = q.entropies(z)
    assert codebook == pytest.approx(float(expected), rel=1e-5)
    monkeypatch.setattr(quantize, "FSQ_JOINT_CHUNK", 7 * 120)  # chunks of 7 tokens
    assert q.entropies(z)[1] == pytest.approx(float(expected), rel=1e-5)
    assert per_token == pytest.approx(float(sum(-(p * p.log()).sum(-1) for p in probs).mean()), rel=1e-5)


def test_fsq_entropy_loss_spreads_codes_and_is_off_by_default():
    torch.manual_seed(0)
    x = (torch.randn(4, 3, 1, 8, 8) * 0.01).requires_grad_()  # every value near one level: one code to start
    plain = quantize.FSQuantizer(3, fsq_config()).train()
    assert float(plain(x).aux_loss) == 0.0 and plain(x).aux_loss.grad_fn is None
    q = quantize.FSQuantizer(3, fsq_config(fsq_entropy_loss_weight=1.0)).train()
    assert isinstance(q.fsq.project_in, torch.nn.Identity)  # 3 values per token: the optimiser moves them directly
    start = q(x)
    opt = torch.optim.Adam([x], lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        q(x).aux_loss.backward()
        opt.step()
    end = q(x)
    assert float(start.usage) < 0.05 and float(end.usage) > 0.5
    assert end.codebook_entropy > start.codebook_entropy + 2.0
    assert float(q.eval()(x).aux_loss) == 0.0  # a training-only loss


@pytest.mark.parametrize("kwargs, message", [
    (dict(fsq_entropy_loss_weight=-1.0), "fsq_entropy_loss_weight must be a finite number >= 0"),
    (dict(fsq_entropy_temperature=0.0), "fsq_entropy_temperature must be a finite number > 0"),
])
def test_fsq_entropy_settings_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fsq_config(**kwargs)
    with pytest.raises(ValueError, match="use_fsq=False"):
        config(4, fsq_entropy_loss_weight=0.1)
