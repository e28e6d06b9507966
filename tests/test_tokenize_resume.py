"""magvit2-tokenize resumes a killed run without redoing finished shards (same result as a clean run), refuses to
resume with other settings, and splits the shards over 2 processes under torchrun (rank 0 merges)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from magvit2 import VideoTokenizer, preset_config
from tests.helpers.commands import run_or_dump
from trainers.commands import tokenize_folder as tf
from trainers.data.codes import CodeShardDataset

REPO = Path(__file__).resolve().parents[1]
ARGS = dict(num_frames=5, epochs=2, shard_size=2, batch_size=1, seed=3, device="cpu", max_bad_fraction=0.5)


@pytest.fixture
def setup(tmp_path, make_clip):
    torch.manual_seed(0)
    tok = VideoTokenizer(preset_config("tiny")).eval().save_pretrained(tmp_path / "tok")
    for photo in ("astronaut", "coffee", "chelsea"):
        make_clip(f"clips/{photo}.mp4", num_frames=9, size=(24, 32), photo=photo)
    make_clip("clips/short.mp4", num_frames=3, size=(24, 32))
    (tmp_path / "clips" / "coffee.txt").write_text("a cup of coffee")
    return tok, tmp_path / "clips"


def _contents(folder: Path) -> dict:
    """Every shard's codes and records, and the index (without the world size)."""
    index = json.loads((folder / "index.json").read_text())
    out = {"index": {k: v for k, v in index.items() if k != "world_size"}}
    for shard in index["shards"]:
        out[shard["file"]] = load_file(str(folder / shard["file"]))["codes"].tolist()
        out[shard["file"] + ".jsonl"] = (folder / shard["file"]).with_suffix(".jsonl").read_text()
    return out


def test_killed_run_resumes_without_redoing_finished_shards(setup, tmp_path, monkeypatch):
    tok, clips = setup
    clean = tf.tokenize_folder(tok, clips, tmp_path / "clean", **ARGS)
    assert clean["num_clips"] == 6 and len(clean["shards"]) == 3 and clean["world_size"] == 1

    written: list[int] = []
    real = tf.write_shard

    def dies_on_the_second(out_dir, number, *a, **k):
        if len(written) == 1:
            raise KeyboardInterrupt  # killed while tokenizing shard 1
        written.append(number)
        return real(out_dir, number, *a, **k)

    monkeypatch.setattr(tf, "write_shard", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        tf.tokenize_folder(tok, clips, tmp_path / "resumed", **ARGS)
    assert written == [0] and not (tmp_path / "resumed" / "index.json").exists()

    monkeypatch.setattr(tf, "write_shard", lambda out_dir, number, *a, **k: written.append(number) or
                        real(out_dir, number, *a, **k))
    resumed = tf.tokenize_folder(tok, clips, tmp_path / "resumed", **ARGS)
    assert written == [0, 1, 2]  # shard 0 was not redone
    assert resumed == {**clean}  # same index
    assert _contents(tmp_path / "resumed") == _contents(tmp_path / "clean")
    ds = CodeShardDataset(tmp_path / "resumed")
    assert len(ds) == 6 and {r["clip"] for r in ds.records} == {0, 1}

    with pytest.raises(FileExistsError, match="already holds code shards"):
        tf.tokenize_folder(tok, clips, tmp_path / "resumed", **ARGS)


def test_resume_with_other_settings_is_refused(setup, tmp_path, monkeypatch):
    tok, clips = setup
    monkeypatch.setattr(tf, "write_shard", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        tf.tokenize_folder(tok, clips, tmp_path / "codes", **ARGS)
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"unfinished magvit2-tokenize with other settings \(seed differ"):
        tf.tokenize_folder(tok, clips, tmp_path / "codes", **{**ARGS, "seed": 4})


@pytest.mark.timeout(240)
def test_two_processes_under_torchrun_write_the_same_shards(setup, tmp_path):
    tok, clips = setup
    tf.tokenize_folder(tok, clips, tmp_path / "one", **ARGS)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "scripts.tokenize_videos", "--tokenizer", str(tok), "--data", str(clips), "--out",
           str(tmp_path / "two"), "--num-frames", "5", "--epochs", "2", "--shard-size", "2", "--batch-size", "1",
           "--seed", "3", "--device", "cpu", "--max-bad-fraction", "0.5"]
    out = run_or_dump(cmd, env=env, timeout=230)
    assert out.returncode == 0, out.stderr[-3000:]
    index = json.loads((tmp_path / "two" / "index.json").read_text())
    assert index["world_size"] == 2
    assert _contents(tmp_path / "two") == _contents(tmp_path / "one")
