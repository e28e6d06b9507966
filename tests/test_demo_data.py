"""The demo's data (moving digits, photo/video clips) and the judges that score prompt following."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts.build_demo_data import main as build_main
from trainers.data.video_io import read_video, write_video
from trainers.demo import (
    DIGIT_WORDS,
    DIRECTIONS,
    DigitDataConfig,
    DigitJudge,
    PhotoDataConfig,
    build_demo_data,
    build_digit_dataset,
    build_tokenizer_dataset,
    caption,
    heldout_pairs,
    judge_direction,
    make_digit_clip,
    make_digit_clips,
    score_prompt_following,
    seen_pairs,
    split_digit_indices,
)
from trainers.demo.photos import PHOTOS, VAL_PHOTOS, VAL_VIDEOS, available_photos, video_segments

REPO = Path(__file__).resolve().parents[1]
SMALL_DIGITS = DigitDataConfig(clips_per_pair=2, val_clips_per_pair=1, heldout_clips_per_pair=2)
SMALL_PHOTOS = PhotoDataConfig(clips_per_photo=1, val_clips_per_photo=2, gif_clips=2, face_clips=2)


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def digit_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    build_digit_dataset(out, SMALL_DIGITS)
    return out


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("photos")
    build_tokenizer_dataset(out, SMALL_PHOTOS)
    return out


@pytest.fixture(scope="module")
def judge() -> DigitJudge:
    return DigitJudge(seed=0)


# ---- moving digits -------------------------------------------------------------------------------------------


def test_pair_split_holds_out_one_direction_per_digit():
    seen, held = set(seen_pairs()), set(heldout_pairs())
    assert len(seen) == 30 and len(held) == 10 and not seen & held
    assert {d for d, _ in seen} == set(range(10)) and {a for _, a in seen} == set(DIRECTIONS)
    assert all(a == DIRECTIONS[d % 4] for d, a in held)


def test_image_split_is_disjoint_and_covers_every_class():
    train, val = split_digit_indices(seed=0)
    assert not set(train) & set(val) and len(train) + len(val) == 1797
    other_train, _ = split_digit_indices(seed=1)
    assert not np.array_equal(train, other_train)


def test_digit_folders_read_back_with_right_shapes_and_captions(digit_dir):
    counts = {"train": 60, "val": 30, "heldout": 20}
    train_rows, val_rows = split_digit_indices(0)
    for split, n in counts.items():
        records = _records(digit_dir / split)
        assert len(records) == n
        for i, rec in enumerate(records[:6]):
            frames = read_video(digit_dir / split / rec["file_name"])
            assert frames.shape == (9, 32, 32, 3) and frames.dtype == np.uint8
            assert rec["text"] == caption(rec["digit"], rec["direction"])
            assert judge_direction(frames)[0] == rec["direction"]  # the caption matches the motion
            expected = make_digit_clip(SMALL_DIGITS, split, i).frames  # lossless: only YUV rounding differs
            assert np.abs(frames.astype(int) - expected.astype(int)).max() <= 3
        rows = train_rows if split == "train" else val_rows
        assert all(rec["source_index"] in set(rows.tolist()) for rec in records)


def test_heldout_pairs_never_in_train(digit_dir):
    train = {(r["digit"], r["direction"]) for r in _records(digit_dir / "train")}
    held = {(r["digit"], r["direction"]) for r in _records(digit_dir / "heldout")}
    assert held == set(heldout_pairs()) and not train & held
    assert train == set(seen_pairs())
    prompts = json.loads((digit_dir / "prompts.json").read_text())
    assert {p["prompt"] for p in prompts["heldout"]} == {caption(d, a) for d, a in heldout_pairs()}
    assert not {p["prompt"] for p in prompts["seen"]} & {p["prompt"] for p in prompts["heldout"]}


def test_train_and_val_use_disjoint_digit_images(digit_dir):
    train = {r["source_index"] for r in _records(digit_dir / "train")}
    other = {r["source_index"] for s in ("val", "heldout") for r in _records(digit_dir / s)}
    assert not train & other


def test_more_continues_the_train_split_in_its_own_folder(tmp_path, digit_dir):
    """more/ holds train clips 60.. of a 2-per-pair config: with train/ it is the 3-per-pair train split, clip for
    clip; without more_clips_per_pair no folder is written and the manifest's settings stay as before."""
    assert not (digit_dir / "more").exists() and "more_clips_per_pair" not in SMALL_DIGITS.to_dict()
    config = dataclasses.replace(SMALL_DIGITS, more_clips_per_pair=1, val_clips_per_pair=0, heldout_clips_per_pair=0)
    assert build_digit_dataset(tmp_path, config)["more"] == 30
    longer = dataclasses.replace(SMALL_DIGITS, clips_per_pair=3)
    records = _records(tmp_path / "more")
    assert _records(tmp_path / "train") == _records(digit_dir / "train")
    assert {(r["digit"], r["direction"]) for r in records} == set(seen_pairs())  # balanced: every seen pair once
    for i in (0, 7, 29):
        clip = make_digit_clip(longer, "train", 60 + i)
        assert np.array_equal(make_digit_clip(config, "more", i).frames, clip.frames)
        assert records[i]["source_index"] == clip.source_index and records[i]["text"] == clip.text
    with pytest.raises(ValueError, match="more_clips_per_pair must be >= 0, got -1"):
        DigitDataConfig(more_clips_per_pair=-1)


def test_same_seed_same_bytes_other_seed_differs(tmp_path, digit_dir):
    build_digit_dataset(tmp_path / "again", SMALL_DIGITS)
    for split in ("train", "val", "heldout"):
        first = (digit_dir / split / "metadata.jsonl").read_bytes()
        assert (tmp_path / "again" / split / "metadata.jsonl").read_bytes() == first
        name = _records(digit_dir / split)[3]["file_name"]
        assert np.array_equal(read_video(digit_dir / split / name), read_video(tmp_path / "again" / split / name))
    other = DigitDataConfig(seed=1, clips_per_pair=2)
    first_clip = make_digit_clip(SMALL_DIGITS, "train", 0).frames
    assert not np.array_equal(make_digit_clip(other, "train", 0).frames, first_clip)


def test_speed_words_caption_the_distance():
    config = DigitDataConfig(speed_words=True, colored=False)
    for i in range(8):
        clip = make_digit_clip(config, "train", i)
        word = clip.text.split()[-1]
        assert word in ("slowly", "quickly") and clip.text.startswith(caption(clip.digit, clip.direction))


def test_grid_puts_digits_on_tokenizer_cells_moving_whole_pixels():
    config = DigitDataConfig()  # 16 px digits travelling 8 px over 9 frames, starts on a 4 px grid
    for x in np.linspace(-2.0, 10.0, 25):
        snapped = config.snap(float(x), 8.0)
        assert snapped % 4 == 0 and -2 <= snapped <= 10
    assert DigitDataConfig(grid=0).snap(1.3, 8.0) == 1.3
    axes = {"up": (0, -1), "down": (0, 1), "left": (1, -1), "right": (1, 1)}
    for i in range(8):
        clip = make_digit_clip(config, "train", i)
        axis, sign = axes[clip.direction]
        for t in range(1, 9):  # whole-pixel motion: every frame is the first one shifted by t pixels
            assert np.array_equal(np.roll(clip.frames[0], sign * t, axis=axis), clip.frames[t])


def test_warp_varies_train_handwriting_only_and_keeps_it_legible(judge):
    plain, warped = DigitDataConfig(more_clips_per_pair=1), DigitDataConfig(more_clips_per_pair=1, warp=1.0)
    assert "warp" not in plain.to_dict() and warped.to_dict()["warp"] == 1.0  # old manifests stay as they were
    changed = 0
    for split, n in (("train", 12), ("more", 4), ("val", 6), ("heldout", 6)):
        for i in range(n):
            a, b = make_digit_clip(plain, split, i), make_digit_clip(warped, split, i)
            assert a.record() == b.record()  # same caption, digit, direction and source image
            if split in ("val", "heldout"):
                assert np.array_equal(a.frames, b.frames)  # they keep measuring the pool's own handwriting
            else:
                changed += int(not np.array_equal(a.frames, b.frames))
                axis, sign = {"up": (0, -1), "down": (0, 1), "left": (1, -1), "right": (1, 1)}[b.direction]
                ahead, behind = np.arange(4, 32), np.arange(0, 28)  # whole-pixel motion (a warped digit may
                later, earlier = (ahead, behind) if sign > 0 else (behind, ahead)  # overhang the frame's edge)
                assert np.array_equal(b.frames[4].take(later, axis), b.frames[0].take(earlier, axis))
    assert changed == 16
    clips = [make_digit_clip(warped, "train", i) for i in range(60)]
    read = [judge.judge_digit(c.frames)[0] == c.digit for c in clips]
    assert np.mean(read) >= 0.8  # a warp varies the hand, not the digit


def test_bad_digit_config_raises():
    with pytest.raises(ValueError, match="grid"):
        DigitDataConfig(grid=-1)
    with pytest.raises(ValueError, match="does not fit"):
        DigitDataConfig(size=16, digit_size=14)
    with pytest.raises(ValueError, match="val_fraction"):
        DigitDataConfig(val_fraction=1.0)
    with pytest.raises(ValueError, match="warp must be in"):
        DigitDataConfig(warp=-0.5)


# ---- judges ---------------------------------------------------------------------------------------------------


def test_judges_are_accurate_on_new_handwriting(judge):
    """Ground truth first: the instrument must work on real digits the classifier never saw."""
    assert judge.val_accuracy >= 0.95  # single frames of val-half digits
    config = DigitDataConfig()
    clips = make_digit_clips(config, "val") + make_digit_clips(config, "heldout")
    scores = score_prompt_following([(c.frames, c.digit, c.direction) for c in clips], judge)
    assert scores["n"] == 200
    assert scores["digit_acc"] >= 0.95 and scores["direction_acc"] >= 0.95


def test_judges_accept_float_tensors_and_words(judge):
    clip = make_digit_clip(DigitDataConfig(), "val", 5)
    video = torch.from_numpy(clip.frames).permute(3, 0, 1, 2).float() / 127.5 - 1  # (3, t, h, w) in [-1, 1]
    assert judge.judge_digit(video)[0] == judge.judge_digit(clip.frames)[0] == clip.digit
    assert judge.frame_consistent(video) and judge.frame_consistent(clip.frames)
    other = next(c for c in make_digit_clips(DigitDataConfig(), "val") if c.digit != clip.digit)
    spliced = np.concatenate([clip.frames[:5], other.frames[5:]])  # two digits in one clip
    assert not judge.frame_consistent(spliced)
    assert not judge.frame_consistent(np.concatenate([clip.frames[:5], 0 * clip.frames[5:]]))  # frames with nothing
    assert judge_direction(video[None])[0] == clip.direction
    scores = score_prompt_following([(video, DIGIT_WORDS[clip.digit], clip.direction)], judge)
    assert scores["digit_acc"] == scores["direction_acc"] == 1.0
    with pytest.raises(ValueError, match="expected"):
        judge.judge_digit(np.zeros((17, 32, 32), dtype=np.uint8))


def test_negative_controls(judge):
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (17, 32, 32, 3), dtype=np.uint8) for _ in range(40)]
    targets = [DIRECTIONS[i % 4] for i in range(40)]
    hits = [judge_direction(v)[0] == a for v, a in zip(noise, targets)]
    assert np.mean(hits) <= 0.6  # near chance (0.25), never "always right"
    blank = np.zeros((17, 32, 32, 3), dtype=np.uint8)
    assert judge_direction(blank) == ("up", 0.0) and judge.judge_digit(blank) == (0, 0.0)
    static = np.repeat(make_digit_clip(DigitDataConfig(), "val", 0).frames[:1], 17, axis=0)
    assert judge_direction(static)[1] < 0.2
    # Shuffled targets: the same ground-truth clips scored against wrong digits.
    clips = make_digit_clips(DigitDataConfig(), "val")[:60]
    wrong = score_prompt_following(
        [(c.frames, (c.digit + 1 + i % 9) % 10, c.direction) for i, c in enumerate(clips)], judge
    )
    assert wrong["digit_acc"] <= 0.1


# ---- photo / video clips for the tokenizer ---------------------------------------------------------------------


def test_photo_clips_sizes_and_heldout_sources(photo_dir):
    train, val = _records(photo_dir / "train"), _records(photo_dir / "val")
    photos = available_photos()
    assert set(VAL_PHOTOS) <= set(photos) and len(photos) >= len(PHOTOS) - 2
    assert len(train) == len(set(photos) - set(VAL_PHOTOS)) * 1 + 2 + 2
    assert len(val) == len(VAL_PHOTOS) * 2
    assert {r["source"] for r in val} == set(VAL_PHOTOS)
    assert not {r["source"] for r in train} & set(VAL_PHOTOS)
    assert {r["kind"] for r in train} == {"photo", "gif", "face"}
    for rec in train[::7] + val[:2]:
        frames = read_video(photo_dir / ("val" if rec in val else "train") / rec["file_name"])
        assert frames.shape == (9, 32, 32, 3)
        assert rec["source"].split(".")[0] in rec["text"] or rec["kind"] == "face"
    moving = read_video(photo_dir / "train" / train[0]["file_name"]).astype(np.float32)
    assert np.abs(moving[-1] - moving[0]).mean() > 2.0  # the camera moves


def test_video_segments_spread_with_stride_and_val_routing(tmp_path):
    """Stand-in Debian clips (any container FFmpeg reads): 24 fps -> stride 3 at 8 fps; cityCC0 goes to val."""
    frames = np.zeros((60, 36, 48, 3), dtype=np.uint8)
    frames[:] = (np.arange(60) * 4).astype(np.uint8)[:, None, None, None]  # brightness = 4 * frame index
    folder = tmp_path / "deb"
    for name in ("cup.mp4", "cityCC0.mpg"):
        write_video(tmp_path / "clip.mp4", frames, fps=24, lossless=True)
        folder.mkdir(exist_ok=True)
        os.replace(tmp_path / "clip.mp4", folder / name)
    config = PhotoDataConfig(
        size=16,
        clips_per_photo=0,
        val_clips_per_photo=0,
        gif_clips=0,
        face_clips=0,
        segments_per_video=3,
        val_segments_per_video=2,
    )
    segments = list(video_segments(folder / "cup.mp4", 3, config))
    assert len(segments) == 3
    levels = [seg[0][:, 8, 8, 0].astype(int) for seg in segments]
    assert all(seg[0].shape == (9, 16, 16, 3) for seg in segments)
    assert all(np.all(np.abs(np.diff(lv) - 12) <= 2) for lv in levels)  # stride 3 frames
    assert levels[0][0] <= 2 and levels[-1][-1] >= 4 * 59 - 2  # spread from start to end
    counts = build_tokenizer_dataset(tmp_path / "tok", config, debian_dir=folder)
    assert counts == {"train": 3, "val": 2}
    assert {r["source"] for r in _records(tmp_path / "tok" / "val")} == set(VAL_VIDEOS)
    # a second real-video set: cup.mp4 held out, cityCC0.mpg trained on
    other = dataclasses.replace(config, val_videos=["cup.mp4"])
    assert other.val_videos == ("cup.mp4",) and other.to_dict()["val_videos"] == ["cup.mp4"]
    assert build_tokenizer_dataset(tmp_path / "tok2", other, debian_dir=folder) == {"train": 3, "val": 2}
    assert {r["source"] for r in _records(tmp_path / "tok2" / "val")} == {"cup.mp4"}
    assert {r["source"] for r in _records(tmp_path / "tok2" / "train")} == {"cityCC0.mpg"}
    with pytest.raises(ValueError, match=r"val_videos must name clips of .*got \['city.mpg'\]"):
        PhotoDataConfig(val_videos=("city.mpg",))


# ---- builder, manifest, script -----------------------------------------------------------------------------------


def test_build_demo_data_is_idempotent(tmp_path):
    tiny_digits = DigitDataConfig(clips_per_pair=1, val_clips_per_pair=1, heldout_clips_per_pair=1)
    tiny_photos = PhotoDataConfig(clips_per_photo=0, val_clips_per_photo=1, gif_clips=1, face_clips=0)
    first = build_demo_data(tmp_path, tiny_digits, tiny_photos)
    assert not first["skipped"] and first["counts"]["digits"] == {"train": 30, "val": 30, "heldout": 10}
    assert first["counts"]["tokenizer"] == {"train": 1, "val": len(VAL_PHOTOS)}
    assert build_demo_data(tmp_path, tiny_digits, tiny_photos)["skipped"]
    assert not build_demo_data(tmp_path, tiny_digits, tiny_photos, force=True)["skipped"]
    changed = build_demo_data(
        tmp_path, DigitDataConfig(clips_per_pair=2, val_clips_per_pair=1, heldout_clips_per_pair=1), tiny_photos
    )
    assert not changed["skipped"] and len(_records(tmp_path / "digits" / "train")) == 60
    assert json.loads((tmp_path / "manifest.json").read_text())["counts"] == changed["counts"]


def test_script_bad_arguments_exit_2_with_one_line(tmp_path, capsys):
    assert build_main(["--out", str(tmp_path), "--frames", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "num_frames" in err
    with pytest.raises(SystemExit) as exc:
        build_main(["--out", str(tmp_path), "--size", "x"])
    assert exc.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    assert build_main(["--out", str(tmp_path), "--debian-clips", str(tmp_path / "missing")]) == 2


def test_fetch_script_exits_0_offline(tmp_path):
    """With apt-get failing (offline), the fetch script says so and exits 0, quickly and without root."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("apt-get", "apt-cache"):
        (fake / tool).write_text("#!/bin/sh\necho 'E: offline' >&2\nexit 100\n")
        (fake / tool).chmod(stat.S_IRWXU)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "fetch_demo_clips.sh"), str(tmp_path / "clips")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "continuing without Debian clips" in result.stderr
    usage = subprocess.run(["bash", str(REPO / "scripts" / "fetch_demo_clips.sh")], capture_output=True, timeout=60)
    assert usage.returncode == 2


def test_report_aims_are_the_quality_issues_and_each_is_judged_on_its_own():
    from trainers.demo.report import aims_met

    groups = {"seen": {"digit_acc": 0.81, "direction_acc": 1.0, "frame_consistency": 0.05},
              "held_out": {"digit_acc": 0.49, "direction_acc": 0.96, "frame_consistency": 0.95}}
    aims = aims_met({"tokenizer": {"psnr_db": 22.5, "codebook_usage": 0.2}, "prompt_following": groups})
    assert {k: v["aim"] for k, v in aims.items()} == {
        "tokenizer.psnr_db": 22.0, "tokenizer.codebook_usage": 0.6,
        "prompt_following.seen.digit_acc": 0.8, "prompt_following.seen.direction_acc": 0.95,
        "prompt_following.seen.frame_consistency": 0.9, "prompt_following.held_out.digit_acc": 0.5,
        "prompt_following.held_out.direction_acc": 0.95, "prompt_following.held_out.frame_consistency": 0.9}
    met = {k for k, v in aims.items() if v["met"]}
    assert met == {"tokenizer.psnr_db", "prompt_following.seen.digit_acc", "prompt_following.seen.direction_acc",
                   "prompt_following.held_out.direction_acc", "prompt_following.held_out.frame_consistency"}
