"""The dataset index: built once, reused (no second probe), stale rows re-probed, new/removed files noticed,
foreign and corrupt indexes refused with what to run, resumable builds, the command, and rank 0 building for all."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from scripts.index import main as index_main
from tests.helpers.commands import run_or_dump
from trainers.data import index as idx
from trainers.data.folders import VideoFolderDataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def root(tmp_path, make_clip):
    for name, n in (("a.mp4", 9), ("sub/b.mp4", 9), ("sub/c.gif", 6), ("img/d.png", 1), ("short.mp4", 3)):
        make_clip(f"data/{name}", num_frames=n, size=(24, 32))
    (tmp_path / "data" / "bad.mp4").write_bytes(b"not a video at all")
    (tmp_path / "data" / "a.txt").write_text("an astronaut")
    return tmp_path / "data"


@pytest.fixture
def probes(monkeypatch):
    """Count the files probed (threads share the module, so this sees the dataset's probes)."""
    seen: list[str] = []
    real = idx.probe_entry

    def counting(root, rel):
        seen.append(rel)
        return real(root, rel)

    monkeypatch.setattr(idx, "probe_entry", counting)
    return seen


def _ds(root, **kw):
    return VideoFolderDataset(root, num_frames=5, image_size=16, max_bad_fraction=0.5, **kw)


def _touch_later(path: Path, data: bytes | None = None) -> None:
    if data is not None:
        path.write_bytes(data)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a clearly different mtime, whatever the clock


def test_first_construction_builds_the_index_and_the_second_probes_nothing(root, probes):
    first = _ds(root)
    assert sorted(probes) == sorted(["a.mp4", "sub/b.mp4", "sub/c.gif", "img/d.png", "short.mp4", "bad.mp4"])
    path = root / ".magvit2" / "index.json"
    data = json.loads(path.read_text())
    assert data["root"] == str(root.resolve()) and data["complete"] and data["fields"][0] == "path"
    rows = {r[0]: dict(zip(data["fields"], r)) for r in data["entries"]}
    assert rows["a.mp4"]["frames"] == 9 and rows["a.mp4"]["caption"] == "an astronaut" and rows["a.mp4"]["error"] == ""
    assert rows["bad.mp4"]["error"] and rows["short.mp4"]["frames"] == 3  # too short is the dataset's judgement
    probes.clear()
    second = _ds(root)
    assert probes == []  # reused: no file opened again
    assert second.paths == first.paths and second.captions == first.captions and second.infos == first.infos
    assert dict(second.stats.skipped).keys() == {"bad.mp4", "short.mp4"}
    assert "too short: 3 frames, need 5" in dict(second.stats.skipped)["short.mp4"]


def test_changed_file_is_probed_again_not_trusted(root, probes, pan):
    _ds(root)
    probes.clear()
    from trainers.data.video_io import write_video
    write_video(root / "short.mp4", pan(11, (24, 32)), lossless=True)  # now long enough
    _touch_later(root / "short.mp4")
    ds = _ds(root)
    assert probes == ["short.mp4"]
    assert "short.mp4" in ds.paths and ds.infos[ds.paths.index("short.mp4")].num_frames == 11
    probes.clear()
    _ds(root)
    assert probes == []  # the refreshed index was written back


def test_added_and_removed_files_are_noticed_and_only_new_ones_probed(root, probes, make_clip):
    _ds(root)
    probes.clear()
    make_clip("data/sub/new.mp4", num_frames=9, size=(24, 32))
    (root / "a.mp4").unlink()
    (root / "a.txt").unlink()
    for d in (root, root / "sub"):
        _touch_later(d)
    ds = _ds(root)
    assert probes == ["sub/new.mp4"]
    assert "sub/new.mp4" in ds.paths and "a.mp4" not in ds.paths


def test_metadata_change_rereads_captions_without_probing(root, probes):
    _ds(root)
    probes.clear()
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "sub/b.mp4", "text": "a new caption"}) + "\n")
    ds = _ds(root)
    assert probes == []  # the root's mtime changed: rescan, but every file is still fresh
    assert dict(zip(ds.paths, ds.captions))["sub/b.mp4"] == "a new caption"


def test_index_of_another_folder_is_refused(root, tmp_path):
    _ds(root)
    other = tmp_path / "copy"
    shutil.copytree(root, other)  # copies .magvit2/index.json, which names the original folder
    with pytest.raises(ValueError, match=r"built for the folder .*data'.*magvit2-index .*copy --rebuild"):
        _ds(other)
    assert index_main([str(other), "--rebuild", "--workers", "1"]) == 0
    assert _ds(other).paths == _ds(root).paths


@pytest.mark.parametrize("text", ["{not json", '{"format": "something-else"}', "[1, 2]", None])
def test_corrupt_index_names_the_file_and_what_to_run(root, text):
    _ds(root)
    path = root / ".magvit2" / "index.json"
    if text is None:  # a row of the wrong shape
        data = json.loads(path.read_text())
        data["entries"][0] = ["a.mp4", "big", 0]
        text = json.dumps(data)
    path.write_text(text)
    with pytest.raises(ValueError, match=r"index\.json is corrupt .*magvit2-index"):
        _ds(root)


def test_interrupted_build_resumes_without_probing_finished_files(root, monkeypatch):
    seen: list[str] = []
    real = idx.probe_entry

    def dies_after_three(r, rel):
        if len(seen) == 3:
            raise KeyboardInterrupt
        seen.append(rel)
        return real(r, rel)

    monkeypatch.setattr(idx, "probe_entry", dies_after_three)
    path = idx.default_index_path(root)
    monkeypatch.setattr(idx, "_probe_all", _blockwise(idx._probe_all))
    with pytest.raises(KeyboardInterrupt):
        idx.build_index(root, path, workers=1, processes=False, checkpoint_seconds=0)
    partial = idx.read_index(path, root)
    assert not partial.complete and len(partial.entries) == 3
    seen.clear()
    monkeypatch.setattr(idx, "probe_entry", lambda r, rel: seen.append(rel) or real(r, rel))
    done = idx.build_index(root, path, workers=1, processes=False, checkpoint_seconds=0)
    assert len(seen) == 3 and not set(seen) & {e.path for e in partial.entries}
    clean = idx.build_index(root, None, workers=1, processes=False, previous=None)
    assert done.entries == clean.entries and idx.read_index(path, root).complete


def _blockwise(probe_all):
    """Probe one file per block, so a checkpoint is written after each file."""
    def run(root, rels, workers, processes, on_block):
        out = []
        for rel in rels:
            out += probe_all(root, [rel], workers, processes, lambda _: None)
            on_block(out)
        return out
    return run


def test_command_builds_in_parallel_and_reuses(root, capsys):
    assert index_main([str(root), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "indexed 6 files" in out and "6 probed now" in out and "unusable: bad.mp4" in out
    assert index_main([str(root), "--workers", "2"]) == 0
    assert "0 probed now, 6 unchanged" in capsys.readouterr().out
    assert index_main([str(root / "nope")]) == 2


WORKER = """
import json, os, sys
import torch.distributed as dist
from trainers.data import index as idx
dist.init_process_group("gloo")
seen = []
real = idx.probe_entry
idx.probe_entry = lambda r, rel: seen.append(rel) or real(r, rel)
index = idx.load_index(sys.argv[1], workers=1)
with open(os.path.join(sys.argv[2], f"rank{dist.get_rank()}.json"), "w") as f:  # stdout lines can interleave
    json.dump({"rank": dist.get_rank(), "world": dist.get_world_size(), "probed": len(seen),
               "files": len(index.entries)}, f)
dist.destroy_process_group()
"""


@pytest.mark.timeout(120)
def test_under_two_ranks_rank0_builds_and_rank1_reads(root, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = run_or_dump([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                       str(script), str(root), str(tmp_path)], env=env, timeout=110)
    assert out.returncode == 0, out.stderr[-2000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in reports] == [2, 2]
    assert reports[0]["probed"] == 6 and reports[1]["probed"] == 0 and reports[1]["files"] == 6


def test_rebuild_replaces_a_corrupt_index(root, capsys):
    _ds(root)
    (root / ".magvit2" / "index.json").write_text("{not json")
    assert index_main([str(root), "--workers", "1"]) == 2
    assert "--rebuild" in capsys.readouterr().err
    assert index_main([str(root), "--rebuild", "--workers", "1"]) == 0
    assert len(_ds(root)) == 4
