"""Tar shards (magvit2-pack) as a training input: round trip, same batches as folders, resume, workers, bad data."""

from __future__ import annotations

import json
import tarfile

import pytest
import torch

from scripts import pack as pack_cli
from tests.helpers.media import MEDIA_PHOTOS
from trainers.commands import pack as pack_module
from trainers.data.batches import ResumableBatchSampler, build_dataloader
from trainers.data.folders import VideoFolderDataset, folder_datasets
from trainers.data.samples import FailedSample, SampleKey, collate
from trainers.data.shards import ShardDataset, read_manifest
from trainers.data.video_io import read_image, read_video


def packed(media, out, **kwargs):
    return pack_module.pack_folder(media, out, **kwargs)


def test_pack_round_trip_accounts_for_every_clip_caption_and_skip(captioned_media, tmp_path, monkeypatch):
    real = pack_module.atomic_write_text
    seen = []

    def spy(path, text):  # shards.json comes last: every shard is complete when it is written
        seen.append(sorted(p.name for p in path.parent.iterdir() if p.suffix == ".tar"))
        return real(path, text)

    monkeypatch.setattr(pack_module, "atomic_write_text", spy)
    out = tmp_path / "shards"
    result = packed(captioned_media, out, shard_size=3, include_images=True)
    assert seen == [["shard-00000.tar", "shard-00001.tar", "shard-00002.tar", "shard-00003.tar"]]
    assert result["samples"] == 11 and [r[0] for r in result["skipped"]] == ["broken.mp4"]
    manifest = read_manifest(out)
    samples = [s for shard in manifest["shards"] for s in shard["samples"]]
    assert [s["path"] for s in samples] == sorted(s["path"] for s in samples)
    assert {s["path"] for s in samples} | {"broken.mp4"} == {p.relative_to(captioned_media).as_posix()
                                                           for p in captioned_media.rglob("*")
                                                           if p.suffix in (".mp4", ".png", ".jpg")}
    assert {s["path"]: s["caption"] for s in samples if s["caption"]} == {
        f"{'sub/' if i % 3 == 0 else ''}{p}.mp4": f"a {p}" for i, p in enumerate(MEDIA_PHOTOS)}
    for shard in manifest["shards"]:  # standard webdataset members; offsets point at the bytes
        with tarfile.open(out / shard["file"]) as tar:
            names = tar.getnames()
            for s in shard["samples"]:
                ext = s["path"].rsplit(".", 1)[1]
                assert names[names.index(f"{s['key']}.{ext}"):][:3] == [f"{s['key']}.{x}" for x in (ext, "txt", "json")]
                assert tar.extractfile(f"{s['key']}.txt").read().decode() == s["caption"]
                meta = json.loads(tar.extractfile(f"{s['key']}.json").read())
                assert meta == {k: s[k] for k in ("path", "frames", "fps", "width", "height")}
        raw = (out / shard["file"]).read_bytes()
        for s in shard["samples"]:
            ext = s["path"].rsplit(".", 1)[1]
            offset, size = s["members"][ext]
            data = raw[offset: offset + size]
            assert data == (captioned_media / s["path"]).read_bytes()
            if s["kind"] == "video":
                assert (read_video(f"x.{ext}", data=data) == read_video(captioned_media / s["path"])).all()
            else:
                assert (read_image(f"x.{ext}", data=data) == read_image(captioned_media / s["path"])).all()


def test_items_and_global_batches_equal_the_folders(captioned_media, tmp_path):
    out = tmp_path / "shards"
    packed(captioned_media, out, shard_size=4, include_images=True)
    kw = dict(num_frames=5, image_size=16, seed=3, hflip=True, max_bad_fraction=0.5)
    folder, shards = VideoFolderDataset(captioned_media, **kw), ShardDataset(out, **kw)
    assert shards.paths == folder.paths and shards.kinds == folder.kinds and shards.captions == folder.captions
    assert shards.stats == folder.stats  # the too-short clip and the corrupt file are skipped in both
    for epoch in (0, 1):
        for i in range(len(folder)):
            a, b = folder[SampleKey(epoch, i, 7)], shards[SampleKey(epoch, i, 7)]
            assert torch.equal(a["video"], b["video"]) and {**a, "video": 0} == {**b, "video": 0}
    for split in ("train", "val"):  # the split is by sample path, as for folders
        f = VideoFolderDataset(captioned_media, split=split, val_fraction=0.3, **kw)
        s = folder_datasets([out], split, val_fraction=0.3, **kw)
        assert isinstance(s, ShardDataset) and s.paths == f.paths
    sampler = ResumableBatchSampler(folder.kinds, 2, seed=3)
    for epoch in (0, 1):
        for keys in sampler:
            a, b = collate([folder[k] for k in keys]), collate([shards[k] for k in keys])
            assert torch.equal(a["video"], b["video"]) and a["path"] == b["path"], (epoch, keys)


def _batches(loader):
    return [(b["epoch"], b["batch_index"], b["path"], b["video"]) for b in loader]


def test_exact_resume_inside_a_shard_and_workers_do_not_change_batches(captioned_media, tmp_path):
    out = tmp_path / "shards"
    packed(captioned_media, out, shard_size=100)  # one shard: every resume point lies inside it
    ds = ShardDataset(out, num_frames=5, image_size=16, seed=1, hflip=True, max_bad_fraction=0.5)
    full = _batches(build_dataloader(ds, 2, seed=1, num_workers=0, pin_memory=False))
    assert len(full) == 4 and sorted(p for b in full for p in b[2]) == sorted(ds.paths)  # no loss, no duplicate
    resumed_loader = build_dataloader(ds, 2, seed=1, num_workers=0, pin_memory=False)
    resumed_loader.batch_sampler.load_state_dict({"epoch": 0, "batch_index": 1})  # mid-epoch, mid-shard
    resumed = _batches(resumed_loader)
    assert [b[:3] for b in resumed] == [b[:3] for b in full[1:]]
    assert all(torch.equal(x[3], y[3]) for x, y in zip(resumed, full[1:]))
    workers = _batches(build_dataloader(ds, 2, seed=1, num_workers=2, pin_memory=False))
    assert [b[:3] for b in workers] == [b[:3] for b in full]
    assert all(torch.equal(x[3], y[3]) for x, y in zip(workers, full))


def test_a_corrupted_member_is_skipped_and_counted(captioned_media, tmp_path):
    out = tmp_path / "shards"
    packed(captioned_media, out, shard_size=4)
    manifest = read_manifest(out)
    victim = manifest["shards"][1]["samples"][0]
    offset, size = victim["members"]["mp4"]
    with open(out / manifest["shards"][1]["file"], "r+b") as fp:
        fp.seek(offset)
        fp.write(b"\0" * size)
    ds = ShardDataset(out, num_frames=5, image_size=16, seed=0, max_bad_fraction=0.5)
    index = ds.paths.index(victim["path"])
    item = ds[SampleKey(0, index, 0)]
    assert isinstance(item, FailedSample) and item.path == victim["path"]
    batch = collate([item, ds[SampleKey(0, (index + 1) % len(ds), 0)]])
    assert batch["num_skipped"] == 1 and batch["video"].shape[0] == 1
    ds.record_skipped(batch)
    assert ds.stats.num_runtime_failures == 1 and [p for p, _ in ds.stats.runtime_failures] == [victim["path"]]


def test_corrupt_manifest_is_refused_with_the_file_and_key(captioned_media, tmp_path):
    out = tmp_path / "shards"
    packed(captioned_media, out)
    data = json.loads((out / "shards.json").read_text())
    data["shards"][0]["samples"][0]["path"] = "../../etc/passwd.mp4"
    (out / "shards.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"shards.json.*samples\[0\]\.path"):
        ShardDataset(out, num_frames=5, image_size=16)


def test_tokenizer_trains_two_steps_on_shards(captioned_media, tmp_path, one_thread):
    from scripts import train_tokenizer

    out = tmp_path / "shards"
    assert pack_cli.main([str(captioned_media), str(out), "--shard-size", "3"]) == 0
    run = tmp_path / "run"
    code = train_tokenizer.main(["--data", str(out), "--out", str(run), "--preset", "tiny", "--max-steps", "2",
                                 "--batch-size", "2", "--num-workers", "0", "--max-bad-fraction", "0.5"])
    assert code == 0 and (run / "tokenizer" / "model.safetensors").is_file()


def test_cli_errors_exit_2_with_one_line(captioned_media, tmp_path, capsys):
    out = tmp_path / "shards"
    (out / "mine").mkdir(parents=True)
    assert pack_cli.main([str(captioned_media), str(out)]) == 2  # never writes into a non-empty folder
    assert pack_cli.main([str(tmp_path / "nope"), str(tmp_path / "o2")]) == 2
    assert pack_cli.main([str(captioned_media), str(captioned_media / "inside")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("magvit2-pack: error:") for line in err)
    assert "not an empty folder" in err[0] and (out / "mine").is_dir()
    with pytest.raises(SystemExit) as exc:
        pack_cli.main([str(captioned_media), str(tmp_path / "o3"), "--shard-size", "0"])
    assert exc.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_maskgit_trains_two_steps_on_shards(captioned_media, tmp_path, one_thread):
    from magvit2 import VideoTokenizer
    from magvit2.presets import preset_config
    from scripts import train_maskgit

    with torch.random.fork_rng():
        torch.manual_seed(0)
        VideoTokenizer(preset_config("tiny", codebook_size=2**6)).save_pretrained(tmp_path / "tok")
    out = tmp_path / "shards"
    pack_module.pack_folder(captioned_media, out)
    code = train_maskgit.main(["--tokenizer", str(tmp_path / "tok"), "--data", str(out), "--out", str(tmp_path / "r"),
                               "--preset", "tiny", "--max-steps", "2", "--batch-size", "2", "--num-workers", "0",
                               "--max-bad-fraction", "0.5"])
    assert code == 0


def test_missing_or_truncated_shards_are_refused_at_construction(captioned_media, tmp_path):
    out = tmp_path / "shards"
    packed(captioned_media, out, shard_size=4)
    tar = out / "shard-00001.tar"
    tar.write_bytes(tar.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"shard-00001\.tar, which has 1000"):
        ShardDataset(out, num_frames=5, image_size=16)
    tar.unlink()
    with pytest.raises(FileNotFoundError, match=r"shard-00001\.tar"):
        folder_datasets([out], None, num_frames=5, image_size=16)
