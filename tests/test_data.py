"""Folder dataset, captions, bad-file skipping (R4), clear errors (R9), determinism and sampler resume."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch.utils.data import DataLoader

from trainers.data.batches import ResumableBatchSampler, build_dataloader
from trainers.data.folders import (
    DataQualityError,
    MultiFolderDataset,
    VideoFolderDataset,
    scan_media_files,
    split_files,
)
from trainers.data.samples import FailedSample, SampleKey, collate


@pytest.fixture
def media_root(tmp_path, make_clip):
    """4 videos (mp4, mkv, 2 GIFs, one in a subfolder) and 2 images (one with an upper-case extension)."""
    make_clip("a.mp4", 9, (40, 56), "astronaut")
    make_clip("b.mkv", 12, (48, 48), "chelsea")
    make_clip("sub/c.gif", 9, (36, 44), "coffee")
    make_clip("sub/d.GIF", 10, (40, 40), "rocket")
    make_clip("img/e.png", 1, (30, 50), "astronaut")
    make_clip("img/f.JPG", 1, (50, 30), "chelsea")
    (tmp_path / ".hidden").mkdir()
    make_clip(".hidden/g.mp4", 9)  # hidden: ignored
    (tmp_path / "notes.txt").write_text("not media")
    return tmp_path


def test_scan_is_recursive_case_insensitive_and_skips_hidden(media_root):
    assert scan_media_files(media_root) == ["a.mp4", "b.mkv", "img/e.png", "img/f.JPG", "sub/c.gif", "sub/d.GIF"]
    assert "img/e.png" not in scan_media_files(media_root, include_images=False)


def test_items_have_the_documented_shapes_and_ranges(media_root):
    ds = VideoFolderDataset(media_root, num_frames=5, image_size=(32, 24), seed=0, hflip=True)
    assert len(ds) == 6 and ds.stats.num_videos == 4 and ds.stats.num_images == 2 and ds.stats.num_skipped == 0
    assert ds.kinds == ["video", "video", "image", "image", "video", "video"]
    for i in range(len(ds)):
        item = ds[SampleKey(0, i)]
        t = 1 if ds.kinds[i] == "image" else 5
        assert item["video"].shape == (3, t, 32, 24) and item["video"].dtype == torch.float32
        assert item["video"].min() >= -1 and item["video"].max() <= 1
        assert item["path"] == ds.paths[i] and item["index"] == i and item["caption"] == ""


def test_items_are_a_function_of_seed_epoch_index(media_root):
    ds = VideoFolderDataset(media_root, num_frames=3, image_size=24, seed=5, hflip=True)
    again = VideoFolderDataset(media_root, num_frames=3, image_size=24, seed=5, hflip=True)
    assert torch.equal(ds[(2, 0)]["video"], again[(2, 0)]["video"])
    assert torch.equal(ds[(2, 1)]["video"], ds[(2, 1)]["video"])
    clips = {tuple(ds[(e, 1)]["video"].flatten()[:64].tolist()) for e in range(6)}
    assert len(clips) > 1  # the crop/start/flip changes with the epoch
    ds.set_epoch(2)
    assert torch.equal(ds[0]["video"], ds[(2, 0)]["video"])
    val = VideoFolderDataset(media_root, num_frames=3, image_size=24, seed=5, random_crop=False)
    assert len({tuple(val[(e, 1)]["video"].flatten().tolist()) for e in range(3)}) == 1  # center crop, frame 0


def test_captions_from_sidecars_and_metadata_jsonl(media_root):
    (media_root / "a.txt").write_text("  an astronaut pans right \n")
    (media_root / "sub" / "c.txt").write_text("sidecar loses")
    lines = [{"file_name": "sub/c.gif", "text": "coffee from metadata"}, {"file_name": "b.mkv", "text": "a cat"}]
    (media_root / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    ds = VideoFolderDataset(media_root, num_frames=1, image_size=16)
    caption = dict(zip(ds.paths, ds.captions))
    assert caption["a.mp4"] == "an astronaut pans right"
    assert caption["sub/c.gif"] == "coffee from metadata"  # metadata.jsonl wins
    assert caption["b.mkv"] == "a cat" and caption["sub/d.GIF"] == ""
    with pytest.raises(ValueError, match=r"3 of 6 files have no caption.*img/e.png"):
        VideoFolderDataset(media_root, num_frames=1, image_size=16, captions=True)
    (media_root / "metadata.jsonl").write_text('{"file_name": "a.mp4"\n')
    with pytest.raises(ValueError, match=r"metadata.jsonl:1"):
        VideoFolderDataset(media_root, num_frames=1, image_size=16)


@pytest.fixture
def bad_root(tmp_path, make_clip, skimage_gif):
    for i, photo in enumerate(["astronaut", "chelsea", "coffee", "rocket"]):
        make_clip(f"ok{i}.gif", 6, (24, 24), photo)
    (tmp_path / "empty.mp4").touch()
    (tmp_path / "text.gif").write_text("definitely not a gif\n" * 5)
    (tmp_path / "truncated.gif").write_bytes(skimage_gif.read_bytes()[:40])
    make_clip("short.mp4", 3, (24, 24))
    return tmp_path


BAD = {"empty.mp4", "text.gif", "truncated.gif", "short.mp4"}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_bad_files_are_skipped_counted_and_warned_once(bad_root, caplog, num_workers):
    with caplog.at_level(logging.WARNING, logger="trainers.data"):
        ds = VideoFolderDataset(bad_root, num_frames=5, image_size=16, max_bad_fraction=0.5)
    assert len(ds) == 4 and ds.stats.num_files == 8 and ds.stats.num_skipped == 4
    assert {p for p, _ in ds.stats.skipped} == BAD
    assert "too short: 3 frames, need 5" in dict(ds.stats.skipped)["short.mp4"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 4 and all(sum(name in m for m in warned) == 1 for name in BAD)
    loader = build_dataloader(ds, batch_size=2, seed=0, num_workers=num_workers)
    seen = [p for batch in loader for p in batch["path"]]
    assert sorted(seen) == [f"ok{i}.gif" for i in range(4)]


def test_too_many_bad_files_raise_data_quality_error(bad_root):
    with pytest.raises(DataQualityError, match=r"4 of 8 files.*max_bad_fraction=0.1.*empty.mp4"):
        VideoFolderDataset(bad_root, num_frames=5, image_size=16, max_bad_fraction=0.1)


def test_file_broken_after_construction_is_dropped_by_collate(media_root, caplog):
    # load-time failures count towards max_bad_fraction (1 of 4 files here), so allow them
    ds = VideoFolderDataset(media_root, num_frames=3, image_size=16, include_images=False, max_bad_fraction=0.5)
    broken = ds.paths.index("a.mp4")
    (media_root / "a.mp4").write_bytes(b"")
    failed = ds[(0, broken, 7)]
    assert isinstance(failed, FailedSample) and failed.path == "a.mp4" and failed.batch_index == 7
    batch = collate([ds[(0, i, 7)] for i in range(len(ds))])
    assert batch["video"].shape == (3, 3, 3, 16, 16) and batch["num_skipped"] == 1 and "a.mp4" not in batch["path"]
    assert batch["epoch"] == 0 and batch["batch_index"] == 7 and batch["skipped"][0][0] == "a.mp4"
    with caplog.at_level(logging.WARNING, logger="trainers.data"):
        ds.record_skipped(batch)
        ds.record_skipped(batch)
    assert ds.stats.num_runtime_failures == 2 and len(caplog.records) == 1
    assert collate([failed])["video"] is None


def test_clear_errors_for_missing_file_empty_and_small(tmp_path, make_clip):
    with pytest.raises(FileNotFoundError, match="nope"):
        VideoFolderDataset(tmp_path / "nope", num_frames=1, image_size=16)
    (tmp_path / "file.mp4").touch()
    with pytest.raises(NotADirectoryError, match=r"file\.mp4"):
        VideoFolderDataset(tmp_path / "file.mp4", num_frames=1, image_size=16)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no media")
    with pytest.raises(ValueError, match=r"no video/image files under .*empty \(searched recursively for .mp4"):
        VideoFolderDataset(tmp_path / "empty", num_frames=1, image_size=16)
    with pytest.raises(ValueError, match="num_frames"):
        VideoFolderDataset(tmp_path / "empty", num_frames=0, image_size=16)
    make_clip("small/a.gif", 3, (16, 16))
    make_clip("small/b.gif", 3, (16, 16))
    ds = VideoFolderDataset(tmp_path / "small", num_frames=3, image_size=16)
    with pytest.raises(ValueError, match=r"2 usable samples .*batch_size=4"):
        build_dataloader(ds, batch_size=4, seed=0)


def test_split_is_deterministic_disjoint_and_held_out(media_root):
    files = scan_media_files(media_root)
    train, val = split_files(files, 0.34, seed=3)
    assert (train, val) == split_files(list(reversed(files)), 0.34, seed=3)
    assert len(val) == 2 and sorted(train + val) == files
    ds_train = VideoFolderDataset(media_root, 1, 16, split="train", val_fraction=0.34, seed=3)
    ds_val = VideoFolderDataset(media_root, 1, 16, split="val", val_fraction=0.34, seed=3, hflip=True)
    assert ds_val.paths == val and ds_train.paths == train and not ds_val.random_crop and not ds_val.hflip
    explicit = VideoFolderDataset(media_root, 1, 16, split="val", val_files=["a.mp4"])
    assert explicit.paths == ["a.mp4"]
    with pytest.raises(ValueError, match="needs val_fraction"):
        VideoFolderDataset(media_root, 1, 16, split="val")


def _flat(batches):
    return [[tuple(k) for k in b] for b in batches]


def test_sampler_batches_are_homogeneous_and_cover_each_kind_once():
    kinds = ["video"] * 7 + ["image"] * 5
    sampler = ResumableBatchSampler(kinds, batch_size=2, seed=1)
    assert len(sampler) == 3 + 2
    batches = list(sampler)
    assert all(len({kinds[k.index] for k in b}) == 1 and len(b) == 2 for b in batches)
    indices = [k.index for b in batches for k in b]
    assert len(indices) == len(set(indices)) == 10
    assert sampler.state_dict() == {"epoch": 1, "batch_index": 0}
    assert _flat(list(sampler)) != _flat(batches)  # epoch 1 is a different order


@pytest.mark.parametrize("consumed", [0, 3, 5, 7, 12])
def test_sampler_resume_matches_the_uninterrupted_order(consumed):
    kinds = ["video"] * 7 + ["image"] * 5

    def run(sampler, num_batches):
        out = []
        while len(out) < num_batches:
            for batch in sampler:
                out.append(batch)
                if len(out) == num_batches:
                    break
        return out

    full = run(ResumableBatchSampler(kinds, 2, seed=9), 15)
    first = ResumableBatchSampler(kinds, 2, seed=9)
    head = run(first, consumed) if consumed else []
    state = json.loads(json.dumps(first.state_dict()))  # plain ints survive JSON
    resumed = ResumableBatchSampler(kinds, 2, seed=9)
    resumed.load_state_dict(state)
    assert _flat(head + run(resumed, 15 - consumed)) == _flat(full)


def test_sampler_batches_are_global_and_homogeneous_whatever_the_process_count():
    kinds = ["video"] * 11 + ["image"] * 6
    sampler = ResumableBatchSampler(kinds, 4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2 + 1  # 11 videos -> 2 full batches of 4, 6 images -> 1
    assert all(len({kinds[k.index] for k in b}) == 1 for b in batches)  # a split batch gives every process one kind
    flat = [k.index for b in batches for k in b]
    assert len(flat) == len(set(flat)) == 12


def test_dataloader_with_workers_matches_single_process(media_root):
    ds = VideoFolderDataset(media_root, num_frames=3, image_size=16, seed=1, hflip=True)
    results = []
    for workers in (0, 2):
        loader = build_dataloader(ds, batch_size=2, seed=4, num_workers=workers)
        assert isinstance(loader, DataLoader)
        results.append([(b["path"], b["video"], b["epoch"], b["batch_index"]) for b in loader])
    assert len(results[0]) == 3
    for (p0, v0, e0, i0), (p1, v1, e1, i1) in zip(*results):
        assert p0 == p1 and torch.equal(v0, v1) and (e0, i0) == (e1, i1)
    assert [r[3] for r in results[0]] == [0, 1, 2]


def test_multi_folder_dataset_concatenates_and_keeps_paths(tmp_path, make_clip):
    make_clip("one/a.mp4", 9, (32, 32), "astronaut")
    make_clip("one/b.mp4", 9, (32, 32), "coffee")
    make_clip("two/c.gif", 9, (32, 32), "chelsea")
    one = VideoFolderDataset(tmp_path / "one", num_frames=5, image_size=16)
    two = VideoFolderDataset(tmp_path / "two", num_frames=5, image_size=16)
    both = MultiFolderDataset([one, two])
    assert len(both) == 3 and both.kinds == ["video"] * 3
    assert both.paths == ["0:a.mp4", "0:b.mp4", "1:c.gif"]
    item = both[SampleKey(0, 2, 0)]
    assert item["path"] == "1:c.gif" and item["index"] == 2
    assert torch.equal(item["video"], two[SampleKey(0, 0, 0)]["video"])
    assert both.stats.num_files == 3
    loader = build_dataloader(both, batch_size=3, seed=0)
    assert next(iter(loader))["video"].shape == (3, 3, 5, 16, 16)


def test_resume_with_workers_matches_the_uninterrupted_single_process_order(media_root):
    ds = VideoFolderDataset(media_root, num_frames=3, image_size=16, seed=1, hflip=True)
    whole = [(b["path"], b["video"]) for b in build_dataloader(ds, batch_size=2, seed=4, num_workers=0)]
    loader = build_dataloader(ds, batch_size=2, seed=4, num_workers=2)
    assert loader.persistent_workers and loader.prefetch_factor == 2
    loader.batch_sampler.set_position(0, 1)  # resume after the first batch
    tail = [(b["path"], b["video"]) for b in loader]
    assert len(tail) == len(whole) - 1
    assert all(p0 == p1 and torch.equal(v0, v1) for (p0, v0), (p1, v1) in zip(whole[1:], tail))
