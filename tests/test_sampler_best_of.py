"""Best of N in the MaskGIT sampler (`best_of`): each row keeps, among its N decodes, the one whose latent frames the
model finds most likely given each other (`frame_scores`); the candidates are what N decodes in a row with the
same generator give, rows choose independently, primes are kept and never scored."""

import pytest
import torch

from maskgit.pipeline_settings import PipelineDefaults
from maskgit.sampler import SamplerStep, frame_scores, sample
from tests.helpers.fake_logits import FakeLogits

FRAMES, PER_FRAME, VOCAB = 3, 4, (16,)
N = FRAMES * PER_FRAME


class CopyLogits:
    """A code-dependent stand-in: each position prefers the codes the other latent frames hold at the same spatial
    position (a model that has learnt that frames agree), over random base logits. 2B calls: the second half
    (unconditional) gets the base logits alone."""

    def __init__(self, b, seed=0, bonus=3.0):
        self.base = torch.randn(N, VOCAB[0], generator=torch.Generator().manual_seed(seed))
        self.b, self.bonus, self.mask_id = b, bonus, VOCAB[0]

    def __call__(self, codes):
        rows = codes.shape[0]
        grid = codes[: self.b].view(self.b, FRAMES, PER_FRAME)
        known = grid != self.mask_id
        onehot = torch.nn.functional.one_hot(grid.clamp(max=VOCAB[0] - 1), VOCAB[0]).float() * known[..., None]
        others = onehot.sum(dim=1, keepdim=True) - onehot  # (b, frames, per_frame, v): the other frames' codes
        cond = self.base + self.bonus * others.view(self.b, N, VOCAB[0])
        return (cond if rows == self.b else torch.cat([cond, self.base.expand(self.b, -1, -1)]),)


def decode(fn, b, seed, **kwargs):
    return sample(fn, b, N, generator=torch.Generator().manual_seed(seed), vocab_sizes=VOCAB, num_steps=4,
                  frame_tokens=PER_FRAME, temperature=3.0, **kwargs)


def mean_score(fn, codes, sampled, scale):
    scores = frame_scores(fn, codes, sampled, PER_FRAME, VOCAB, VOCAB[0], scale)
    return scores.nan_to_num(0.0).sum(-1) / (~scores.isnan()).sum(-1)


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_best_of_keeps_each_rows_highest_scoring_candidate(guidance):
    b = 6
    fn = CopyLogits(b, seed=1)
    g = torch.Generator().manual_seed(4)
    candidates = [sample(fn, b, N, generator=g, vocab_sizes=VOCAB, num_steps=4, frame_tokens=PER_FRAME,
                         temperature=3.0, guidance_scale=guidance) for _ in range(3)]  # the generator runs on
    sampled = torch.ones(b, N, dtype=torch.bool)
    scores = torch.stack([mean_score(fn, c, sampled, guidance) for c in candidates])  # (3, b)
    best = decode(fn, b, seed=4, best_of=3, guidance_scale=guidance)
    pick = scores.argmax(dim=0)
    assert len(set(pick.tolist())) > 1, "every row picked the same candidate: the test shows nothing"
    for row in range(b):
        assert torch.equal(best[row], candidates[int(pick[row])][row])


def test_best_of_prefers_frames_that_agree():
    b = 64
    fn = CopyLogits(b, seed=2, bonus=1.0)

    def agreement(codes):  # share of (pair of latent frames, spatial position) holding the same code
        grid = codes.view(b, FRAMES, PER_FRAME)
        same = grid[:, :, None] == grid[:, None]  # (b, frames, frames, per_frame)
        return float((same.sum() - same.diagonal(dim1=1, dim2=2).sum()) / (b * FRAMES * (FRAMES - 1) * PER_FRAME))

    assert agreement(decode(fn, b, seed=0, best_of=4)) > agreement(decode(fn, b, seed=0)) + 0.03


def test_best_of_one_is_plain_decoding_and_every_row_is_independent():
    b = 4
    fn = CopyLogits(b, seed=3)
    assert torch.equal(decode(fn, b, seed=1), decode(fn, b, seed=1, best_of=1))
    gens = [torch.Generator().manual_seed(10 + i) for i in range(b)]
    together = sample(fn, b, N, generator=gens, vocab_sizes=VOCAB, num_steps=4, frame_tokens=PER_FRAME,
                      temperature=3.0, best_of=3)
    for row in range(b):
        alone_fn = CopyLogits(1, seed=3)
        alone = sample(alone_fn, 1, N, generator=torch.Generator().manual_seed(10 + row), vocab_sizes=VOCAB,
                       num_steps=4, frame_tokens=PER_FRAME, temperature=3.0, best_of=3)
        assert torch.equal(together[row], alone[0])


def test_primes_are_kept_and_never_scored():
    b = 3
    fn = CopyLogits(b, seed=5)
    known = torch.full((b, N), -1, dtype=torch.long)
    known[:, :PER_FRAME] = 7  # the first latent frame is primed
    out = decode(fn, b, seed=2, best_of=3, known_codes=known)
    assert torch.equal(out[:, :PER_FRAME], known[:, :PER_FRAME])
    scores = frame_scores(fn, out, known == -1, PER_FRAME, VOCAB, VOCAB[0], 1.0)
    assert scores.shape == (b, FRAMES)
    assert bool(scores[:, 0].isnan().all()) and bool(scores[:, 1:].isfinite().all())
    assert bool((scores[:, 1:] <= 0).all())  # mean log-probabilities


def test_passes_and_callback_steps_count_every_candidate():
    b, steps = 2, 4
    fn = FakeLogits(N, VOCAB, b, seed=0)
    seen = []
    sample(fn, b, N, generator=torch.Generator().manual_seed(0), vocab_sizes=VOCAB, num_steps=steps,
           frame_tokens=PER_FRAME, best_of=2, guidance_scale=2.0, refine_steps=1, callback=seen.append)
    assert fn.rows == [2 * b] * (2 * (steps + 1 + FRAMES))  # per candidate: steps, one round, one pass per frame
    assert all(isinstance(s, SamplerStep) for s in seen)
    assert [s.step for s in seen] == list(range(2 * steps)) and {s.num_steps for s in seen} == {2 * steps}


@pytest.mark.parametrize("kwargs, message", [
    ({"best_of": 0}, "best_of must be an int >= 1"),
    ({"best_of": True}, "best_of must be an int >= 1"),
    ({"best_of": 2.0}, "best_of must be an int >= 1"),
    ({"best_of": 2, "frame_tokens": None}, "best_of > 1 needs frame_tokens"),
])
def test_bad_best_of_is_refused(kwargs, message):
    fn = FakeLogits(N, VOCAB, 2)
    settings = {"frame_tokens": PER_FRAME, **kwargs}
    with pytest.raises(ValueError, match=message):
        sample(fn, 2, N, generator=torch.Generator(), vocab_sizes=VOCAB, **settings)


def test_pipeline_defaults_validate_best_of():
    assert PipelineDefaults.from_dict({"best_of": 3}).best_of == 3
    assert PipelineDefaults(best_of=2).to_dict()["best_of"] == 2
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="best_of must be a positive int"):
            PipelineDefaults(best_of=bad)
