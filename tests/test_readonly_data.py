"""A dataset on a read-only file system (a real tmpfs remounted `ro`; root ignores permission bits, so chmod would
test nothing): training, tokenizing, packing and evaluating all work, the index is kept in the per-user cache keyed
by the folder's path (one log line says where), an index the folder already holds is used as is, and two processes
find the same index (rank 0 builds it, rank 1 reads it)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest

from tests.fs_mounts import remount_readonly, tmpfs
from tests.helpers.commands import run_or_dump
from trainers.data import index as idx

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


@pytest.fixture
def readonly_data(tmp_path, make_clip):
    """4 good captioned clips on a tmpfs remounted read-only; the index cache in tmp_path/cache."""
    with tmpfs(tmp_path / "ro") as root:
        for photo in PHOTOS:
            make_clip(f"ro/{photo}.mp4", num_frames=9, size=(20, 24), photo=photo)
            (root / f"{photo}.txt").write_text(f"a {photo}")
        yield root
    # unmounted: nothing of it remains


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MAGVIT2_INDEX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_commands_work_on_a_read_only_dataset(readonly_data, cache, tmp_path, caplog, one_thread):
    from scripts import evaluate, pack, tokenize_videos, train_tokenizer

    remount_readonly(readonly_data)
    caplog.set_level(logging.WARNING, logger="trainers.data.index")
    run = tmp_path / "run"
    assert train_tokenizer.main(["--data", str(readonly_data), "--out", str(run), "--preset", "tiny",
                                 "--max-steps", "2", "--batch-size", "2", "--num-workers", "0",
                                 "--num-frames", "5"]) == 0
    assert (run / "tokenizer" / "model.safetensors").is_file()
    cached = idx.cached_index_path(readonly_data)
    assert cached.parent.parent == cache and cached.is_file() and not (readonly_data / ".magvit2").exists()
    assert json.loads(cached.read_text())["root"] == str(readonly_data.resolve())
    where = [r.getMessage() for r in caplog.records if "not writable" in r.getMessage()]
    assert len(where) == 1 and str(cached) in where[0]  # one line, saying where (train and val splits share it)

    assert tokenize_videos.main(["--tokenizer", str(run), "--data", str(readonly_data), "--out",
                                 str(tmp_path / "codes"), "--num-frames", "5", "--batch-size", "2"]) == 0
    assert json.loads((tmp_path / "codes" / "index.json").read_text())["num_clips"] == 4
    assert pack.main([str(readonly_data), str(tmp_path / "packed"), "--workers", "1"]) == 0
    assert json.loads((tmp_path / "packed" / "shards.json").read_text())["shards"][0]["count"] == 4
    assert evaluate.main(["--tokenizer", str(run), "--data", str(readonly_data), "--num-frames", "5",
                          "--device", "cpu", "--out", str(tmp_path / "eval.json")]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["clips"] == 4
    assert sorted(p.name for p in readonly_data.iterdir()) == sorted(
        [f"{p}.mp4" for p in PHOTOS] + [f"{p}.txt" for p in PHOTOS])  # nothing was written there


def test_an_index_the_read_only_folder_already_holds_is_used_as_is(readonly_data, cache, monkeypatch):
    idx.load_index(readonly_data, workers=1)  # built while writable: inside the folder
    assert idx.default_index_path(readonly_data).is_file()
    remount_readonly(readonly_data)
    seen: list[str] = []
    real = idx.probe_entry
    monkeypatch.setattr(idx, "probe_entry", lambda r, rel: seen.append(rel) or real(r, rel))
    index = idx.load_index(readonly_data, workers=1)
    assert len(index.entries) == 4 and seen == [] and not cache.exists()  # read, not probed, nothing copied
    assert index.saved == idx.default_index_path(readonly_data.resolve())


def test_magvit2_index_writes_where_training_looks(readonly_data, cache, capsys, monkeypatch):
    from scripts.index import main as index_main

    remount_readonly(readonly_data)
    assert index_main([str(readonly_data), "--workers", "1"]) == 0
    assert str(idx.cached_index_path(readonly_data)) in capsys.readouterr().out
    seen: list[str] = []
    real = idx.probe_entry
    monkeypatch.setattr(idx, "probe_entry", lambda r, rel: seen.append(rel) or real(r, rel))
    assert len(idx.load_index(readonly_data, workers=1).entries) == 4 and seen == []


WORKER = """
import json, os, sys
import torch.distributed as dist
from trainers.data import index as idx
dist.init_process_group("gloo")
seen = []
real = idx.probe_entry
idx.probe_entry = lambda r, rel: seen.append(rel) or real(r, rel)
index = idx.load_index(sys.argv[1], workers=1)
with open(os.path.join(sys.argv[2], f"rank{dist.get_rank()}.json"), "w") as f:
    json.dump({"world": dist.get_world_size(), "probed": len(seen), "files": len(index.entries),
               "saved": str(index.saved)}, f)
dist.destroy_process_group()
"""


@pytest.mark.timeout(120)
def test_two_processes_find_the_same_cached_index(readonly_data, cache, tmp_path):
    remount_readonly(readonly_data)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = run_or_dump([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                       str(script), str(readonly_data), str(tmp_path)], env=env, timeout=110)
    assert out.returncode == 0, out.stderr[-2000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in reports] == [2, 2]
    assert reports[0]["probed"] == 4 and reports[1]["probed"] == 0 and reports[1]["files"] == 4
    assert reports[0]["saved"] == str(idx.cached_index_path(readonly_data))
    assert out.stderr.count("is not writable") == 1  # rank 0's one line
