"""magvit2-evaluate: the fixed protocol (sorted videos, first clip, center crop, training clip length by default),
PSNR/SSIM/usage that agree with magvit2.metrics, skipped short videos, and the command's output and errors."""

from __future__ import annotations

import json

import pytest
import torch

from magvit2 import VideoTokenizer, preset_config
from magvit2.metrics import psnr
from magvit2.pixels import from_uint8
from trainers.data.video_io import read_clip


@pytest.fixture
def setup(make_clip, tmp_path):
    torch.manual_seed(0)
    tok = VideoTokenizer(preset_config("tiny"))
    tok.save_pretrained(tmp_path / "tok", training={"num_frames": 5, "frame_stride": 1, "step": 1})
    make_clip("data/b/two.mp4", num_frames=9, size=(40, 48), photo="coffee")
    make_clip("data/a/one.mp4", num_frames=7, size=(40, 48), photo="astronaut")
    make_clip("data/short.mp4", num_frames=3, size=(40, 48))
    make_clip("data/image.png", size=(40, 48))
    return tok, tmp_path


def test_protocol_and_numbers(setup):
    from trainers.commands.evaluate import evaluate_folder

    tok, tmp = setup
    report = evaluate_folder(tmp / "tok", tmp / "data", out=tmp / "eval.json", device="cpu")
    assert report["protocol"]["num_frames"] == 5 and report["protocol"]["frame_stride"] == 1  # from training
    assert [c["file"] for c in report["per_clip"]] == ["a/one.mp4", "b/two.mp4"]  # sorted; image left out
    assert report["skipped"] == {"too_short": 1, "unreadable": 0} and report["fvd"] is None
    video = from_uint8(read_clip(tmp / "data/a/one.mp4", (16, 16), num_frames=5))[None]
    expected = float(psnr(tok.eval()(video).clamp(-1, 1), video))
    assert report["per_clip"][0]["psnr_db"] == pytest.approx(expected, abs=1e-4)
    assert 0 < report["codebook_usage"] <= 1 and report["perplexity"] >= 1
    assert json.loads((tmp / "eval.json").read_text())["psnr_db"] == pytest.approx(report["psnr_db"])
    again = evaluate_folder(tmp / "tok", tmp / "data", device="cpu")
    assert again["psnr_db"] == report["psnr_db"]  # deterministic
    longer = evaluate_folder(tmp / "tok", tmp / "data", num_frames=9, max_clips=1, device="cpu")
    assert longer["clips"] == 1 and longer["per_clip"][0]["file"] == "b/two.mp4"


def test_command(setup, capsys):
    from scripts.evaluate import main

    _, tmp = setup
    assert main(["--tokenizer", str(tmp / "tok"), "--data", str(tmp / "data"), "--out", str(tmp / "e.json")]) == 0
    assert "2 clips of 5 frames" in capsys.readouterr().out
    assert main(["--tokenizer", str(tmp / "tok"), "--data", str(tmp / "data"), "--out", str(tmp / "e.json")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["--tokenizer", str(tmp / "tok"), "--data", str(tmp / "data"), "--num-frames", "4"]) == 2
    assert "1 + 2k" in capsys.readouterr().err
    assert main(["--tokenizer", str(tmp / "tok"), "--data", str(tmp / "data"), "--num-frames", "33"]) == 2
    assert "no clip of 33 frames" in capsys.readouterr().err
