"""magvit2.fvd: I3D architecture (names/shapes of the piergiaj port), Frechet distance against scipy, strict and
pickle-free weight loading, and `magvit2-evaluate --i3d-weights`. I3D is randomly initialised (fixed seed) and run
on the 1024-d "pool" features at 64x64 frames for speed (the protocol's 224 only in the command test); the 400-d
"logits" features (the published protocol) are checked against a TorchScript port in tests/test_i3d_convert.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from magvit2.fvd import InceptionI3d, check_protocol, frechet_distance, fvd, i3d_features, load_i3d

RESIZE = 64
POOL = "pool"  # the small test clips are too short and too small for the logits


def random_i3d(seed: int = 0) -> InceptionI3d:
    """Random I3D whose activations neither vanish nor explode (He init, non-trivial BatchNorm statistics)."""
    gen = torch.Generator().manual_seed(seed)
    model = InceptionI3d()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv3d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2 / fan_in))
            elif isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def i3d():
    return random_i3d()


def videos(n: int, seed: int, frames: int = 5, size: int = 40) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 1, size, size, generator=gen) * 2 - 1
    drift = torch.linspace(0, 0.3, frames).view(1, 1, frames, 1, 1)
    return (base + drift * torch.randn(n, 3, 1, 1, 1, generator=gen)).clamp(-1, 1)


def test_state_dict_names_and_shapes_of_the_port():
    state = InceptionI3d().state_dict()
    assert len(state) == 344
    assert tuple(state["Conv3d_1a_7x7.conv3d.weight"].shape) == (64, 3, 7, 7, 7)
    assert tuple(state["Conv3d_2c_3x3.conv3d.weight"].shape) == (192, 64, 3, 3, 3)
    assert tuple(state["Mixed_3b.b1b.conv3d.weight"].shape) == (128, 96, 3, 3, 3)
    assert tuple(state["Mixed_4f.b3b.bn.running_var"].shape) == (128,)
    assert tuple(state["Mixed_5c.b0.conv3d.weight"].shape) == (384, 832, 1, 1, 1)
    assert tuple(state["logits.conv3d.weight"].shape) == (400, 1024, 1, 1, 1)
    assert tuple(state["logits.conv3d.bias"].shape) == (400,)
    assert "Mixed_3b.b0.conv3d.bias" not in state and "logits.bn.weight" not in state


def test_features_shape_determinism_and_logits(i3d, one_thread):
    x = videos(3, seed=1)
    feats = i3d_features(i3d, x, resize=RESIZE, features=POOL)
    assert feats.shape == (3, 1024) and torch.isfinite(feats).all() and feats.abs().mean() > 1e-3
    assert torch.equal(feats, i3d_features(i3d, x, resize=RESIZE, features=POOL))  # deterministic
    assert torch.allclose(feats, i3d_features(i3d, x, resize=RESIZE, batch_size=2, features=POOL), rtol=1e-4,
                          atol=1e-5)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        i3d_features(i3d, x * 255, resize=RESIZE, features=POOL)
    with pytest.raises(ValueError, match=r"\(b, 3, t, h, w\)"):
        i3d_features(i3d, x[:, :1], resize=RESIZE, features=POOL)


def test_logits_features_need_the_published_clip_size(i3d):
    """The default features are the 400 logits (what published FVDs compare); I3D's (2, 7, 7) pool before them
    needs >= 9 frames at >= 193 pixels, so shorter or smaller input is refused with the fix named."""
    check_protocol(16, 224)  # the published protocol
    with pytest.raises(ValueError, match=r">= 9 frames.*got 5 frames at 224x224.*'pool'"):
        i3d_features(i3d, videos(2, seed=1), resize=224)
    with pytest.raises(ValueError, match="got 16 frames at 64x64"):
        check_protocol(16, 64)
    with pytest.raises(ValueError, match="at least 9 frames of 193x193"):
        i3d.logits_features(torch.zeros(1, 3, 8, 32, 32))
    with pytest.raises(ValueError, match="features must be one of"):
        check_protocol(16, 224, "mean")


def test_fvd_zero_for_identical_sets_and_positive_otherwise(i3d, one_thread):
    real, other = videos(4, seed=2), videos(4, seed=3)
    different = fvd(real, other, i3d, resize=RESIZE, features=POOL)
    same = fvd(real, real.clone(), i3d, resize=RESIZE, features=POOL)
    assert different > 0 and same < 1e-6 * different
    with pytest.raises(ValueError, match="n >= 2"):
        fvd(real[:1], other, i3d, resize=RESIZE, features=POOL)


def test_frechet_distance_matches_scipy():
    from scipy import linalg

    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16))
    b = rng.normal(0.5, 1.0, size=(200, 16)) @ rng.normal(size=(16, 16))
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s_a @ s_b)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    expected = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))
    got = frechet_distance(torch.from_numpy(a).float(), torch.from_numpy(b).float())
    assert got == pytest.approx(expected, rel=1e-5)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(torch.from_numpy(a), torch.from_numpy(b[:, :8]))


def test_load_round_trips(i3d, tmp_path, one_thread):
    x = videos(2, seed=4)
    expected = i3d_features(i3d, x, resize=RESIZE, features=POOL)
    state = i3d.state_dict()
    torch.save(state, tmp_path / "i3d.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "i3d.safetensors"))
    old_style = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # files of old torch
    torch.save(old_style, tmp_path / "old.pt")
    for name in ("i3d.pt", "i3d.safetensors", "old.pt"):
        loaded = load_i3d(tmp_path / name)
        assert not loaded.training
        assert torch.equal(i3d_features(loaded, x, resize=RESIZE, features=POOL), expected), name


def test_tampered_or_foreign_files_are_refused(i3d, tmp_path):
    state = dict(i3d.state_dict())
    missing = {k: v for k, v in state.items() if k != "Mixed_4c.b1b.conv3d.weight"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"missing.*Mixed_4c\.b1b\.conv3d\.weight"):
        load_i3d(tmp_path / "missing.pt")
    state["logits.conv3d.weight"] = torch.zeros(101, 1024, 1, 1, 1)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "shape.safetensors"))
    with pytest.raises(ValueError, match=r"logits\.conv3d\.weight has shape \(101, 1024, 1, 1, 1\)"):
        load_i3d(tmp_path / "shape.safetensors")
    torch.save({"state_dict": 3}, tmp_path / "nested.pt")
    with pytest.raises(ValueError, match="expected a state dict"):
        load_i3d(tmp_path / "nested.pt")
    with pytest.raises(FileNotFoundError):
        load_i3d(tmp_path / "absent.pt")


def test_torchscript_is_refused(tmp_path):
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    scripted.save(str(tmp_path / "i3d_torchscript.pt"))
    with pytest.raises(ValueError, match="TorchScript") as info:
        load_i3d(tmp_path / "i3d_torchscript.pt")
    assert "magvit2-convert i3d" in str(info.value) and "runs code" in str(info.value)
    assert "\n" not in str(info.value)


def test_command_with_i3d_weights(make_clip, tmp_path, capsys, one_thread):
    from magvit2 import VideoTokenizer, preset_config
    from scripts.evaluate import main

    torch.manual_seed(0)
    VideoTokenizer(preset_config("tiny")).save_pretrained(tmp_path / "tok", training={"num_frames": 5,
                                                                                         "frame_stride": 1, "step": 1})
    make_clip("data/b/two.mp4", num_frames=9, size=(40, 48), photo="coffee")
    make_clip("data/a/one.mp4", num_frames=7, size=(40, 48), photo="astronaut")
    torch.save(random_i3d().state_dict(), tmp_path / "i3d.pt")
    args = ["--tokenizer", str(tmp_path / "tok"), "--data", str(tmp_path / "data")]
    assert main([*args, "--out", str(tmp_path / "e.json"), "--i3d-weights", str(tmp_path / "i3d.pt"),
                 "--i3d-features", "pool"]) == 0
    assert "rFVD" in capsys.readouterr().out
    report = json.loads((tmp_path / "e.json").read_text())
    assert math.isfinite(report["rfvd"]) and report["rfvd"] >= 0 and report["fvd"] == report["rfvd"]
    proto = report["protocol"]["fvd"]
    assert proto["clip_frames"] == 5 and proto["resize"] == [224, 224] and proto["clips"] == 2
    assert proto["features"] == "pool" and proto["feature_dim"] == 1024 and report["protocol"]["version"] == 2
    assert len(proto["weights_sha256"]) == 64 and "2048" in report["fvd_note"]

    assert main([*args, "--out", str(tmp_path / "plain.json")]) == 0
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert plain["rfvd"] is None and plain["fvd"] is None and "--i3d-weights" in plain["fvd_note"]
    assert plain["protocol"]["fvd"] is None
    capsys.readouterr()
    assert main([*args, "--i3d-weights", str(tmp_path / "i3d.pt"), "--max-clips", "1"]) == 2
    assert "at least 2 clips" in capsys.readouterr().err
    assert main([*args, "--i3d-weights", str(tmp_path / "i3d.pt")]) == 2  # 5-frame clips: no logits
    assert ">= 9 frames" in capsys.readouterr().err
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    scripted.save(str(tmp_path / "ts.pt"))
    assert main([*args, "--i3d-weights", str(tmp_path / "ts.pt")]) == 2
    assert "TorchScript" in capsys.readouterr().err
