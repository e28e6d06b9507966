"""Image-to-video inflation (`magvit2.layers.inflate_image_weights_`, `--init-from-image`): the inflated tokenizer
gives a still image the same output as before, and runs a video as the image model on every frame."""

from __future__ import annotations

import pytest
import torch

from magvit2 import VideoTokenizer, preset_config
from magvit2.layers import CausalConv3d, inflate_image_weights_
from tests.helpers.commands import cli, one_line

# every temporal layer a conv (no time attention: it mixes frames by design), two time compressions: f = 4
LAYERS = ("residual", "compress_space", "compress_time", "residual", "compress_time", "residual")


def _image_model(seed: int = 0) -> VideoTokenizer:
    """A tiny tokenizer whose weights are all perturbed, so that its temporal taps differ and the two output frames of
    each time upsampler do too (their init makes them equal, which would hide a missing copy)."""
    torch.manual_seed(seed)
    tokenizer = VideoTokenizer(preset_config("tiny", layers=LAYERS)).eval()
    with torch.no_grad():
        for p in tokenizer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return tokenizer


@torch.no_grad()
def test_an_inflated_tokenizer_gives_a_still_image_the_same_output():
    tokenizer = _image_model()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    latents = torch.randn(2, tokenizer.encode(images).shape[1], 1, 8, 8)
    before = tokenizer.encode(images), tokenizer.decode(latents)
    assert inflate_image_weights_(tokenizer) > 0
    after = tokenizer.encode(images), tokenizer.decode(latents)
    torch.testing.assert_close(after[0], before[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(after[1], before[1], rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_an_inflated_tokenizer_runs_a_video_as_the_image_model_on_every_frame():
    tokenizer = _image_model()
    f = tokenizer.time_compression
    video = torch.rand(1, 3, 1 + 2 * f, 16, 16) * 2 - 1
    latent_video = torch.randn(1, tokenizer.encode(video).shape[1], 3, 8, 8)
    # before: the taps mix frames, so latent frame 1 is not the image latent of the frame it ends on
    assert not torch.allclose(tokenizer.encode(video)[:, :, 1], tokenizer.encode(video[:, :, f])[:, :, 0], atol=1e-3)
    inflate_image_weights_(tokenizer)
    latents = tokenizer.encode(video)  # (1, d, 3, 8, 8)
    for j in range(3):  # latent frame j: the image latent of frame j * f (the newest frame it covers)
        torch.testing.assert_close(latents[:, :, j], tokenizer.encode(video[:, :, j * f])[:, :, 0],
                                   rtol=1e-4, atol=1e-5)
    frames = tokenizer.decode(latent_video)  # (1, 3, 1 + 2f, 16, 16)
    images = [tokenizer.decode(latent_video[:, :, j : j + 1])[:, :, 0] for j in range(3)]
    owner = [0] + [1 + (t - 1) // f for t in range(1, 1 + 2 * f)]  # frame t decodes from latent frame owner[t]
    for t, j in enumerate(owner):
        torch.testing.assert_close(frames[:, :, t], images[j], rtol=1e-4, atol=1e-5)


def test_init_from_image_inflates_the_tokenizer_it_starts_from(tmp_path, make_clip, capsys):
    for photo in ("astronaut", "coffee", "chelsea", "rocket"):
        make_clip(f"clips/{photo}.mp4", num_frames=9, size=(20, 24), photo=photo)
    common = ["--data", tmp_path / "clips", "--preset", "tiny", "--batch-size", "2", "--max-steps", "1"]
    assert cli("scripts.train_tokenizer", [*common, "--out", tmp_path / "image", "--num-frames", "1"], capsys)[0] == 0
    code, _ = cli("scripts.train_tokenizer", [*common, "--out", tmp_path / "video", "--num-frames", "5",
                                              "--init-from-image", tmp_path / "image" / "tokenizer"], capsys)
    assert code == 0
    conv = "conv_in.conv.weight"
    image = VideoTokenizer.from_pretrained(tmp_path / "image" / "tokenizer").state_dict()[conv]
    video = VideoTokenizer.from_pretrained(tmp_path / "video" / "tokenizer").state_dict()[conv]
    assert image[:, :, :-1].abs().max() > 0.1  # the image model's older taps: random init, trained only as a sum
    assert video[:, :, :-1].abs().max() < 0.02  # inflated to zero, then at most one small update
    torch.testing.assert_close(video.sum(2), image.sum(2), atol=0.02, rtol=0)  # the sum the image model learned
    one_line(*cli("scripts.train_tokenizer", [*common, "--out", tmp_path / "both", "--init-from", tmp_path / "image",
                                              "--init-from-image", tmp_path / "image"], capsys),
             "--init-from or --init-from-image, not both")


@pytest.mark.parametrize("layers", [("residual",), ("compress_space", "compress_time")])
def test_inflation_counts_every_temporal_layer(layers):
    tokenizer = VideoTokenizer(preset_config("tiny", layers=layers))
    convs = [m for m in tokenizer.modules() if type(m).__name__ == "CausalConv3d" and m.conv.weight.shape[2] > 1]
    ups = [m for m in tokenizer.modules() if type(m).__name__ == "TimeUpsample" and m.first_alone]
    assert inflate_image_weights_(tokenizer) == len(convs) + len(ups) > 0
    assert all(m.conv.weight[:, :, :-1].abs().max() == 0 for m in convs)


def _padded_conv(layer: CausalConv3d, x: torch.Tensor) -> torch.Tensor:
    """What a CausalConv3d computes by definition: first-frame copies on the left, then the 3D conv."""
    padded = torch.cat([x[:, :, :1].expand(-1, -1, layer.time_pad, -1, -1), x], dim=2)
    return layer.conv(padded)


@pytest.mark.parametrize(("kernel", "stride", "time_pad"),
                         [(3, 1, None), (3, 2, 2), ((3, 1, 1), 2, 2), ((2, 3, 3), 1, 1)])
def test_a_still_image_through_a_causal_conv_matches_the_padded_3d_conv(kernel, stride, time_pad):
    """A 1-frame input runs as one (1, k, k) conv with the temporal taps summed; its output and every gradient (input,
    each tap, bias) equal the padded 3D conv's."""
    torch.manual_seed(0)
    layer = CausalConv3d(4, 6, kernel, time_stride=stride, time_pad=time_pad)
    x = torch.randn(2, 4, 1, 8, 8, requires_grad=True)
    grads = []
    for forward in (layer, lambda v: _padded_conv(layer, v)):
        out = forward(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((out.detach(), x.grad.clone(), layer.conv.weight.grad.clone(), layer.conv.bias.grad.clone()))
        x.grad, layer.conv.weight.grad, layer.conv.bias.grad = None, None, None
    assert grads[0][0].shape == (2, 6, 1, 8, 8)
    for fast, reference in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)


def test_the_demo_tokenizer_trains_on_still_images_at_under_half_the_flops(monkeypatch):
    """The demo's frame phase: a still-image update gives the same reconstruction and parameter gradients as the
    padded 3D convs, for less than half their FLOPs (its 3x3x3 convs run as 3x3)."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    tokenizer = VideoTokenizer(preset_config("demo"))
    images = torch.rand(4, 3, 1, 32, 32) * 2 - 1
    results = {}
    for path in ("fast", "padded"):
        if path == "padded":
            monkeypatch.setattr(CausalConv3d, "forward", _padded_conv)
        tokenizer.zero_grad()
        with FlopCounterMode(display=False) as counter:
            recon = tokenizer.reconstruct(images).recon
            recon.pow(2).mean().backward()
        results[path] = (counter.get_total_flops(), recon.detach(), [p.grad.clone() for p in tokenizer.parameters()])
    assert results["fast"][0] < 0.5 * results["padded"][0], (results["fast"][0], results["padded"][0])
    torch.testing.assert_close(results["fast"][1], results["padded"][1], rtol=1e-4, atol=1e-5)
    for fast, padded in zip(results["fast"][2], results["padded"][2], strict=True):
        torch.testing.assert_close(fast, padded, rtol=1e-3, atol=1e-5)
