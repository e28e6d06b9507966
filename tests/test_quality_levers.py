"""The stage-two quality levers (docs/experiments.md): tube masks, a minimum mask ratio, the per-sample loss average,
text-adaptive norms and the random unmasking order. Each is off by default and changes nothing when off."""

import pytest
import torch
import torch.nn.functional as F

from maskgit.config import MaskGitConfig
from maskgit.objective import masked_token_loss, tube_mask
from maskgit.pipeline_settings import PipelineDefaults
from maskgit.sampler import sample
from maskgit.text import TextEmbedding, TinyTextEncoder
from maskgit.transformer import MaskGitTransformer
from tests.helpers.models import TEXT_DIM, FakeModel, codes_and_text

GRID = (2, 4, 4)
CONFIG = MaskGitConfig(codebook_size=64, latent_shape=GRID, text_dim=TEXT_DIM)


def test_tube_masks_hide_the_same_positions_in_every_frame():
    counts = torch.tensor([1, 2, 8, 15, 32, 31] * 300)
    mask = tube_mask(counts, GRID, torch.Generator().manual_seed(0), torch.device("cpu"))
    frames = mask.view(len(counts), *GRID)
    assert torch.equal(frames[:, 0], frames[:, 1])  # a tube: frame 0 and frame 1 agree everywhere
    per_frame = frames[:, 0].flatten(1).sum(-1)
    assert torch.equal(per_frame, (counts / 2).round().long().clamp(1, 16))  # round(k / t) per frame, at least 1
    assert frames[:, 0].flatten(1).float()[counts == 8].mean(0).sub(4 / 16).abs().max() < 0.12  # uniform positions


def _training_mask(grid=GRID, **levers) -> torch.Tensor:
    """The (64, 32) positions masked_token_loss masks for a fixed batch and generator seed."""
    codes, text = codes_and_text(64, 32)
    _, stats = masked_token_loss(FakeModel(CONFIG), codes, text, torch.Generator().manual_seed(3), grid=grid, **levers)
    return stats.mask


def test_tube_prob_one_masks_tubes_and_zero_keeps_the_random_stream():
    plain, same, tubes = (_training_mask(**kw) for kw in ({}, {"tube_prob": 0.0}, {"tube_prob": 1.0}))
    assert torch.equal(plain, same)  # off = the old draws, bit for bit
    frames = tubes.view(64, *GRID)
    assert torch.equal(frames[:, 0], frames[:, 1])
    assert not torch.equal(plain.view(64, *GRID)[:, 0], plain.view(64, *GRID)[:, 1])  # control
    with pytest.raises(ValueError, match="tube masks need the"):
        _training_mask(grid=None, tube_prob=0.5)


def test_prefix_masks_give_the_first_frames_whole_and_mask_the_rest_at_the_drawn_ratio():
    from maskgit.objective import prefix_frame_mask

    grid = (4, 3, 3)
    ratios = torch.rand(3000, generator=torch.Generator().manual_seed(0))
    mask = prefix_frame_mask(ratios, grid, torch.Generator().manual_seed(1), torch.device("cpu")).view(-1, 4, 9)
    masked_frames = mask.any(-1)  # (b, t)
    assert not masked_frames[:, 0].any() and masked_frames.any(-1).all()  # frame 0 always given, >= 1 token masked
    first = masked_frames.float().argmax(-1)  # the first frame with a masked token
    assert all(int((first == k).sum()) > 400 for k in (1, 2, 3))  # the kept prefix varies over 1..t-1
    full = ratios > 0.999
    one = mask.view(-1, 36)[ratios < 0.01]
    assert (one.sum(-1) == 1).all()  # max(1, round(ratio * later tokens))
    for row, k in zip(mask[full], first[full]):  # ratio ~1: every token after the kept frames
        assert row[k:].all() and not row[:k].any()

    plain, off, on = (_training_mask(**kw) for kw in ({}, {"prefix_prob": 0.0}, {"prefix_prob": 1.0}))
    assert torch.equal(plain, off)  # off = the old draws, bit for bit
    assert not on.view(64, *GRID)[:, 0].any() and plain.view(64, *GRID)[:, 0].any()
    with pytest.raises(ValueError, match="prefix-frame masks need the"):
        _training_mask(grid=None, prefix_prob=0.5)
    with pytest.raises(ValueError, match="at least 2 latent frames"):
        prefix_frame_mask(ratios[:2], (1, 3, 3), torch.Generator(), torch.device("cpu"))


def test_whole_frame_masks_hide_one_latent_frame_and_give_the_others():
    from maskgit.objective import whole_frame_mask

    grid = (3, 2, 5)
    mask = whole_frame_mask(3000, grid, torch.Generator().manual_seed(0), torch.device("cpu")).view(-1, 3, 10)
    per_frame = mask.sum(-1)  # (b, t): 10 where the frame is masked, 0 elsewhere
    assert ((per_frame == 10) | (per_frame == 0)).all() and (per_frame.sum(-1) == 10).all()  # exactly one, whole
    picked = (per_frame == 10).float().mean(0)  # each frame ~1/3 of the rows
    assert (picked - 1 / 3).abs().max() < 0.04
    with pytest.raises(ValueError, match="at least 2 latent frames"):
        whole_frame_mask(2, (1, 3, 3), torch.Generator(), torch.device("cpu"))

    plain, off, half = (_training_mask(**kw) for kw in ({}, {"frame_prob": 0.0}, {"frame_prob": 0.5}))
    assert torch.equal(plain, off)  # off = the old draws, bit for bit

    def one_whole_frame(mask: torch.Tensor) -> torch.Tensor:  # (64,) bool: the row masks one frame, nothing else
        per = mask.view(64, GRID[0], -1).sum(-1)  # (64, t)
        return ((per == 16) | (per == 0)).all(-1) & (per.sum(-1) == 16)

    assert 16 <= int(one_whole_frame(half).sum()) <= 48  # about half the rows
    assert int(one_whole_frame(plain).sum()) < 8  # control: random masks rarely are
    with pytest.raises(ValueError, match="whole-frame masks need the"):
        _training_mask(grid=None, frame_prob=0.5)


def test_min_mask_ratio_raises_every_rows_masked_fraction():
    codes, text = codes_and_text(256, 32)
    _, free = masked_token_loss(FakeModel(CONFIG), codes, text, torch.Generator().manual_seed(0))
    _, floor = masked_token_loss(FakeModel(CONFIG), codes, text, torch.Generator().manual_seed(0),
                                 min_mask_ratio=0.5)
    assert free.mask.sum(-1).min() < 16  # control: the cosine schedule draws light masks
    assert floor.mask.sum(-1).min() >= 16  # ceil(0.5 * 32)
    with pytest.raises(ValueError, match="min_mask_ratio"):
        masked_token_loss(FakeModel(CONFIG), codes, text, torch.Generator().manual_seed(0), min_mask_ratio=1.0)


def test_sample_average_weighs_every_row_alike():
    codes, text = codes_and_text(8, 32)
    model = FakeModel(CONFIG)
    loss, stats = masked_token_loss(model, codes, text, torch.Generator().manual_seed(1), loss_average="sample")
    table = model.table.expand(8, -1, -1)
    ce = F.cross_entropy(table.reshape(-1, 64), codes.reshape(-1), reduction="none").view(8, 32)
    per_row = (ce * stats.mask).sum(-1) / stats.mask.sum(-1)
    assert float(loss) == pytest.approx(float(per_row.mean()), rel=1e-5)
    token, _ = masked_token_loss(FakeModel(CONFIG), codes, text, torch.Generator().manual_seed(1))
    assert float(token) == pytest.approx(float(ce[stats.mask].mean()), rel=1e-5)
    assert abs(float(token) - float(loss)) > 1e-4  # the two averages differ when rows mask different counts
    with pytest.raises(ValueError, match="loss_average"):
        masked_token_loss(model, codes, text, torch.Generator().manual_seed(1), loss_average="batch")


def test_text_adaptive_norm_conditions_on_the_pooled_text_and_ignores_padding(tmp_path):
    torch.manual_seed(0)
    model = MaskGitTransformer(MaskGitConfig(codebook_size=64, latent_shape=GRID, dim=32, depth=2, heads=2,
                                             dim_head=16, text_dim=TEXT_DIM, text_adaptive_norm=True)).eval()
    codes = torch.randint(0, 64, (2, 32), generator=torch.Generator().manual_seed(0))
    text = TinyTextEncoder(dim=TEXT_DIM).encode(["a red ball", "a cup of coffee on a table"])
    padded = TextEmbedding(text.embeds.clone(), text.mask)
    padded.embeds[~text.mask] = 100.0  # what sits under the padding must not matter
    norms = [p for n, p in model.named_parameters() if "to_gamma" in n]  # the norms' text projections (zero init)
    assert norms, "no adaptive-norm weights found"
    with torch.no_grad():
        for p in norms:  # as after training: the text scales every norm
            p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
        out = model(codes, text)[0]
        assert torch.allclose(out, model(codes, padded)[0], atol=1e-5)
        swapped = TextEmbedding(text.embeds.flip(0), text.mask.flip(0))
        assert not torch.allclose(out, model(codes, swapped)[0].flip(0), atol=1e-3)  # sanity: text matters
    with torch.no_grad():  # the norms' text path is live: zeroing their condition projections changes the output
        for p in norms:
            p.zero_()
        assert not torch.allclose(out, model(codes, text)[0], atol=1e-4)
    model.save_pretrained(tmp_path / "m")
    assert MaskGitTransformer.from_pretrained(tmp_path / "m").config.text_adaptive_norm


def _peaked_logits(batch: int, n: int, vocab: int):
    """Every position most sure of code 0, less sure the later the position (a strict confidence order)."""
    def logits_fn(codes):
        logits = torch.zeros(batch, n, vocab)
        logits[..., 0] = torch.linspace(8.0, 1.0, n)  # confidence falls with the position
        return (logits,)
    return logits_fn


@pytest.mark.parametrize("order", ["confidence", "random"])
def test_unmask_order(order):
    kept = []
    for seed in range(6):
        states: list[torch.Tensor] = []
        sample(_peaked_logits(1, 32, 8), batch_size=1, seq_len=32, vocab_sizes=(8,), mask_id=8, num_steps=8,
               temperature=0.0, choice_temperature=0.0, generator=torch.Generator().manual_seed(seed),
               callback=lambda s, out=states: out.append(s.codes.clone()), order=order)
        kept.append(frozenset((states[0][0] != 8).nonzero().flatten().tolist()))
    first = min(len(k) for k in kept)
    if order == "confidence":  # the most confident positions first, whatever the seed
        assert all(k == frozenset(range(len(k))) for k in kept)
    else:  # positions kept at random: they vary with the seed and are not the confident prefix
        assert len(set(kept)) > 1 and any(k != frozenset(range(first)) for k in kept)


def test_frame_order_settles_earlier_latent_frames_first():
    states: list[torch.Tensor] = []

    def flat(codes):  # every position equally sure: the order alone decides
        return (torch.zeros(1, 32, 8),)

    sample(flat, batch_size=1, seq_len=32, vocab_sizes=(8,), mask_id=8, num_steps=8, temperature=1.0,
           generator=torch.Generator().manual_seed(0), callback=lambda s, out=states: out.append(s.codes.clone()),
           order="frame", frame_tokens=16)
    for codes in states[:-1]:
        known = (codes[0] != 8).view(2, 16)  # (latent frame, position)
        assert not known[1].any() or known[0].all()  # frame 1 starts only once frame 0 is complete
    assert (states[-1] != 8).all()
    with pytest.raises(ValueError, match="needs frame_tokens"):
        sample(flat, batch_size=1, seq_len=32, vocab_sizes=(8,), mask_id=8, num_steps=4,
               generator=torch.Generator().manual_seed(0), order="frame", frame_tokens=5)


def test_halton_ranks_are_a_spread_out_permutation_that_varies_with_the_generator():
    from maskgit.halton import halton_ranks, radical_inverse

    assert radical_inverse(torch.arange(1, 5), 2).tolist() == [0.5, 0.25, 0.75, 0.125]
    grid = (3, 8, 8)
    ranks = halton_ranks(grid, 4, torch.Generator().manual_seed(0), "cpu")  # (4, 192)
    assert torch.equal(ranks.sort(dim=-1).values, torch.arange(192).expand(4, -1))  # a permutation per row
    assert len({tuple(r.tolist()) for r in ranks}) == 4  # each row its own shifted order
    again = halton_ranks(grid, 4, torch.Generator().manual_seed(0), "cpu")
    assert torch.equal(ranks, again)  # from the generator alone
    per_row = [halton_ranks(grid, 1, torch.Generator().manual_seed(s), "cpu") for s in (5, 6)]
    listed = halton_ranks(grid, 2, [torch.Generator().manual_seed(s) for s in (5, 6)], "cpu")
    assert torch.equal(listed, torch.cat(per_row))  # a list of generators: row b from generator b

    def spread(ranks: torch.Tensor) -> tuple[float, float]:
        """Mean squared deviation of the first eighth's count per latent frame (from 8) and per spatial quadrant
        over all frames (from 6)."""
        first = (ranks < 24).view(-1, *grid).float()
        quads = first.view(-1, 3, 2, 4, 2, 4).sum(dim=(1, 3, 5))
        return float(((first.sum(dim=(2, 3)) - 8) ** 2).mean()), float(((quads - 6) ** 2).mean())

    many = halton_ranks(grid, 200, torch.Generator().manual_seed(1), "cpu")
    shuffled = torch.rand(200, 192, generator=torch.Generator().manual_seed(1)).argsort(-1).argsort(-1)
    (halton_t, halton_s), (random_t, random_s) = spread(many), spread(shuffled)
    assert halton_t < random_t / 4 and halton_s < random_s / 2  # measured 0.5 vs 4.8, 1.5 vs 3.8: evenly spread
    with pytest.raises(ValueError, match="grid must be"):
        halton_ranks((8, 8), 1, torch.Generator(), "cpu")


def test_halton_order_keeps_tokens_in_that_order_whatever_the_confidence():
    from maskgit.halton import halton_ranks

    states: list[torch.Tensor] = []
    sample(_peaked_logits(2, 32, 8), batch_size=2, seq_len=32, vocab_sizes=(8,), mask_id=8, num_steps=8,
           temperature=0.0, generator=torch.Generator().manual_seed(3), order="halton", grid=(2, 4, 4),
           callback=lambda s, out=states: out.append(s.codes.clone()))
    ranks = halton_ranks((2, 4, 4), 2, torch.Generator().manual_seed(3), "cpu")  # the decode's first draw
    for codes in states[:-1]:
        known = codes != 8
        count = known.sum(dim=-1, keepdim=True)
        assert torch.equal(known, ranks < count)  # exactly the first `count` of the order, not the confident prefix
    assert bool((states[1] != 8).any()) and not torch.equal(states[1] != 8, _confident_prefix(states[1] != 8))
    assert (states[-1] != 8).all()
    with pytest.raises(ValueError, match="needs grid"):
        sample(_peaked_logits(1, 32, 8), batch_size=1, seq_len=32, vocab_sizes=(8,), mask_id=8, num_steps=4,
               generator=torch.Generator().manual_seed(0), order="halton", grid=(2, 4, 3))
    assert PipelineDefaults(unmask_order="halton").unmask_order == "halton"


def _confident_prefix(known: torch.Tensor) -> torch.Tensor:
    """(b, n) bool: the same number of positions per row as `known`, taken from the front (the confidence order)."""
    return torch.arange(known.shape[1]) < known.sum(dim=-1, keepdim=True)


def test_unmask_order_is_checked_everywhere():
    with pytest.raises(ValueError, match="order must be one of"):
        sample(_peaked_logits(1, 32, 8), batch_size=1, seq_len=32, vocab_sizes=(8,), mask_id=8, num_steps=4,
               generator=torch.Generator().manual_seed(0), order="raster")
    with pytest.raises(ValueError, match="unmask_order must be"):
        PipelineDefaults(unmask_order="raster")
    assert PipelineDefaults.from_dict({}).unmask_order == "confidence"  # pipelines saved before it load as before


def test_axial_rotary_attention_depends_only_on_the_offset_between_tokens():
    from x_transformers.x_transformers import apply_rotary_pos_emb

    from maskgit.transformer import axial_rotary_freqs

    freqs = axial_rotary_freqs((3, 8, 8), dim_head=32).view(3, 8, 8, -1)
    assert freqs.shape[-1] == 30  # 10 rotated dims per axis, the last 2 of 32 left alone
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(32, generator=g), torch.randn(32, generator=g)

    def score(pq, pk):
        rq = apply_rotary_pos_emb(q[None, None], freqs[pq][None, None])[0, 0]
        return float(rq @ apply_rotary_pos_emb(k[None, None], freqs[pk][None, None])[0, 0])

    base = score((0, 1, 2), (1, 3, 3))
    assert score((1, 4, 5), (2, 6, 6)) == pytest.approx(base, abs=1e-4)  # the same (1, 2, 1) offset elsewhere
    for pq, pk in (((0, 4, 5), (2, 6, 6)), ((1, 4, 5), (2, 7, 6)), ((1, 4, 5), (2, 6, 7))):
        assert abs(score(pq, pk) - base) > 1e-3  # one step more along t, h or w: a different score


@pytest.mark.parametrize("encoding", ["rotary", "both"])
def test_rotary_positions_reach_self_attention_and_round_trip(tmp_path, monkeypatch, encoding):
    import maskgit.transformer as transformer_module

    torch.manual_seed(0)
    config = MaskGitConfig(codebook_size=64, latent_shape=GRID, dim=32, depth=2, heads=2, dim_head=16,
                           text_dim=TEXT_DIM, position_encoding=encoding)
    model = MaskGitTransformer(config).eval()
    assert hasattr(model, "pos_t") == (encoding == "both")  # "rotary" alone has no learned tables
    codes = torch.randint(0, 64, (2, 32), generator=torch.Generator().manual_seed(0))
    text = TinyTextEncoder(dim=TEXT_DIM).encode(["a red ball", "a cup"])
    with torch.no_grad():
        out = model(codes, text)[0]
        one_frame = model(codes[:, :16], text, grid=(1, 4, 4))[0]  # fewer latent frames: positions still defined
        assert one_frame.shape == (2, 16, 64)
        monkeypatch.setattr(transformer_module, "axial_rotary_freqs",
                            lambda grid, dim_head, device=None: torch.zeros(32, 3 * 2 * (dim_head // 6)))
        assert not torch.allclose(out, model(codes, text)[0], atol=1e-4)  # the angles change what attention sees
    monkeypatch.undo()
    model.save_pretrained(tmp_path / "m")
    loaded = MaskGitTransformer.from_pretrained(tmp_path / "m")
    assert loaded.config.position_encoding == encoding
    with torch.no_grad():
        assert torch.allclose(out, loaded(codes, text)[0], atol=1e-6)
    with pytest.raises(ValueError, match="position_encoding must be one of learned, rotary, both; got 'rope'"):
        MaskGitConfig(codebook_size=64, latent_shape=GRID, position_encoding="rope")


@pytest.mark.parametrize("name", ["tube_mask_prob", "prefix_mask_prob", "frame_mask_prob"])
def test_the_train_config_names_a_mask_probability_outside_0_1(name):
    from trainers.configs import MaskGitTrainConfig

    assert getattr(MaskGitTrainConfig(**{name: 0.25}), name) == 0.25
    with pytest.raises(ValueError, match=f"{name} must be in \\[0, 1\\]; got 1.5"):
        MaskGitTrainConfig(**{name: 1.5})
