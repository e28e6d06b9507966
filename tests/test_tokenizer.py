"""VideoTokenizer: shapes, every layer kind, causality, the discrete round trip, persistence, input validation."""

from __future__ import annotations

import json

import pytest
import torch

from magvit2 import TokenizerConfig, VideoTokenizer, preset_config
from magvit2.config import COND_LAYERS, PLAIN_LAYERS
from tests.helpers.media import real_pan_clip

SMALL = dict(image_size=16, init_dim=8, max_dim=16, codebook_size=2**5, input_conv_kernel_size=3, attn_heads=2,
             attn_dim_head=8, linear_attn_heads=2, linear_attn_dim_head=8, norm_groups=4, ff_mult=2)


def make(layers, **kw) -> VideoTokenizer:
    torch.manual_seed(0)
    return VideoTokenizer(**{**SMALL, "layers": layers, **kw})


def clip(t=5, size=16, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, size, size, generator=g) * 2 - 1


def test_seed_style_construction_and_compression_attributes():
    tok = make(("residual", "compress_space", ("consecutive_residual", 2), "compress_time", "compress_time"))
    assert isinstance(tok.config, TokenizerConfig)
    assert (tok.time_compression, tok.space_compression, tok.codebook_size) == (4, 2, 32)
    assert tok.latent_shape(17) == (5, 8, 8)


def test_video_and_image_shapes_17_frames_to_5():
    tok = make(("compress_space", "compress_time", "compress_time"))
    video = clip(t=17, b=1)
    out = tok.reconstruct(video)
    assert out.recon.shape == video.shape
    assert out.codes.shape == (1, 5, 8, 8)
    image = video[:, :, 0]
    assert tok(image).shape == image.shape
    assert tok.tokenize(image).shape == (1, 1, 8, 8)


def test_non_square_frames():
    tok = make(("residual", "compress_space", "attend_space", "linear_attend_space", "compress_time"),
               image_size=(16, 24))
    video = torch.rand(1, 3, 3, 16, 24) * 2 - 1
    assert tok(video).shape == video.shape
    assert tok.tokenize(video).shape == (1, 2, 8, 12)


@pytest.mark.parametrize("name", [*PLAIN_LAYERS, *COND_LAYERS, "compress_space", "compress_time"])
def test_every_layer_kind_alone_runs_forward_and_backward(name):
    cond_kw = {"dim_cond": 6} if name.startswith("cond_") else {}
    tok = make((name,), **cond_kw)
    video = clip(t=tok.time_compression * 2 + 1)
    cond = torch.randn(2, 6) if cond_kw else None
    out = tok.reconstruct(video, cond=cond)
    assert out.recon.shape == video.shape
    (out.recon.square().mean() + out.quantizer.aux_loss).backward()
    grads = [p.grad for p in tok.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads if g is not None)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_cond_layers_mixed_with_plain_layers_in_any_order():
    # the reference crashed when a plain layer followed a cond layer (sticky `has_cond`)
    layers = ("cond_residual", "residual", "compress_space", "cond_attend_space", "attend_space",
              "cond_linear_attend_space", "compress_time", "cond_attend_time", "attend_time", "gateloop_time")
    tok = make(layers, dim_cond=6)
    video, cond = clip(t=3), torch.randn(2, 6)
    out = tok.reconstruct(video, cond=cond)
    assert out.recon.shape == video.shape
    out.recon.mean().backward()
    with pytest.raises(ValueError, match="cond"):
        tok(video)  # cond layers need cond
    with pytest.raises(ValueError, match=r"cond of shape \(2, 6\)"):
        tok(video, cond=torch.randn(2, 5))


def test_cond_changes_output_once_modulation_is_nonzero():
    tok = make(("cond_residual", "cond_attend_space"), dim_cond=4)
    for p in tok.parameters():  # modulation starts at zero by design; give it weight
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.1)
    video = clip(t=1)
    a = tok(video, cond=torch.zeros(2, 4))
    b = tok(video, cond=torch.ones(2, 4))
    assert not torch.allclose(a, b)


ALL_KINDS = ("residual", "compress_space", "attend_space", "linear_attend_space", "compress_time", "attend_time",
             "gateloop_time", "compress_time", ("consecutive_residual", 2), "attend_time")


@pytest.mark.parametrize("time_padding", ["causal", "prepend"])
@pytest.mark.parametrize("training", [True, False])
def test_causality_latents_ignore_later_frames(training, time_padding):
    tok = make(ALL_KINDS, time_padding=time_padding).train(training)
    video = clip(t=13)  # f = 4 -> 4 latent frames
    base = tok.encode(video)
    for t_latent in range(3):
        changed = video.clone()
        changed[:, :, 1 + 4 * t_latent:] = torch.rand_like(changed[:, :, 1 + 4 * t_latent:])
        latents = tok.encode(changed)
        assert torch.equal(latents[:, :, : t_latent + 1], base[:, :, : t_latent + 1])
        assert not torch.allclose(latents[:, :, t_latent + 1:], base[:, :, t_latent + 1:])


@pytest.mark.parametrize("time_padding", ["causal", "prepend"])
def test_first_frame_is_encoded_like_an_image(time_padding):
    tok = make(ALL_KINDS, time_padding=time_padding).eval()
    video = clip(t=9)
    # same maths on differently shaped tensors: equal up to float summation order
    torch.testing.assert_close(tok.encode(video[:, :, 0])[:, :, 0], tok.encode(video)[:, :, 0], atol=1e-5, rtol=1e-5)
    assert torch.equal(tok.tokenize(video[:, :, 0])[:, 0], tok.tokenize(video)[:, 0])


@pytest.mark.parametrize("use_fsq", [False, True])
def test_tokenize_decode_round_trip_equals_eval_reconstruction(use_fsq):
    kw = {"use_fsq": True, "fsq_levels": (5, 4, 3), "codebook_size": None} if use_fsq else {}
    tok = make(("residual", "compress_space", "attend_space", "compress_time"), **kw)
    video = clip(t=5)
    codes = tok.tokenize(video)
    assert codes.dtype == torch.long and codes.shape == (2, 3, 8, 8)
    assert int(codes.min()) >= 0 and int(codes.max()) < tok.codebook_size
    assert tok.training  # tokenize did not flip the mode
    tok.eval()
    expected = tok(video)
    assert torch.equal(tok.decode_from_code_indices(codes), expected)
    assert torch.equal(tok.decode_from_code_indices(codes.flatten(1)), expected)  # flattened (b, n) codes
    assert not tok.training


def test_tokenize_keeps_eval_mode_and_submodule_modes():
    tok = make(("residual",)).eval()
    tok.tokenize(clip(t=1))
    assert not any(m.training for m in tok.modules())
    tok.train()
    tok.quantizer.eval()  # mixed modes are restored exactly
    tok.tokenize(clip(t=1))
    assert tok.training and not tok.quantizer.training


def test_save_and_from_pretrained_give_identical_outputs(tmp_path):
    tok = make(ALL_KINDS).eval()
    tok.save_pretrained(tmp_path / "tok")
    config = json.loads((tmp_path / "tok" / "config.json").read_text())
    assert config["_format_version"] == 1 and config["_kind"] == "VideoTokenizer"
    loaded = VideoTokenizer.from_pretrained(tmp_path / "tok").eval()
    video = clip(t=9)
    assert torch.equal(loaded(video), tok(video))
    assert torch.equal(loaded.tokenize(video), tok.tokenize(video))


def test_from_pretrained_rejects_unknown_keys_versions_and_pickle(tmp_path):
    tok = make(("residual",))
    path = tok.save_pretrained(tmp_path / "tok")
    payload = json.loads((path / "config.json").read_text())
    payload["config"]["surprise"] = 1
    (path / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="unknown keys in TokenizerConfig: \\['surprise'\\]"):
        VideoTokenizer.from_pretrained(path)
    payload["config"].pop("surprise")
    payload["_format_version"] = 999
    (path / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="format version 999"):
        VideoTokenizer.from_pretrained(path)
    payload["_format_version"] = 1
    (path / "config.json").write_text(json.dumps(payload))
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="pickle checkpoints are not loaded"):
        VideoTokenizer.from_pretrained(path)


def test_truncated_weights_give_error_naming_the_file(tmp_path):
    path = make(("residual",)).save_pretrained(tmp_path / "tok")
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        VideoTokenizer.from_pretrained(path)


@pytest.mark.parametrize(
    "video, message",
    [
        (torch.rand(2, 3, 16, 16, 16), r"got 16 frames; need 1 \+ 4k, e.g. 13 or 17"),
        (torch.rand(3, 16, 16), r"or images \(b, c, h, w\); got shape \(3, 16, 16\)"),
        (torch.rand(2, 1, 5, 16, 16), "expected 3 channels at dim 1; got 1"),
        (torch.rand(2, 3, 5, 16, 8), r"expected frames of size \(16, 16\); got \(16, 8\)"),
        (torch.randint(0, 255, (2, 3, 5, 16, 16), dtype=torch.uint8), "expected a float video in .-1, 1.; got dtype"),
    ],
)
def test_bad_video_inputs_raise_clear_value_errors(video, message):
    tok = make(("compress_time", "compress_time"))
    with pytest.raises(ValueError, match=message):
        tok.tokenize(video)


def test_bad_codes_raise_clear_value_errors():
    tok = make(("compress_space",))
    with pytest.raises(ValueError, match=r"codes must be in \[0, 32\); got values in \[32, 32\]"):
        tok.decode_from_code_indices(torch.full((1, 1, 8, 8), 32))
    with pytest.raises(ValueError, match="got values in \\[-1"):
        tok.decode_from_code_indices(torch.full((1, 1, 8, 8), -1))
    with pytest.raises(ValueError, match="expected integer codes"):
        tok.decode_from_code_indices(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="n divisible by h'\\*w' = 64"):
        tok.decode_from_code_indices(torch.zeros(1, 65, dtype=torch.long))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(codebook_size=1000), "power of 2"),
        (dict(layers=("residual", "fly")), "unknown layer 'fly'"),
        (dict(layers=("cond_residual",)), "dim_cond"),
        (dict(layers=(("consecutive_residual", 0),)), "positive int"),
        (dict(image_size=18, layers=("compress_space", "compress_space")), "divisible by the space compression 4"),
        (dict(use_fsq=True), "fsq_levels"),
        (dict(use_fsq=True, fsq_levels=(8, 5), codebook_size=None, fsq_noise_dropout=0.5),
         "needs fsq_preserve_symmetry=True"),
        (dict(use_fsq=True, fsq_levels=(8, 5), codebook_size=None, fsq_preserve_symmetry=True,
              fsq_noise_dropout=1.0), r"fsq_noise_dropout must be in \[0, 1\)"),
        (dict(fsq_preserve_symmetry=True), "use_fsq=False"),
        (dict(use_fsq=True, fsq_levels=(8, 5, 5), codebook_size=None, quantizer_norm_groups=2),
         "quantizer_norm_groups must be 0 .off. or divide the 3 FSQ dimensions; got 2"),
        (dict(quantizer_norm_groups=3), "quantizer_norm_groups must be 0 .off. or divide the 5 LFQ code bits; got 3"),
    ],
)
def test_bad_configs_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TokenizerConfig(**{**SMALL, "layers": ("residual",), **kwargs})


def test_presets_build_and_paper_preset_matches_the_paper_shapes():
    for name in ("tiny", "demo"):
        tok = VideoTokenizer(preset_config(name))
        assert tok.codebook_size == tok.config.effective_codebook_size
    assert preset_config("demo").effective_codebook_size == 8 * 5 * 5 * 5  # the demo preset uses FSQ
    paper = preset_config("paper")
    assert paper.image_size == (128, 128) and paper.codebook_size == 2**18
    assert (paper.time_compression, paper.space_compression) == (4, 8)
    assert paper.entropy_group_sizes == (9, 9)


def test_overfitting_one_real_clip_reduces_the_loss():
    from magvit2.losses import LossConfig, TokenizerLoss

    torch.manual_seed(0)
    tok = VideoTokenizer(preset_config("tiny"))
    loss_fn = TokenizerLoss(LossConfig(), tok.config)
    video = real_pan_clip(num_frames=5, size=16)
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        out = tok.reconstruct(video, step=step)
        loss, parts = loss_fn.generator_loss(video, out, last_layer=tok.last_layer_weight, step=step,
                                             use_adversarial=False)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(parts.recon))
    assert losses[-1] < 0.5 * losses[0], losses


def test_causal_time_padding_spends_no_work_on_padding_frames():
    """"causal" runs every level on the clip's own 1 + k*f frames; "prepend" on (k + 1) * f (9 frames: 12 at the
    input resolution), a third more convolution work on the demo's clips for the same outputs' shapes."""
    from torch.utils.flop_counter import FlopCounterMode

    flops = {}
    for mode in ("causal", "prepend"):
        tok = VideoTokenizer(preset_config("demo", time_padding=mode)).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            recon = tok(torch.zeros(1, 3, 9, 32, 32))
        assert recon.shape == (1, 3, 9, 32, 32)
        flops[mode] = counter.get_total_flops()
    assert flops["causal"] < 0.8 * flops["prepend"]


def test_folders_written_before_time_padding_existed_load_as_prepend(tmp_path):
    """A config.json without `time_padding` (every tokenizer before it) keeps its architecture: "prepend"."""
    tok = make(("residual", "compress_time"), time_padding="prepend").eval()
    folder = tok.save_pretrained(tmp_path / "old")
    config = json.loads((folder / "config.json").read_text())
    del config["config"]["time_padding"]
    (folder / "config.json").write_text(json.dumps(config))
    loaded = VideoTokenizer.from_pretrained(folder).eval()
    assert loaded.config.time_padding == "prepend"
    video = clip(t=5)
    torch.testing.assert_close(loaded(video), tok(video))
    assert TokenizerConfig(image_size=16, codebook_size=4).time_padding == "causal"  # new models: no wasted frames


def test_channels_last_on_the_cpu_computes_what_the_contiguous_layout_does(monkeypatch):
    import magvit2.layers
    import magvit2.tokenizer

    tok = make(ALL_KINDS).train()
    video = clip(t=5)
    out = tok.reconstruct(video, step=0)
    out.recon.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in tok.named_parameters() if p.grad is not None}
    tok.zero_grad()
    monkeypatch.setattr(magvit2.tokenizer, "conv_memory_format", lambda x: torch.contiguous_format)
    ref = tok.reconstruct(video, step=0)
    ref.recon.square().mean().backward()
    torch.testing.assert_close(out.recon, ref.recon, atol=1e-5, rtol=1e-5)
    for n, p in tok.named_parameters():
        if n in grads:
            torch.testing.assert_close(grads[n], p.grad, atol=1e-4, rtol=1e-4)


def test_decoder_trained_under_a_frozen_encoder_does_not_crash():
    """torch 2.13's CPU GroupNorm backward segfaults on a channels_last input that does not require grad (the first
    decoder norm when the encoder is frozen): `FrameGroupNorm` routes such inputs through the contiguous layout.
    Run in a subprocess, so a segfault fails this test instead of killing the suite."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import torch\n"
        "from magvit2 import VideoTokenizer, preset_config\n"
        "tok = VideoTokenizer(preset_config('demo', init_dim=32, max_dim=128))\n"
        "with torch.no_grad():\n"
        "    q = tok.quantize(tok.encode(torch.rand(2, 3, 9, 32, 32) * 2 - 1)).quantized\n"
        "tok.decode(q).square().mean().backward()\n"
        "print('ok')\n"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300,
                            env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert result.returncode == 0 and "ok" in result.stdout, (result.returncode, result.stderr[-2000:])


def test_fsq_noise_dropout_perturbs_training_outputs_only_and_never_the_codes():
    kw = dict(use_fsq=True, fsq_levels=(8, 5, 5), codebook_size=None, fsq_preserve_symmetry=True)
    plain, noisy = make(("residual", "compress_space"), **kw), make(("residual", "compress_space"), **kw,
                                                                      fsq_noise_dropout=0.5)
    noisy.load_state_dict(plain.state_dict())  # same weights: only the noise differs
    video = clip(t=1)
    torch.manual_seed(0)
    assert not torch.equal(plain(video), noisy(video))  # training mode: noise on half the quantized values
    assert torch.equal(plain.tokenize(video), noisy.tokenize(video))
    plain.eval(), noisy.eval()
    assert torch.equal(plain(video), noisy(video))
    assert TokenizerConfig.from_dict(noisy.config.to_dict()) == noisy.config


@pytest.mark.parametrize("use_fsq, groups", [(True, 1), (True, 3), (False, 1), (False, 5)])
def test_quantizer_norm_normalises_each_frame_alone_and_keeps_the_codes_causal(use_fsq, groups):
    from magvit2.quantize import frame_group_norm

    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3 * 16, 1, 15, generator=g) * 5 + 2  # (b, t x hw, c, D): 3 frames of 16 tokens
    normed = frame_group_norm(z, 16, groups).reshape(2, 3, 16, 15)
    per_group = normed.reshape(2, 3, 16, groups, 15 // groups).transpose(2, 3).flatten(3)  # (b, t, groups, values)
    assert torch.allclose(per_group.mean(-1), torch.zeros(()), atol=1e-5)
    assert torch.allclose(per_group.var(-1, correction=0), torch.ones(()), atol=1e-3)

    kw = dict(use_fsq=True, fsq_levels=(8, 5, 5), codebook_size=None) if use_fsq else {}  # LFQ: 2^5 codes
    layers = ("residual", "compress_space", "compress_time")
    plain, normed_tok = make(layers, **kw), make(layers, **kw, quantizer_norm_groups=groups)
    normed_tok.load_state_dict(plain.state_dict())  # no new weights: the norm is not affine
    video = clip(t=5)
    later = video.clone()
    later[:, :, 1:] = clip(t=4, seed=1)  # only the frames after the first differ
    codes, later_codes = normed_tok.tokenize(video), normed_tok.tokenize(later)
    assert torch.equal(codes[:, 0], later_codes[:, 0]) and not torch.equal(codes[:, 1:], later_codes[:, 1:])
    assert not torch.equal(codes, plain.tokenize(video))
    (normed_tok(video) - video).square().mean().backward()  # gradients flow through the norm to the encoder
    projection = normed_tok.quantizer.fsq if use_fsq else normed_tok.quantizer.lfq
    assert projection.project_in.weight.grad.abs().sum() > 0
    assert TokenizerConfig.from_dict(normed_tok.config.to_dict()) == normed_tok.config


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_fsq_noise_reaches_the_share_of_values_asked_for(rate):
    """vector-quantize-pytorch 1.32 noised half the values at every rate; `RatedNoiseFSQ` noises `rate` of them."""
    from magvit2.quantize import RatedNoiseFSQ

    fsq = RatedNoiseFSQ(levels=[8, 5, 5, 5], preserve_symmetry=True, noise_dropout=rate)
    z = torch.randn(1, 20000, 4, generator=torch.Generator().manual_seed(0)) * 0.5  # few values at the +-1 ends
    torch.manual_seed(0)
    noisy, indices = fsq(z)
    clean, clean_indices = fsq.eval()(z)
    assert torch.equal(indices, clean_indices)  # codes come before the noise
    share = float((noisy != clean).float().mean())
    assert rate * 0.85 < share <= rate * 1.02
