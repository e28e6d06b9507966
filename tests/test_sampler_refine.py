"""Refinement rounds of the MaskGIT sampler (`refine_steps`): they only trade a token for a more likely one, never touch
primes, cost one model pass each, and leave the main decode's draws unchanged; by token share or by latent frame or
by the least likely frame (`refine_unit`), at their own temperature (`refine_temperature`) and guidance
(`refine_guidance_scale`)."""

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


def test_rounds_guide_at_their_own_scale():
    b, n, vocab = 2, 32, (64,)
    fn = FakeLogits(n, vocab, b, seed=6)
    ramp = dict(b=b, n=n, vocab=vocab, num_steps=4, temperature=2.0, refine_steps=5, refine_ratio=0.5,
                guidance_scale=(3.0, 2.0))
    default = run(fn, **ramp)
    assert fn.rows == [2 * b] * (4 + 5)
    assert torch.equal(run(fn, **ramp, refine_guidance_scale=2.0), default)  # None = the last step's scale
    fn.rows.clear()
    unguided = run(fn, **ramp, refine_guidance_scale=1.0)
    assert fn.rows == [2 * b] * 4 + [b] * 5  # scale 1: the rounds run the conditional rows alone
    assert torch.equal(run(fn, **{**ramp, "refine_steps": 0}), run(fn, **{**ramp, "refine_steps": 0},
                                                                   refine_guidance_scale=1.0))
    assert not torch.equal(unguided, default)


def test_zero_rounds_is_plain_maskgit():
    fn = FakeLogits(32, (64,), 3)
    assert torch.equal(run(fn, num_steps=5), run(fn, num_steps=5, refine_steps=0, refine_ratio=0.9))


class RecordingLogits(FakeLogits):
    """FakeLogits that also keeps the [MASK] map of every call's conditional rows."""

    def __init__(self, *args, mask_id, **kwargs):
        super().__init__(*args, **kwargs)
        self.mask_id, self.masked = mask_id, []

    def __call__(self, codes):
        self.masked.append(codes[: self.b] == self.mask_id)
        return super().__call__(codes)


def first_frame_primed(b: int, n: int, per_frame: int) -> torch.Tensor:
    """known_codes (b, n): the first latent frame primed in every row, and every frame in row 0 (nothing to refine)."""
    known = torch.full((b, n), -1, dtype=torch.long)
    known[:, :per_frame] = 5
    known[0, per_frame:] = 7
    return known


def test_frame_rounds_redraw_one_whole_latent_frame_never_a_primed_one():
    b, frames, per_frame, vocab, steps, rounds = 3, 4, 8, (32,), 4, 12
    n = frames * per_frame
    known, fn = first_frame_primed(b, n, per_frame), RecordingLogits(n, vocab, b, seed=2, mask_id=32)
    out = run(fn, b=b, n=n, vocab=vocab, num_steps=steps, known_codes=known, refine_steps=rounds,
              refine_unit="frame", frame_tokens=per_frame, temperature=2.0)
    assert torch.equal(out[0], known[0]) and torch.equal(out[:, :per_frame], known[:, :per_frame])
    picked = set()
    for masked in fn.masked[steps:]:  # the refinement rounds' calls
        assert not bool(masked[0].any())
        for row in (1, 2):
            by_frame = masked[row].view(frames, per_frame)
            whole = by_frame.all(dim=-1)
            assert int(whole.sum()) == 1 and int(by_frame.sum()) == per_frame  # exactly one whole frame
            picked.add(int(whole.nonzero()))
    assert picked == {1, 2, 3}  # 12 rounds x 2 rows drew every unprimed frame, never the primed one


def test_worst_frame_rounds_visit_each_frame_then_redraw_the_least_likely_one():
    # greedy decode and greedy redraws: every token is its mode, so no round changes a token and each frame's score
    # (mean log-probability of its tokens) stays what its table's sharpness makes it: frame 1 flattest (least
    # likely), then frame 0, then frame 2
    b, frames, per_frame, vocab, steps = 2, 3, 6, (16,), 3
    n = frames * per_frame
    fn = RecordingLogits(n, vocab, b, seed=5, mask_id=16)
    sharpness = torch.tensor([0.5, 0.1, 3.0]).repeat_interleave(per_frame)[:, None]  # (n, 1)
    fn.cond = [fn.cond[0] * sharpness]
    fn.uncond = [fn.uncond[0] * sharpness]
    out = run(fn, b=b, n=n, vocab=vocab, num_steps=steps, temperature=0.0, refine_steps=8,
              refine_unit="worst_frame", frame_tokens=per_frame)
    assert torch.equal(out, fn.cond[0].argmax(-1).expand(b, n))
    order = []
    for masked in fn.masked[steps:]:
        by_frame = masked.view(b, frames, per_frame)
        assert bool((by_frame.all(-1).sum(-1) == 1).all()) and int(masked.sum()) == b * per_frame
        order.append(by_frame.all(-1).int().argmax(-1).tolist())
    # every frame once, in order; then the lowest score other than the frame just redrawn: 1, 0, 1, 0, 1
    assert order == [[f, f] for f in (0, 1, 2, 1, 0, 1, 0, 1)]


def test_worst_frame_rounds_skip_primed_frames_and_only_raise_probability():
    b, frames, per_frame, vocab, steps, t = 3, 4, 8, (32,), 4, 2.0
    n = frames * per_frame
    known, fn = first_frame_primed(b, n, per_frame), RecordingLogits(n, vocab, b, seed=2, mask_id=32)
    plain = run(fn, b=b, n=n, vocab=vocab, num_steps=steps, known_codes=known, temperature=t)
    fn.masked.clear()
    out = run(fn, b=b, n=n, vocab=vocab, num_steps=steps, known_codes=known, temperature=t, refine_steps=6,
              refine_unit="worst_frame", frame_tokens=per_frame)
    assert torch.equal(out[0], known[0]) and torch.equal(out[:, :per_frame], known[:, :per_frame])
    for masked in fn.masked[steps:]:
        assert not bool(masked[0].any()) and not bool(masked[:, :per_frame].any())
    assert [int(m[1].view(frames, per_frame).all(-1).int().argmax()) for m in fn.masked[steps:steps + 3]] == [1, 2, 3]
    changed = out != plain
    assert bool(changed.any())
    before, after = logp_of(fn, plain, vocab, t), logp_of(fn, out, vocab, t)
    assert bool((after[changed] > before[changed]).all())


def test_refine_temperature_zero_moves_tokens_to_their_mode_given_the_rest():
    b, n, vocab = 2, 24, (16,)
    fn = FakeLogits(n, vocab, b, seed=4)
    hot = run(fn, b=b, n=n, vocab=vocab, num_steps=3, temperature=3.0)
    greedy = run(fn, b=b, n=n, vocab=vocab, num_steps=3, temperature=3.0, refine_steps=6, refine_ratio=1.0,
                 refine_temperature=0.0)
    mode = fn.cond[0].argmax(-1).expand(b, n)  # the fake model's most likely code per position
    assert bool((hot != mode).any()) and torch.equal(greedy, mode)  # every redraw is the mode; all were kept
    sampled = run(fn, b=b, n=n, vocab=vocab, num_steps=3, temperature=3.0, refine_steps=6, refine_ratio=1.0)
    assert not torch.equal(sampled, mode)  # at the sampling temperature the same rounds stop short of the mode


@pytest.mark.parametrize("kwargs, match", [
    ({"refine_steps": 1, "refine_unit": "clip"}, "refine_unit must be one of"),
    ({"refine_steps": 1, "refine_unit": "frame"}, "refine_unit='frame' needs frame_tokens"),
    ({"refine_steps": 1, "refine_unit": "frame", "frame_tokens": 3}, "refine_unit='frame' needs frame_tokens"),
    ({"refine_steps": 1, "refine_unit": "worst_frame"}, "refine_unit='worst_frame' needs frame_tokens"),
    ({"refine_steps": 1, "refine_temperature": -0.5}, "refine_temperature must be >= 0 or None"),
    ({"refine_steps": 1, "refine_guidance_scale": -1.0}, "refine_guidance_scale must be >= 0 or None"),
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
    by_frame = pipe("a red ball", generator=gen(0), output_type="latent", guidance_scale=1.0, refine_steps=2,
                    refine_unit="frame", refine_temperature=0.0).frames
    worst = pipe("a red ball", generator=gen(0), output_type="latent", guidance_scale=1.0, refine_steps=2,
                 refine_unit="worst_frame").frames
    assert by_frame.shape == worst.shape == plain.shape and len(passes) == 2 * steps + 3  # (the hook was removed)
    pipe.defaults = pipe.settings(refine_steps=3, refine_ratio=0.5, refine_unit="frame", refine_temperature=0.0,
                                  refine_guidance_scale=1.0)
    pipe.save_pretrained(tmp_path)
    loaded = TextToVideoPipeline.from_pretrained(tmp_path).defaults
    assert (loaded.refine_steps, loaded.refine_unit, loaded.refine_temperature, loaded.refine_guidance_scale) \
        == (3, "frame", 0.0, 1.0)
    old = PipelineDefaults.from_dict({})  # pipelines saved before the options load as before
    assert (old.refine_steps, old.refine_unit, old.refine_temperature, old.refine_guidance_scale) \
        == (0, "token", None, None)
    with pytest.raises(ValueError, match="refine_ratio must be in"):
        PipelineDefaults(refine_ratio=0.0)
    with pytest.raises(ValueError, match="refine_unit must be one of token, frame, worst_frame"):
        PipelineDefaults(refine_unit="clip")
    with pytest.raises(ValueError, match="refine_temperature must be a number >= 0 or None"):
        PipelineDefaults(refine_temperature=-1.0)
    with pytest.raises(ValueError, match="refine_guidance_scale must be a number >= 0 or None"):
        PipelineDefaults(refine_guidance_scale=-1.0)
