"""Refinement rounds of the MaskGIT sampler (`refine_steps`): they only trade a token for a more likely one, never
touch primes, cost one model pass each, and leave the main decode's draws unchanged."""

import pytest
import torch

from maskgit.sampler import sample
from maskgit.transformer import split_codes
from tests.helpers.fake_logits import FakeLogits, run


def logp_of(fn: FakeLogits, codes: torch.Tensor, vocab, temperature: float) -> torch.Tensor:
    """(b, n) summed log-probability of `codes` under the fake model's conditional table at `temperature`."""
    total = 0.0
    for table, ids in zip(fn.cond, split_codes(codes, vocab)):
        logp = (table / temperature).log_softmax(-1)  # (n, v)
        total = total + logp.gather(-1, ids.t()).t()
    return total


@pytest.mark.parametrize("vocab", [(64,), (8, 8)])
def test_refinement_only_raises_token_probability(vocab):
    b, n, t = 4, 48, 2.0  # a hot temperature: the main decode leaves many unlikely tokens behind
    fn = FakeLogits(n, vocab, b, seed=3)
    plain = run(fn, b=b, n=n, vocab=vocab, num_steps=6, temperature=t)
    refined = run(fn, b=b, n=n, vocab=vocab, num_steps=6, temperature=t, refine_steps=12, refine_ratio=0.5)
    before, after = logp_of(fn, plain, vocab, t), logp_of(fn, refined, vocab, t)
    changed = refined != plain
    assert bool(changed.any()), "12 rounds over half the tokens changed nothing"
    assert bool((after[changed] > before[changed]).all())  # every change is an improvement under the model
    assert float(after.sum()) > float(before.sum())


def test_refinement_keeps_primes_and_counts_passes():
    b, n, vocab = 2, 32, (64,)
    known = torch.full((b, n), -1, dtype=torch.long)
    known[:, :8] = torch.arange(8)  # primes: codes 0..7 in the first 8 positions
    fn = FakeLogits(n, vocab, b, seed=1)
    out = run(fn, b=b, n=n, vocab=vocab, num_steps=4, known_codes=known, temperature=3.0, refine_steps=5,
              refine_ratio=1.0, guidance_scale=2.0)
    assert torch.equal(out[:, :8], known[:, :8])
    assert fn.rows == [2 * b] * (4 + 5)  # every step and every round: one guided (2B) pass


def test_zero_rounds_is_plain_maskgit():
    fn = FakeLogits(32, (64,), 3)
    assert torch.equal(run(fn, num_steps=5), run(fn, num_steps=5, refine_steps=0, refine_ratio=0.9))


@pytest.mark.parametrize("kwargs, match", [
    ({"refine_steps": -1}, "refine_steps must be an int >= 0"),
    ({"refine_steps": 1.5}, "refine_steps must be an int >= 0"),
    ({"refine_steps": 2, "refine_ratio": 0.0}, r"refine_ratio must be in \(0, 1\]"),
    ({"refine_ratio": 1.5}, r"refine_ratio must be in \(0, 1\]"),
])
def test_bad_refinement_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample(FakeLogits(8, (16,), 1), 1, 8, generator=torch.Generator().manual_seed(0), vocab_sizes=(16,), **kwargs)


def test_pipeline_passes_refinement_through_and_stores_it(tmp_path):
    from maskgit import PipelineDefaults, TextToVideoPipeline
    from tests.helpers.models import build_pipeline, gen

    pipe = build_pipeline()
    passes = []
    hook = pipe.transformer.register_forward_hook(lambda *_: passes.append(1))
    steps = pipe.defaults.num_inference_steps
    plain = pipe("a red ball", generator=gen(0), output_type="latent", guidance_scale=1.0).frames
    assert len(passes) == steps
    refined = pipe("a red ball", generator=gen(0), output_type="latent", guidance_scale=1.0, refine_steps=3,
                   refine_ratio=1.0).frames
    hook.remove()
    assert len(passes) == 2 * steps + 3 and plain.shape == refined.shape
    pipe.defaults = pipe.settings(refine_steps=3, refine_ratio=0.5)
    pipe.save_pretrained(tmp_path)
    assert TextToVideoPipeline.from_pretrained(tmp_path).defaults.refine_steps == 3
    assert PipelineDefaults.from_dict({}).refine_steps == 0  # pipelines saved before the option load as before
    with pytest.raises(ValueError, match="refine_ratio must be in"):
        PipelineDefaults(refine_ratio=0.0)
