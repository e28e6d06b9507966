"""magvit2-tokenize and magvit2-reconstruct end to end on real clips, and their error handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from magvit2 import VideoTokenizer, preset_config
from magvit2.metrics import psnr
from magvit2.pixels import from_uint8
from trainers.data.codes import CodeShardDataset
from trainers.data.video_io import read_clip, read_video

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tokenizer_dir(tmp_path):
    torch.manual_seed(0)
    return VideoTokenizer(preset_config("tiny")).eval().save_pretrained(tmp_path / "tok")


@pytest.fixture
def captioned(tmp_path, make_clip):
    names = {"astronaut": "a person in a space suit", "coffee": "a cup of coffee", "chelsea": "a cat"}
    for photo in names:
        make_clip(f"clips/{photo}.mp4", num_frames=9, size=(24, 32), photo=photo)
    make_clip("clips/short.mp4", num_frames=3, size=(24, 32))  # too short for 5 frames: skipped, counted
    lines = [json.dumps({"file_name": f"{p}.mp4", "text": t}) for p, t in names.items()]
    (tmp_path / "clips" / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "clips", names


def test_tokenize_writes_shards_equal_to_the_tokenizers_codes(tokenizer_dir, captioned, tmp_path):
    from scripts.tokenize_videos import main

    data, captions = captioned
    assert main(["--tokenizer", str(tokenizer_dir), "--data", str(data), "--out", str(tmp_path / "codes"),
                 "--num-frames", "5", "--shard-size", "2", "--max-bad-fraction", "0.5"]) == 0
    ds = CodeShardDataset(tmp_path / "codes")
    assert len(ds) == 3 and len(ds.index["shards"]) == 2 and ds.latent_shape == (3, 8, 8)
    assert ds.index["skipped"][0][0] == "short.mp4"
    tok = VideoTokenizer.from_pretrained(tokenizer_dir)
    for i, record in enumerate(ds.records):
        video = from_uint8(read_clip(data / record["path"], (16, 16), num_frames=5))[None]
        assert torch.equal(ds[i]["codes"], tok.tokenize(video)[0])
        assert record["caption"] == captions[Path(record["path"]).stem]


def test_reconstruct_writes_videos_and_metrics(tokenizer_dir, captioned, tmp_path):
    from scripts.reconstruct import main

    data, _ = captioned
    out = tmp_path / "recon"
    assert main(["--tokenizer", str(tokenizer_dir), str(data / "coffee.mp4"), str(data / "chelsea.mp4"),
                 "--out-dir", str(out), "--lossless", "--num-frames", "9"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [c["frames"] for c in metrics["clips"]] == [9, 9]
    assert metrics["mean_psnr_db"] == pytest.approx(sum(c["psnr_db"] for c in metrics["clips"]) / 2)
    frames = read_video(out / "coffee.mp4")
    assert frames.shape == (9, 16, 16, 3)
    tok = VideoTokenizer.from_pretrained(tokenizer_dir).eval()
    video = from_uint8(read_clip(data / "coffee.mp4", (16, 16), num_frames=9))[None]
    written = from_uint8(frames)[None]  # lossless H.264 (yuv444p): the reconstruction up to colour-space rounding
    assert float(psnr(written, tok(video).clamp(-1, 1))) > 40


@pytest.mark.parametrize("command, args, message", [
    ("scripts.tokenize_videos", ["--data", "{data}", "--out", "{tmp}/c", "--num-frames", "4"], "1 + 2k"),
    ("scripts.tokenize_videos", ["--data", "{tmp}/missing", "--out", "{tmp}/c"], "does not exist"),
    ("scripts.reconstruct", ["{tmp}/missing.mp4", "--out-dir", "{tmp}/r"], "input not found"),
    ("scripts.reconstruct", ["{data}/coffee.mp4", "--out-dir", "{tmp}/r", "--num-frames", "11"], "only 9 frames"),
])
def test_errors_exit_2_with_one_line(tokenizer_dir, captioned, tmp_path, command, args, message):
    data, _ = captioned
    args = [a.format(data=data, tmp=tmp_path) for a in args]
    result = subprocess.run([sys.executable, "-m", command, "--tokenizer", str(tokenizer_dir), *args],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr, result.stderr
