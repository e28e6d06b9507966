"""3D discriminator (shapes, blur-pool anti-aliasing, sizing relative to the tokenizer) and temporal discriminators."""

import pytest
import torch

from magvit2.config import TokenizerConfig
from magvit2.discriminator import (
    BlurPool3d,
    Discriminator3D,
    DiscriminatorConfig,
    TemporalDiscriminators,
    blur_downsample,
)

TINY = DiscriminatorConfig(image_size=16, channels=3, dim=8, max_dim=16)
SEED_README_LAYERS = (
    "residual", "compress_space", ("consecutive_residual", 2), "compress_space", ("consecutive_residual", 2),
    "linear_attend_space", "compress_space", ("consecutive_residual", 2), "attend_space", "compress_time",
    ("consecutive_residual", 2), "compress_time", ("consecutive_residual", 2), "attend_time",
)


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("shape", [(2, 3, 5, 16, 16), (2, 3, 16, 16), (2, 3, 1, 16, 16), (3, 3, 4, 16, 24),
                                   (1, 3, 17, 12, 20)])
def test_discriminator_output_is_one_logit_per_sample(shape):
    torch.manual_seed(0)
    disc = Discriminator3D(TINY)
    logits = disc(rand(*shape))
    assert logits.shape == (shape[0],)
    assert torch.isfinite(logits).all()


def test_image_equals_one_frame_video():
    disc = Discriminator3D(TINY)
    x = rand(2, 3, 16, 16)
    torch.testing.assert_close(disc(x), disc(x.unsqueeze(2)))


def test_discriminator_rejects_bad_input():
    disc = Discriminator3D(TINY)
    with pytest.raises(ValueError, match="3 channels"):
        disc(rand(2, 4, 2, 16, 16))
    with pytest.raises(ValueError, match=r"\(b, c, t, h, w\)"):
        disc(rand(3, 16, 16))


def test_config_validation_and_derived_sizes():
    with pytest.raises(ValueError, match="max_dim"):
        DiscriminatorConfig(image_size=16, dim=32, max_dim=16)
    with pytest.raises(ValueError, match="image_size"):
        DiscriminatorConfig(image_size=(16, 0))
    with pytest.raises(ValueError, match="dim"):
        DiscriminatorConfig(image_size=16, dim=0)
    config = DiscriminatorConfig(image_size=128, dim=64, max_dim=256)
    assert config.num_blocks == 5  # 128 -> 4
    assert config.widths == (64, 128, 256, 256, 256, 256)
    assert DiscriminatorConfig(image_size=(32, 64)).num_blocks == 3  # smaller side: 32 -> 4 (64 -> 8)


def test_blur_pool_attenuates_a_nyquist_checkerboard():
    h = w = 8
    checker = (-1.0) ** (torch.arange(h)[:, None] + torch.arange(w)[None, :])  # highest spatial frequency
    x = checker.view(1, 1, 1, h, w)
    strided = x[..., ::2, ::2]  # plain stride-2 subsampling aliases it to a constant
    assert strided.abs().min() == 1
    blurred = BlurPool3d()(x)
    assert blurred.shape == (1, 1, 1, 4, 4)
    assert blurred.abs().max() < 1e-6
    # time: frames alternating +1/-1 vanish too (3D blur when t > 1); a constant passes unchanged (DC gain 1)
    flicker = ((-1.0) ** torch.arange(6)).view(1, 1, 6, 1, 1).expand(1, 1, 6, 4, 4)
    assert BlurPool3d()(flicker).shape == (1, 1, 3, 2, 2)
    assert BlurPool3d()(flicker).abs().max() < 1e-6
    torch.testing.assert_close(BlurPool3d()(torch.ones(1, 2, 5, 7, 6)), torch.ones(1, 2, 3, 4, 3))


def test_blur_downsample_values_and_odd_lengths():
    x = torch.arange(7.0).view(1, 1, 1, 1, 7)
    # reflect-padded [1, 0..6, 5], filter [1, 2, 1] / 4 at even positions
    torch.testing.assert_close(blur_downsample(x, 4).flatten(), torch.tensor([0.5, 2.0, 4.0, 5.5]))
    assert blur_downsample(torch.ones(1, 1, 1, 1, 1), 4).shape[-1] == 1  # length 1 stays 1 (replicate pad)


def test_discriminator_is_sized_relative_to_the_tokenizer():
    tiny = TokenizerConfig(image_size=32, init_dim=16, max_dim=64, codebook_size=2**10,
                           layers=("residual", "compress_space", "residual", "compress_space"))
    config = DiscriminatorConfig.for_tokenizer(tiny)
    assert (config.dim, config.max_dim, config.image_size, config.channels) == (16, 64, (32, 32), 3)
    # Reference points (numbers stated, not imported: the tokenizer is tested in its own file). Our VideoTokenizer
    # for this tiny config has ~0.27M parameters; the discriminator (~0.44M) stays within 2x of it.
    assert num_params(Discriminator3D(config)) < 2 * 0.27e6
    # The seed README tokenizer: ~250M parameters in our VideoTokenizer (117.8M in the reference, whose 2D
    # discriminator had 49.1M, prior-art §1.6). Ours caps widths at min(max_dim, 4 * init_dim) = 256 (MAGVIT's
    # channel multipliers 2, 4, 4, 4, 4 on 64 filters): ~14.3M, well under a tenth of the generator. Bound: 20M.
    mid = TokenizerConfig(image_size=128, init_dim=64, max_dim=512, codebook_size=2**18, layers=SEED_README_LAYERS)
    config = DiscriminatorConfig.for_tokenizer(mid)
    assert (config.dim, config.max_dim) == (64, 256)
    with torch.device("meta"):
        mid_params = num_params(Discriminator3D(config))
    assert 10e6 < mid_params < 20e6
    # no max_dim on the tokenizer: 4 * init_dim; explicit overrides win
    free = TokenizerConfig(image_size=32, init_dim=16, codebook_size=2**10)
    assert DiscriminatorConfig.for_tokenizer(free).max_dim == 64
    assert DiscriminatorConfig.for_tokenizer(free, dim=8, max_dim=8).widths == (8, 8, 8, 8)


# -- temporal discriminators --------------------------------------------------------------------------------------

def make_temporal(window_lengths=(2, 4)) -> TemporalDiscriminators:
    torch.manual_seed(0)
    return TemporalDiscriminators(window_lengths, TINY)


def test_windows_have_the_right_lengths_and_contents():
    temporal = make_temporal()
    video = rand(3, 3, 5, 16, 16)
    windows, starts = temporal.crop_windows(video, torch.Generator().manual_seed(1))
    assert sorted(windows) == sorted(starts) == [0, 1]
    for i, length in enumerate(temporal.window_lengths):
        assert windows[i].shape == (3, 3, length, 16, 16)
        assert starts[i].shape == (3,) and starts[i].min() >= 0 and starts[i].max() <= 5 - length
        for j, s in enumerate(starts[i].tolist()):
            torch.testing.assert_close(windows[i][j], video[j, :, s:s + length])


def test_real_and_fake_get_identical_windows_and_draws_are_deterministic():
    temporal = make_temporal()
    real, fake = rand(4, 3, 9, 16, 16, seed=1), rand(4, 3, 9, 16, 16, seed=2)
    _, starts = temporal.crop_windows(real, torch.Generator().manual_seed(7))
    fake_w, fake_starts = temporal.crop_windows(fake, starts=starts)
    assert fake_starts is starts
    for i in starts:
        for j, s in enumerate(starts[i].tolist()):
            torch.testing.assert_close(fake_w[i][j], fake[j, :, s:s + temporal.window_lengths[i]])
    again = temporal.sample_starts(4, 9, torch.Generator().manual_seed(7))
    assert all(torch.equal(again[i], starts[i]) for i in starts)
    other = temporal.sample_starts(4, 9, torch.Generator().manual_seed(8))
    assert any(not torch.equal(other[i], starts[i]) for i in starts)


def test_windows_longer_than_the_clip_are_skipped():
    temporal = make_temporal((2, 4))
    assert temporal.active(3) == [0]
    assert len(temporal(rand(2, 3, 3, 16, 16), torch.Generator().manual_seed(0))) == 1
    assert temporal(rand(2, 3, 16, 16)) == []  # images: no temporal discriminator runs
    logits = temporal(rand(2, 3, 4, 16, 16), torch.Generator().manual_seed(0))
    assert [v.shape for v in logits] == [(2,), (2,)]


def test_forward_feeds_each_discriminator_its_window(monkeypatch):
    temporal = make_temporal((2, 4))
    seen = {}
    for i, disc in enumerate(temporal.discriminators):
        monkeypatch.setattr(disc, "forward", lambda x, i=i: seen.setdefault(i, x.shape) and torch.zeros(x.shape[0]))
    temporal(rand(2, 3, 6, 16, 16), torch.Generator().manual_seed(0))
    assert seen == {0: (2, 3, 2, 16, 16), 1: (2, 3, 4, 16, 16)}


def test_temporal_input_validation():
    temporal = make_temporal((2, 4))
    video = rand(2, 3, 5, 16, 16)
    with pytest.raises(ValueError, match="generator"):
        temporal(video)  # a random choice needs an explicit generator
    full = make_temporal((5,))
    assert len(full(video)) == 1  # L == t: no choice, no generator needed
    with pytest.raises(ValueError, match="keys"):
        temporal.crop_windows(video, starts={0: torch.zeros(2, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"in \[0, 3\]"):
        temporal.crop_windows(video, starts={0: torch.tensor([0, 4]), 1: torch.tensor([0, 0])})
    for bad in ((), (1,), (2, 2), (2.0,)):
        with pytest.raises(ValueError, match="window_lengths"):
            TemporalDiscriminators(bad, TINY)
