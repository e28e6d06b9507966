"""LPIPS with the learned heads as an evaluation metric (`magvit2.lpips_metric`): the heads are the real ones the
`lpips` package ships (installed without its torchvision dependency, as the Makefile does), the backbone a random
VGG16 (its ImageNet weights cannot be downloaded here). Cross-checked against the lpips package's own
`LPIPS(net="vgg", pnet_rand=True)` running on the same backbone: lpips imports torchvision only to build the VGG16,
so the test hands it our VGG through a stand-in `torchvision.models.vgg16`; everything else (scaling, normalisation,
heads and their file, averaging) is the package's code."""

from __future__ import annotations

import copy
import json
import math
import sys
import types

import pytest
import torch

from magvit2.lpips_metric import LPIPS, installed_lpips_heads, load_lpips_heads
from magvit2.perceptual import VGG16Features


def random_vgg(seed: int = 0) -> VGG16Features:
    """A VGG16 whose activations survive all 13 convs (He init, small positive biases)."""
    gen = torch.Generator().manual_seed(seed)
    vgg = VGG16Features()
    with torch.no_grad():
        for m in vgg.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2 / m.weight[0].numel()))
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.05)
    return vgg.eval()


def lpips_package(monkeypatch, vgg: VGG16Features):
    """The installed `lpips` package, imported with a stand-in torchvision whose vgg16() holds `vgg`'s layers."""
    models = types.ModuleType("torchvision.models")

    def vgg16(pretrained=True, **kwargs):
        assert not pretrained, "the test builds LPIPS with pnet_rand=True (no ImageNet weights here)"
        return types.SimpleNamespace(features=copy.deepcopy(vgg.features))

    models.vgg16 = vgg16
    torchvision = types.ModuleType("torchvision")
    torchvision.models = models
    monkeypatch.setitem(sys.modules, "torchvision", torchvision)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    for name in [m for m in sys.modules if m == "lpips" or m.startswith("lpips.")]:
        monkeypatch.delitem(sys.modules, name)
    import lpips

    return lpips


def photos(n: int = 2, size: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Real photos in [-1, 1] (n, 3, size, size) and noisy, shifted copies."""
    from skimage import data

    imgs = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()][:n]
    x = torch.stack([torch.from_numpy(im[:256:256 // size, :256:256 // size].copy()).permute(2, 0, 1)
                     for im in imgs]).float() / 127.5 - 1
    gen = torch.Generator().manual_seed(seed)
    y = (x.roll(1, dims=-1) + 0.1 * torch.randn(x.shape, generator=gen)).clamp(-1, 1)
    return x, y


def test_heads_are_the_lpips_packages():
    path = installed_lpips_heads()
    assert path is not None and path.parts[-4:] == ("lpips", "weights", "v0.1", "vgg.pth")
    heads = load_lpips_heads()
    assert [tuple(h.shape) for h in heads] == [(1, c, 1, 1) for c in (64, 128, 256, 512, 512)]
    assert all((h >= 0).all() and h.sum() > 0 for h in heads)  # lpips clamps its heads to non-negative weights


def test_matches_the_lpips_package_on_the_same_backbone(monkeypatch, one_thread):
    vgg = random_vgg()
    lpips = lpips_package(monkeypatch, vgg)
    reference = lpips.LPIPS(net="vgg", version="0.1", pnet_rand=True, verbose=False).eval()
    ours = LPIPS(vgg=copy.deepcopy(vgg))
    x, y = photos()
    with torch.no_grad():
        expected = reference(x, y).flatten()  # (n,)
    got = ours(x, y)
    assert got.shape == (2,) and torch.allclose(got, expected, rtol=1e-5, atol=1e-7), (got, expected)
    assert float(expected.min()) > 1e-3  # the heads weigh real differences
    assert torch.equal(ours(x, x), torch.zeros(2))
    video_x, video_y = torch.stack([x, y], dim=2), torch.stack([y, y], dim=2)  # (2, 3, 2, h, w)
    assert torch.allclose(ours(video_x, video_y), expected / 2, rtol=1e-5, atol=1e-7)  # frames averaged
    assert not list(ours.state_dict())  # frozen buffers: never part of a checkpoint


def test_weights_are_never_downloaded_and_errors_say_what_to_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty hub cache
    with pytest.raises(FileNotFoundError, match=r"VGG16 weights .* not found.*Nothing is downloaded"):
        LPIPS()
    with pytest.raises(FileNotFoundError, match="LPIPS heads file not found"):
        LPIPS(heads=tmp_path / "nope.pth")
    monkeypatch.setattr("magvit2.lpips_metric.installed_lpips_heads", lambda: None)
    with pytest.raises(FileNotFoundError, match=r"pip install lpips.*--lpips-heads"):
        LPIPS(vgg=random_vgg())
    torch.save({"lin0.model.1.weight": torch.ones(1, 3, 1, 1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"lin0\.model\.1\.weight has shape"):
        LPIPS(vgg=random_vgg(), heads=tmp_path / "bad.pth")


def test_evaluate_reports_lpips(make_clip, tmp_path, capsys, one_thread):
    from magvit2 import VideoTokenizer, preset_config
    from magvit2.pixels import from_uint8
    from scripts.evaluate import main
    from trainers.data.video_io import read_clip

    torch.manual_seed(0)
    VideoTokenizer(preset_config("tiny")).save_pretrained(tmp_path / "tok", training={"num_frames": 5,
                                                                                         "frame_stride": 1, "step": 1})
    make_clip("data/a.mp4", num_frames=6, size=(40, 48), photo="astronaut")
    make_clip("data/b.mp4", num_frames=6, size=(40, 48), photo="coffee")
    vgg_file = tmp_path / "vgg16.pth"
    torch.save(random_vgg().state_dict(), vgg_file)  # a torchvision-style features.N.* state dict
    args = ["--tokenizer", str(tmp_path / "tok"), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "e.json")]
    assert main([*args, "--lpips", "--lpips-vgg", str(vgg_file)]) == 0
    assert "LPIPS" in capsys.readouterr().out
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["protocol"]["lpips"]["version"] == "0.1" and len(report["protocol"]["lpips"]["heads_sha256"]) == 64
    per_clip = [c["lpips"] for c in report["per_clip"]]
    assert len(per_clip) == 2 and report["lpips"] == pytest.approx(sum(per_clip) / 2) and min(per_clip) > 0
    # the number is LPIPS of the clip and its reconstruction, recomputed here
    tok = VideoTokenizer.from_pretrained(tmp_path / "tok").eval()
    video = from_uint8(read_clip(tmp_path / "data" / "a.mp4", (16, 16), num_frames=5))[None]
    with torch.no_grad():
        recon = tok.reconstruct(video).recon.float().clamp(-1, 1)
    assert LPIPS(vgg_file)(recon, video).item() == pytest.approx(per_clip[0], rel=1e-4)
    assert main([*args, "--overwrite", "--lpips-heads", "x.pth"]) == 2
    assert "pass --lpips too" in capsys.readouterr().err
