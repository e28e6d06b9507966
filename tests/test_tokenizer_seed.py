"""`block_style="seed"`: the seed's (magvit2-pytorch 0.5.1) model size for the same layer list; causal, persisted,
the default unchanged."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from magvit2 import TokenizerConfig, VideoTokenizer, preset_config
from magvit2.layers import ResidualBlock, SpaceDownsample, SpaceUpsample, TimeDownsample, TimeUpsample
from magvit2.layers_seed import (
    PointwiseSpaceUpsample,
    PointwiseTimeUpsample,
    SingleConvResidualBlock,
    TimeOnlyDownsample,
)
from tests.helpers.media import real_pan_clip
from trainers.configs import build_config

# The seed README's layer list (benchmarks/reference_compare.py uses it at 64x64, init 32, max 128, 2^10 codes).
SEED_LAYERS = ("residual", "compress_space", ("consecutive_residual", 2), "compress_space", ("consecutive_residual", 2),
               "linear_attend_space", "compress_space", ("consecutive_residual", 2), "attend_space", "compress_time",
               ("consecutive_residual", 2), "compress_time", ("consecutive_residual", 2), "attend_time")
# Generator parameters of magvit2-pytorch 0.5.1's VideoTokenizer (its `parameters()`: no discriminator, no VGG),
# counted once in the reference benchmark environment (torch 2.14.1, `make bench`'s .venv-reference):
# sum(p.numel() for p in VideoTokenizer(image_size=64, init_dim=32, max_dim=128, codebook_size=2**10,
#     layers=SEED_LAYERS, perceptual_loss_weight=0.).parameters())  -> 10,153,439
# and the same at the README's image_size=128, init_dim=64, max_dim=512        -> 117,770,995
REFERENCE_PARAMS = {(64, 32, 128): 10_153_439, (128, 64, 512): 117_770_995}

SMALL = dict(image_size=16, init_dim=8, max_dim=16, codebook_size=2**5, input_conv_kernel_size=3, attn_heads=2,
             attn_dim_head=8, linear_attn_heads=2, linear_attn_dim_head=8, norm_groups=4, ff_mult=2)
ALL_KINDS = ("residual", "compress_space", "attend_space", "linear_attend_space", "compress_time", "attend_time",
             "gateloop_time", "compress_time", ("consecutive_residual", 2), "attend_time")


def make(layers, **kw) -> VideoTokenizer:
    torch.manual_seed(0)
    return VideoTokenizer(**{**SMALL, "layers": layers, "block_style": "seed", **kw})


def clip(t=5, size=16, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, size, size, generator=g) * 2 - 1


def count_params(**config) -> int:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        return sum(p.numel() for p in VideoTokenizer(**config).parameters())


@pytest.mark.parametrize(("size", "init_dim", "max_dim"), list(REFERENCE_PARAMS))
def test_seed_style_has_the_reference_parameter_count(size, init_dim, max_dim):
    kw = dict(image_size=size, init_dim=init_dim, max_dim=max_dim, codebook_size=2**10, layers=SEED_LAYERS)
    reference = REFERENCE_PARAMS[(size, init_dim, max_dim)]
    seed = count_params(**kw, block_style="seed")
    assert abs(seed / reference - 1) < 0.01, (seed, reference)
    assert count_params(**kw) > 1.9 * reference  # the default (paper-style) blocks are about twice the size


def test_seed_preset_is_the_seed_readme_model():
    config = preset_config("seed")
    assert config.block_style == "seed" and config.codebook_size == 2**10 and config.layers == SEED_LAYERS
    assert abs(count_params(**config.to_dict()) / REFERENCE_PARAMS[(128, 64, 512)] - 1) < 0.01
    assert build_config("tokenizer", "seed").grad_accum == 8  # the preset has a training recipe


def test_seed_style_builds_single_conv_blocks_and_light_resamplers():
    seed = make(("residual", "compress_space", "compress_time"))
    assert [type(m) for m in [*seed.encoder_layers, *seed.decoder_layers]] == [
        SingleConvResidualBlock, SpaceDownsample, TimeOnlyDownsample,
        PointwiseTimeUpsample, PointwiseSpaceUpsample, SingleConvResidualBlock]
    residual = seed.encoder_layers[0]
    big_kernels = [m for m in residual.modules() if isinstance(m, nn.Conv3d) and m.kernel_size == (3, 3, 3)]
    assert len(big_kernels) == 1  # one k^3 conv per residual unit (paper style: two)
    assert seed.encoder_layers[2].conv.conv.kernel_size == (3, 1, 1)  # time-only downsampling
    assert seed.decoder_layers[0].conv.kernel_size == seed.decoder_layers[1].conv.kernel_size == (1, 1, 1)
    paper = VideoTokenizer(**{**SMALL, "layers": ("residual", "compress_space", "compress_time")})
    assert paper.config.block_style == "paper"  # the default is unchanged
    assert [type(m) for m in [*paper.encoder_layers, *paper.decoder_layers]] == [
        ResidualBlock, SpaceDownsample, TimeDownsample, TimeUpsample, SpaceUpsample, ResidualBlock]

def test_seed_residual_blocks_start_as_the_identity_and_upsamplers_as_repeats():
    x = torch.randn(2, 8, 3, 4, 4)
    assert torch.equal(SingleConvResidualBlock(8)(x), x)
    upsample = PointwiseTimeUpsample(8, 8, first_alone=False)
    up = upsample(x)  # (2, 8, 6, 4, 4): latent frame j -> frames 2j, 2j+1, equal at init
    assert up.shape == (2, 8, 6, 4, 4) and torch.equal(up[:, :, 0::2], up[:, :, 1::2])
    upsample.first_alone = True
    causal = upsample(x)  # 1 + m -> 1 + 2m: the first latent frame gives one frame
    assert causal.shape == (2, 8, 5, 4, 4) and torch.equal(causal, up[:, :, 1:])
    up = PointwiseSpaceUpsample(8, 4)(x)  # (2, 4, 3, 8, 8): each pixel -> an equal 2x2 patch at init
    assert up.shape == (2, 4, 3, 8, 8) and torch.equal(up[..., 0::2, 0::2], up[..., 1::2, 1::2])
    assert TimeOnlyDownsample(8, 16, first_alone=False)(x[:, :, :2]).shape == (2, 16, 1, 4, 4)
    assert TimeOnlyDownsample(8, 16)(x).shape == (2, 16, 2, 4, 4)  # 1 + 2 frames -> 1 + 1


def test_bad_block_style_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"block_style must be one of 'paper', 'seed'; got 'lucid'"):
        TokenizerConfig(**{**SMALL, "layers": ("residual",), "block_style": "lucid"})


@pytest.mark.parametrize("training", [True, False])
def test_seed_style_is_causal(training):
    tok = make(ALL_KINDS).train(training)
    for p in tok.parameters():  # zero-initialised parts (identity starts) would hide a leak: give them weight
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.1)
    video = clip(t=13)  # f = 4 -> 4 latent frames
    base = tok.encode(video)
    for t_latent in range(3):
        changed = video.clone()
        changed[:, :, 1 + 4 * t_latent:] = torch.rand_like(changed[:, :, 1 + 4 * t_latent:])
        latents = tok.encode(changed)
        assert torch.equal(latents[:, :, : t_latent + 1], base[:, :, : t_latent + 1])
        assert not torch.allclose(latents[:, :, t_latent + 1:], base[:, :, t_latent + 1:])
    codes = tok.tokenize(video)  # the decoder is causal too: frames decoded from the first latent frames only
    recon = tok.decode_from_code_indices(codes)
    changed = codes.clone()
    changed[:, 2:] = (changed[:, 2:] + 1) % tok.codebook_size
    recon_changed = tok.decode_from_code_indices(changed)
    assert torch.equal(recon[:, :, : 1 + 4], recon_changed[:, :, : 1 + 4])
    assert not torch.allclose(recon[:, :, 1 + 4:], recon_changed[:, :, 1 + 4:])


def test_first_frame_is_encoded_like_an_image():
    tok = make(ALL_KINDS).eval()
    video = clip(t=9)
    torch.testing.assert_close(tok.encode(video[:, :, 0])[:, :, 0], tok.encode(video)[:, :, 0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["residual", "cond_residual", "compress_space", "compress_time"])
def test_seed_blocks_run_forward_and_backward(name):
    cond_kw = {"dim_cond": 6} if name.startswith("cond_") else {}
    tok = make((name,), **cond_kw)
    video = clip(t=tok.time_compression * 2 + 1)
    cond = torch.randn(2, 6) if cond_kw else None
    out = tok.reconstruct(video, cond=cond)
    assert out.recon.shape == video.shape
    (out.recon.square().mean() + out.quantizer.aux_loss).backward()
    grads = [p.grad for p in tok.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_cond_residual_uses_cond_once_its_modulation_is_nonzero():
    tok = make(("cond_residual",), dim_cond=4)
    with pytest.raises(ValueError, match="cond"):
        tok(clip(t=1))
    block = tok.encoder_layers[0]
    torch.nn.init.normal_(block.to_scale.weight, std=0.5)
    torch.nn.init.normal_(block.pointwise.weight, std=0.5)
    video = clip(t=1)
    assert not torch.allclose(tok(video, cond=torch.zeros(2, 4)), tok(video, cond=torch.ones(2, 4)))


def test_save_and_from_pretrained_keep_the_block_style(tmp_path):
    tok = make(ALL_KINDS).eval()
    tok.save_pretrained(tmp_path / "tok")
    config = json.loads((tmp_path / "tok" / "config.json").read_text())
    assert config["config"]["block_style"] == "seed"
    loaded = VideoTokenizer.from_pretrained(tmp_path / "tok").eval()
    assert loaded.config.block_style == "seed"
    video = clip(t=9)
    assert torch.equal(loaded(video), tok(video))
    assert torch.equal(loaded.tokenize(video), tok.tokenize(video))
    # a config.json written before block_style existed loads as the paper-style architecture
    old = {k: v for k, v in tok.config.to_dict().items() if k != "block_style"}
    assert TokenizerConfig.from_dict(old).block_style == "paper"


def test_seed_style_learns_a_real_clip():
    tok = make(("residual", "compress_space", "residual", "compress_time", "residual"))
    video = real_pan_clip(num_frames=5, size=16)
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = tok.reconstruct(video)
        loss = (out.recon - video).square().mean() + out.quantizer.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float((out.recon - video).detach().square().mean()))
    assert losses[-1] < 0.5 * losses[0]
