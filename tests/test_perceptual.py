"""Perceptual loss: never touches the network, torchvision-compatible VGG16 names, local loading, LPIPS behaviour."""

import socket
import time

import pytest
import torch
from safetensors.torch import save_file

from magvit2.config import TokenizerConfig
from magvit2.losses import LossConfig, TokenizerLoss
from magvit2.perceptual import VGG16_CACHE_FILENAME, LPIPSDistance, VGG16Features, default_vgg16_cache_path

TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # torchvision vgg16().features
TOKENIZER = TokenizerConfig(image_size=16, init_dim=8, max_dim=16, codebook_size=2**4,
                            layers=("residual", "compress_space"))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Empty torch hub cache, and any socket use fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_network(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    return tmp_path


def test_missing_weights_raise_fast_and_name_the_path(offline):
    cache = default_vgg16_cache_path()
    assert str(cache).startswith(str(offline / "torch_home"))
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as err:
        TokenizerLoss(LossConfig(perceptual_weight=0.1), TOKENIZER)
    assert time.perf_counter() - start < 1.0
    assert str(cache) in str(err.value) and "perceptual_weights_path" in str(err.value)
    missing = offline / "nowhere" / "vgg.pth"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        TokenizerLoss(LossConfig(perceptual_weight=0.1, perceptual_weights_path=str(missing)), TOKENIZER)
    TokenizerLoss(LossConfig(perceptual_weight=0.0), TOKENIZER)  # off by default: nothing is looked up


def test_vgg_names_match_torchvision():
    state = VGG16Features().state_dict()
    expected = [f"features.{i}.{kind}" for i in TORCHVISION_CONV_INDICES for kind in ("weight", "bias")]
    assert list(state) == expected
    assert state["features.0.weight"].shape == (64, 3, 3, 3)
    assert state["features.28.weight"].shape == (512, 512, 3, 3) and state["features.28.bias"].shape == (512,)


def torchvision_like_state(seed: int) -> dict[str, torch.Tensor]:
    """A full torchvision vgg16 state dict layout: features.* (from our module, names untouched) + classifier.*"""
    torch.manual_seed(seed)
    state = {k: v.clone() for k, v in VGG16Features().state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(8, 8)  # ignored on load (real file: 4096 x 25088)
    return state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_loads_a_torchvision_state_dict_from_a_local_file(offline, suffix):
    state = torchvision_like_state(seed=3)
    path = offline / f"vgg16{suffix}"
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
    net = LPIPSDistance(weights_path=path)
    for i in TORCHVISION_CONV_INDICES:
        torch.testing.assert_close(net.vgg.features[i].weight, state[f"features.{i}.weight"])
        torch.testing.assert_close(net.vgg.features[i].bias, state[f"features.{i}.bias"])


def test_loads_from_torch_hub_cache_and_features_only_dicts(offline):
    state = torchvision_like_state(seed=4)
    cache = default_vgg16_cache_path()
    cache.parent.mkdir(parents=True)
    bare = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    torch.save(bare, cache)  # a `vgg16().features` state dict ("0.weight", ...) also loads
    assert cache.name == VGG16_CACHE_FILENAME
    net = LPIPSDistance()
    torch.testing.assert_close(net.vgg.features[28].weight, state["features.28.weight"])


def test_rejects_incomplete_or_foreign_state_dicts(offline):
    state = torchvision_like_state(seed=5)
    del state["features.28.bias"]
    path = offline / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"features\.28\.bias"):
        LPIPSDistance(weights_path=path)
    with pytest.raises(ValueError, match="must end in"):
        (offline / "vgg.npz").write_bytes(b"x")
        LPIPSDistance(weights_path=offline / "vgg.npz")
    with pytest.raises(ValueError, match="not both"):
        LPIPSDistance(weights_path=path, random_init=True)


def test_lpips_distance_behaviour():
    torch.manual_seed(0)
    net = LPIPSDistance(random_init=True)
    assert list(net.parameters()) == [] and net.state_dict() == {}  # frozen, and never saved
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    torch.testing.assert_close(net(x, x), torch.zeros(2))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    d = [net(x, (x + s * noise).clamp(-1, 1)).mean().item() for s in (0.05, 0.2, 0.8)]
    assert 0 < d[0] < d[1] < d[2]
    video = x.view(1, 3, 2, 32, 32).requires_grad_(True)
    dist = net(video, torch.zeros_like(video))
    assert dist.shape == (1,)
    dist.sum().backward()
    assert torch.isfinite(video.grad).all() and video.grad.abs().sum() > 0
    net.train()
    assert not net.vgg.training
    with pytest.raises(ValueError, match="3, h, w"):
        net(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
