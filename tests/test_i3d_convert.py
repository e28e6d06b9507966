"""`magvit2-convert i3d`: the TorchScript I3D of the common FVD code -> our detector, so `magvit2-evaluate
--i3d-weights` reproduces the FVDs computed with it. The real `i3d_torchscript.pt` cannot be downloaded here; a
scripted stand-in of its architecture, names and interface (tests/i3d_standin.py) is converted instead, and the FVD
our evaluation reports with the converted weights is checked against the FVD of the stand-in's own features
(`return_features=True` through its own rescale/resize preprocessing) on the same clips."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors import safe_open

from magvit2.fvd import InceptionI3d, frechet_distance
from tests.i3d_standin import random_standin
from trainers.commands.convert_i3d import _check_eps, map_state


@pytest.fixture(scope="module")
def standin():
    return random_standin(seed=0)


@pytest.fixture(scope="module")
def scripted(standin, tmp_path_factory):
    path = tmp_path_factory.mktemp("ts") / "i3d_torchscript.pt"
    torch.jit.script(standin).save(str(path))
    return path


@pytest.mark.slow
def test_convert_then_evaluate_reproduces_the_torchscript_fvd(standin, scripted, make_clip, tmp_path, capsys,
                                                               one_thread):
    from magvit2 import VideoTokenizer, preset_config
    from magvit2.pixels import from_uint8
    from scripts.convert import main as convert
    from scripts.evaluate import main as evaluate
    from trainers.data.video_io import read_clip

    out = tmp_path / "i3d.safetensors"
    assert convert(["i3d", str(scripted), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "features verified" in printed
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["source_sha256"] == hashlib.sha256(scripted.read_bytes()).hexdigest()
    assert meta["features"] == "logits" and meta["verified"].startswith("16x224x224")
    assert convert(["i3d", str(scripted), str(out)]) == 2  # never over an existing file
    assert "--overwrite" in capsys.readouterr().err

    torch.manual_seed(0)
    VideoTokenizer(preset_config("tiny")).save_pretrained(tmp_path / "tok", training={"num_frames": 17,
                                                                                         "frame_stride": 1, "step": 1})
    make_clip("data/a.mp4", num_frames=17, size=(40, 48), photo="astronaut")
    make_clip("data/b.mp4", num_frames=17, size=(40, 48), photo="coffee")
    report_file = tmp_path / "e.json"
    assert evaluate(["--tokenizer", str(tmp_path / "tok"), "--data", str(tmp_path / "data"), "--out",
                     str(report_file), "--i3d-weights", str(out), "--fvd-frames", "16"]) == 0
    report = json.loads(report_file.read_text())
    proto = report["protocol"]["fvd"]
    assert proto["features"] == "logits" and proto["feature_dim"] == 400 and proto["clip_frames"] == 16
    assert proto["converted_from"]["source_sha256"] == meta["source_sha256"]

    # the same clips and reconstructions through the TorchScript model, as StyleGAN-V's FVD code calls it
    tok = VideoTokenizer.from_pretrained(tmp_path / "tok").eval()
    feats = {"real": [], "fake": []}
    with torch.no_grad():
        for name in ("a.mp4", "b.mp4"):
            video = from_uint8(read_clip(tmp_path / "data" / name, (16, 16), num_frames=17))[None]
            recon = tok.reconstruct(video).recon.float().clamp(-1, 1)
            for kind, clip in (("real", video), ("fake", recon)):
                x255 = ((clip[:, :, :16] + 1) * 127.5).contiguous()  # [0, 255] floats, 16 frames of 16x16
                feats[kind].append(standin(x255, rescale=True, resize=True, return_features=True))
    expected = frechet_distance(torch.cat(feats["real"]), torch.cat(feats["fake"]))
    print(f"rFVD with the converted weights {report['rfvd']:.6g}, with the TorchScript stand-in {expected:.6g}")
    assert expected > 0 and report["rfvd"] == pytest.approx(expected, rel=1e-3)


def test_structure_mapping_checks_every_tensor(standin):
    ours = InceptionI3d()
    state = map_state(dict(standin.state_dict()), ours)
    assert set(state) == set(ours.state_dict())
    assert torch.equal(state["Mixed_4c.b1b.conv3d.weight"], standin.mixed_4c.branch_1[1].conv3d.weight)
    assert torch.equal(state["Mixed_5c.b3b.bn.running_var"], standin.mixed_5c.branch_3[1].batch3d.running_var)
    assert torch.equal(state["logits.conv3d.bias"], standin.conv3d_0c_1x1.conv3d.bias)

    no_scale = map_state(dict(random_standin(seed=1, bn_affine=False).state_dict()), ours)  # TF's BN has no gamma
    assert torch.equal(no_scale["Conv3d_1a_7x7.bn.weight"], torch.ones(64))
    assert torch.equal(no_scale["Conv3d_1a_7x7.bn.bias"], torch.zeros(64))

    swapped = dict(standin.state_dict())  # two Mixed blocks registered in the other order: shapes disagree
    keys = list(swapped)
    b3 = [k for k in keys if k.startswith("mixed_3b.")]
    c3 = [k for k in keys if k.startswith("mixed_3c.")]
    start = keys.index(b3[0])
    reordered = keys[:start] + c3 + b3 + keys[start + len(b3) + len(c3):]
    with pytest.raises(ValueError, match=r"has shape .* where Inception-I3D.s Mixed_3b"):
        map_state({k: swapped[k] for k in reordered}, ours)
    with pytest.raises(ValueError, match="expected an Inception-I3D with 58 convolutions; this module has 1"):
        map_state(dict(torch.nn.Conv3d(3, 4, 1).state_dict()), ours)


def test_scripted_batch_norm_epsilon_is_checked(scripted):
    module = torch.jit.load(str(scripted))
    _check_eps(module)  # 1e-3, as TF

    class Other(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(3, 4, 1)
            self.bn = torch.nn.BatchNorm3d(4)  # eps 1e-5

        def forward(self, x):
            return self.bn(self.conv(x))

    with pytest.raises(ValueError, match="eps=1e-05"):
        _check_eps(torch.jit.script(Other()))


def test_command_line(tmp_path, capsys):
    from scripts.convert import main

    with pytest.raises(SystemExit):
        main(["i3d", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "runs the code inside it" in text and "sha256" in text
    assert main(["i3d", str(tmp_path / "absent.pt"), str(tmp_path / "o.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "x.pt").write_bytes(b"not a zip")
    assert main(["i3d", str(tmp_path / "x.pt"), str(tmp_path / "o.pt")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err
    assert main(["i3d", str(tmp_path / "x.pt"), str(tmp_path / "o.safetensors")]) == 2
    assert "not a loadable TorchScript archive" in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()
