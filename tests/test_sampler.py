import itertools
import math

import pytest
import torch

from maskgit.config import MaskGitConfig
from maskgit.objective import masked_token_loss
from maskgit.sampler import _sample_categorical, filter_logits, guidance_at, make_guided_logits_fn, sample
from maskgit.text import TextEmbedding, TinyTextEncoder
from maskgit.transformer import MaskGitTransformer
from tests.helpers.fake_logits import FakeLogits, run
from tests.helpers.models import TEXT_DIM, tiny_maskgit_config


def tiny_model(seed=0, **overrides) -> MaskGitTransformer:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return MaskGitTransformer(tiny_maskgit_config(**overrides)).eval()


@pytest.fixture(scope="module")
def text():
    return TinyTextEncoder(dim=TEXT_DIM).encode(["a red ball", "clouds over a hill", "a sleeping cat"])


def test_fills_everything_with_schedule_and_frozen_tokens():
    steps, n = 8, 32
    seen = []
    out = run(n=n, num_steps=steps, callback=seen.append)
    assert out.shape == (3, n) and out.dtype == torch.long
    assert int(out.max()) < 64 and int(out.min()) >= 0
    assert len(seen) == steps
    prev = torch.full((3,), n)
    for s, info in enumerate(seen[:-1]):
        expected = min(max(math.floor(n * math.cos(math.pi / 2 * (s + 1) / steps)), 1), int(prev[0]) - 1)
        assert info.num_masked.tolist() == [expected] * 3
        assert torch.all(prev - info.num_masked >= 1)  # at least one token fixed per step
        assert not (info.preview == 64).any()
        prev = info.num_masked
    assert seen[-1].num_masked.tolist() == [0, 0, 0] and torch.equal(seen[-1].codes, out)
    for before, after in itertools.pairwise(seen):  # a fixed token never changes again
        fixed = before.codes != 64
        assert torch.equal(after.codes[fixed], before.codes[fixed])
        assert torch.equal(out[fixed], before.codes[fixed])


def test_primes_are_kept_and_set_the_schedule():
    n, steps = 32, 6
    primes = torch.randint(0, 64, (3, n), generator=torch.Generator().manual_seed(9))
    known = torch.full((3, n), -1)
    known[1, :16] = primes[1, :16]  # row 1: half primed with -1 as unknown
    known[2] = torch.where(torch.arange(n) < 24, primes[2], 64)  # row 2: mask id as unknown
    seen = []
    out = run(n=n, num_steps=steps, known_codes=known, callback=seen.append)
    assert torch.equal(out[1, :16], primes[1, :16]) and torch.equal(out[2, :24], primes[2, :24])
    first = seen[0].num_masked.tolist()
    ratio = math.cos(math.pi / 2 / steps)
    assert first == [math.floor(32 * ratio), math.floor(16 * ratio), math.floor(8 * ratio)]
    assert not (out == 64).any()


def test_determinism_seeds_and_global_rng():
    state = torch.get_rng_state()
    a, b, c = run(seed=1), run(seed=1), run(seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_single_step_and_bare_tensor_logits():
    seen = []
    out = run(num_steps=1, callback=seen.append)
    assert len(seen) == 1 and not (out == 64).any()
    fake = FakeLogits(32, (64,), 3)
    bare = run(lambda codes: fake(codes)[0], num_steps=3)  # a plain tensor counts as a 1-tuple
    assert torch.equal(bare, run(fake, num_steps=3))


@pytest.mark.parametrize("scale", [0.0, 1.0, 3.0])
def test_guidance_math_on_logits(scale):
    fake = FakeLogits(16, (8,), 2, seed=4)
    out = run(fake, b=2, n=16, vocab=(8,), temperature=0.0, guidance_scale=scale)
    cond, uncond = fake.cond[0], fake.uncond[0]
    expected = (uncond + scale * (cond - uncond)).argmax(-1)
    assert torch.equal(out, expected.expand(2, -1))
    assert set(fake.rows) == ({2} if scale == 1.0 else {4})  # s = 1 skips the unconditional half
    if scale in (0.0, 3.0):
        assert not torch.equal(out[0], cond.argmax(-1))


def test_guidance_ramp():
    fake = FakeLogits(32, (64,), 3)
    seen = []
    run(fake, num_steps=5, guidance_scale=(1.0, 3.0), callback=seen.append)
    assert [s.guidance_scale for s in seen] == pytest.approx([1.0, 1.5, 2.0, 2.5, 3.0])
    assert fake.rows == [3, 6, 6, 6, 6]
    assert guidance_at(lambda p: 10 * p, 3, 5) == pytest.approx(7.5)
    assert guidance_at(2.0, 0, 1) == 2.0


def test_model_guidance_one_equals_conditional_only_and_batches_2b(text):
    model = tiny_model()
    rows = []

    def spy(fn):
        def wrapped(codes):
            rows.append(codes.shape[0])
            return fn(codes)
        return wrapped

    guided = run(spy(make_guided_logits_fn(model, text)), guidance_scale=1.0, num_steps=4)
    plain = run(lambda c: model(c, text), guidance_scale=1.0, num_steps=4)
    assert torch.equal(guided, plain) and set(rows) == {3}
    rows.clear()
    for scale in (0.0, 3.0):
        out = run(spy(make_guided_logits_fn(model, text)), guidance_scale=scale, num_steps=4)
        assert not (out == 64).any()
    assert set(rows) == {6}  # one model call per step on the 2B batch


def test_negative_prompt_replaces_null(text):
    model = tiny_model()
    negative = TinyTextEncoder(dim=TEXT_DIM).encode(["blurry, low quality"])
    codes = torch.full((6, 32), 64)
    with_null = make_guided_logits_fn(model, text)(codes)[0]
    with_neg = make_guided_logits_fn(model, text, negative)(codes)[0]
    assert torch.allclose(with_null[:3], with_neg[:3], atol=1e-5)  # conditional half unchanged
    assert not torch.allclose(with_null[3:], with_neg[3:], atol=1e-4)
    uncond = model(codes[:3], None)[0]
    assert torch.allclose(with_null[3:], uncond, atol=1e-5)
    out = run(make_guided_logits_fn(model, text, negative), guidance_scale=3.0, num_steps=4)
    assert out.shape == (3, 32) and not (out == 64).any()


def test_factorised_vocabulary():
    vocab = (512, 512)
    out = run(n=32, vocab=vocab, num_steps=6)
    assert int(out.max()) < 2**18 and int(out.min()) >= 0 and not (out == 2**18).any()
    model = tiny_model(codebook_size=2**18)
    text = TextEmbedding(torch.randn(2, 3, TEXT_DIM), torch.ones(2, 3, dtype=torch.bool))
    out = run(make_guided_logits_fn(model, text), b=2, vocab=model.vocab_sizes, guidance_scale=2.0, num_steps=4)
    assert out.shape == (2, 32) and int(out.max()) < 2**18


def test_top_k_one_is_greedy_and_filters():
    fake = FakeLogits(32, (64,), 3)
    assert torch.equal(run(fake, top_k=1), fake.cond[0].argmax(-1).expand(3, -1))
    assert torch.equal(run(fake, temperature=0.0), fake.cond[0].argmax(-1).expand(3, -1))
    logits = torch.tensor([[math.log(0.5), math.log(0.3), math.log(0.2)]])
    assert torch.isinf(filter_logits(logits, top_p=0.5)).tolist() == [[False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.75)).tolist() == [[False, False, True]]
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True]]
    out = run(top_k=5, top_p=0.9)
    assert not (out == 64).any()


def test_categorical_draws_follow_the_distribution_and_never_a_filtered_id():
    probs = torch.tensor([0.0, 0.1, 0.0, 0.2, 0.7, 0.0])  # zeros first, between and last: filtered ids
    logits = probs.log().expand(1, 40_000, -1).contiguous()
    ids, logp = _sample_categorical(logits, 1.0, torch.Generator().manual_seed(0))
    counts = torch.bincount(ids.flatten(), minlength=6) / ids.numel()
    assert counts[[0, 2, 5]].sum() == 0
    assert torch.allclose(counts, probs, atol=0.01)  # 4 sigma of a 40k-draw frequency is <= 0.01
    assert torch.allclose(logp, probs.log()[ids])
    per_row = [torch.Generator().manual_seed(s) for s in (3, 4)]
    both, _ = _sample_categorical(logits[:, :50].expand(2, -1, -1), 1.0, per_row)
    alone, _ = _sample_categorical(logits[:, :50], 1.0, torch.Generator().manual_seed(4))
    assert torch.equal(both[1:], alone)  # row b draws from generator b only


def test_input_validation():
    with pytest.raises(ValueError, match="tuple of 2"):
        run(FakeLogits(32, (64,), 3), vocab=(8, 8))
    with pytest.raises(ValueError, match="shape"):
        run(known_codes=torch.zeros(2, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="known_codes"):
        run(known_codes=torch.full((3, 32), 99))
    with pytest.raises(ValueError, match="generator"):
        sample(FakeLogits(32, (64,), 3), 3, 32, generator=None, vocab_sizes=(64,))


def test_learns_and_reproduces_prompted_grids(one_thread):
    """A tiny model trained on 4 (prompt, 2x4x4 code grid) pairs regenerates each grid from its prompt (~4 s)."""
    config = MaskGitConfig(codebook_size=64, latent_shape=(2, 4, 4), dim=48, depth=2, heads=4, dim_head=16,
                           text_dim=32)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = MaskGitTransformer(config)
    prompts = ["a red ball bouncing", "clouds over a mountain", "a cat sleeping", "waves on a beach"]
    text = TinyTextEncoder(dim=32).encode(prompts)
    gen = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 64, (4, 32), generator=gen)
    reps = 4
    batch_codes = targets.repeat(reps, 1)
    batch_text = TextEmbedding(text.embeds.repeat(reps, 1, 1), text.mask.repeat(reps, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        loss, _ = masked_token_loss(model, batch_codes, batch_text, gen, cond_drop_prob=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    for scale in (1.0, 2.0, (1.0, 3.0)):
        out = sample(make_guided_logits_fn(model, text), 4, 32, generator=torch.Generator().manual_seed(1),
                     vocab_sizes=config.vocab_sizes, guidance_scale=scale)
        accuracy = (out == targets).float().mean().item()
        assert accuracy > 0.9, (scale, accuracy)
