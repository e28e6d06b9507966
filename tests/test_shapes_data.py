"""The second object set (drawn shapes): images, clips, captions, judge, and the quality harness reading it back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.quality import data_settings
from trainers.demo import (
    DIRECTIONS,
    SHAPE_WORDS,
    DigitDataConfig,
    DigitJudge,
    build_digit_dataset,
    caption,
    judge_direction,
    load_shape_images,
    make_digit_clip,
    score_prompt_following,
    split_digit_indices,
)
from trainers.demo.digits import load_object_images, prompts_table
from trainers.demo.shapes import draw_shape

SHAPES = DigitDataConfig(objects="shapes")


@pytest.fixture(scope="module")
def shape_judge() -> DigitJudge:
    return DigitJudge(seed=0, objects="shapes")


def test_shape_images_contract_and_variety():
    images, labels = load_shape_images()
    assert images.dtype == np.float32 and images.shape == (len(labels), 8, 8) and labels.shape == (len(labels),)
    assert images.min() >= 0.0 and images.max() <= 16.0 and images.max() > 15.0
    assert len(SHAPE_WORDS) == 10 and len(set(SHAPE_WORDS)) == 10
    counts = np.bincount(labels, minlength=10)
    assert len(counts) == 10 and counts.min() >= 100
    for k in range(10):
        group = images[labels == k]
        assert group.sum(axis=(1, 2)).min() > 16.0  # every instance has ink
        assert len({g.tobytes() for g in group}) == len(group)  # every instance drawn differently
        assert np.abs(group - group.mean(axis=0)).mean() > 0.3
    again = draw_shape(0, np.random.default_rng(5))
    assert np.array_equal(again, draw_shape(0, np.random.default_rng(5)))
    assert images.flags.writeable is False and labels.flags.writeable is False


def test_shape_images_are_deterministic():
    images, labels = load_shape_images()
    load_shape_images.cache_clear()
    again, again_labels = load_shape_images()
    assert again is not images and np.array_equal(again, images) and np.array_equal(again_labels, labels)


def test_shape_clips_caption_motion_and_disjoint_images():
    train_rows, val_rows = split_digit_indices(0, objects="shapes")
    assert not set(train_rows) & set(val_rows) and len(train_rows) + len(val_rows) == len(load_shape_images()[1])
    for split, rows in (("train", train_rows), ("val", val_rows), ("heldout", val_rows)):
        for i in range(12):
            clip = make_digit_clip(SHAPES, split, i)
            assert clip.frames.shape == (9, 32, 32, 3) and clip.frames.dtype == np.uint8
            assert clip.text == f"the {SHAPE_WORDS[clip.digit]} moving {clip.direction}"
            assert clip.text == caption(clip.digit, clip.direction, objects="shapes") and "digit" not in clip.text
            assert judge_direction(clip.frames)[0] == clip.direction
            assert clip.source_index in set(rows.tolist())
            assert load_object_images("shapes")[1][clip.source_index] == clip.digit
            if split == "heldout":
                assert clip.direction == DIRECTIONS[clip.digit % 4]
    digit_clip = make_digit_clip(DigitDataConfig(), "train", 0)
    assert digit_clip.text.startswith("the digit ")
    assert not np.array_equal(make_digit_clip(SHAPES, "train", 0).frames, digit_clip.frames)


def test_shapes_folder_prompts_and_manifest(tmp_path):
    config = DigitDataConfig(objects="shapes", clips_per_pair=1, val_clips_per_pair=1, heldout_clips_per_pair=1)
    counts = build_digit_dataset(tmp_path, config)
    assert counts == {"train": 30, "val": 30, "heldout": 10}
    records = [json.loads(line) for line in (tmp_path / "train/metadata.jsonl").read_text().splitlines()]
    assert records[0]["file_name"] == f"00000_{SHAPE_WORDS[records[0]['digit']]}_{records[0]['direction']}.mp4"
    prompts = json.loads((tmp_path / "prompts.json").read_text())
    assert prompts == prompts_table(config) == prompts_table("shapes")
    assert {p["prompt"] for p in prompts["heldout"]} == {f"the {SHAPE_WORDS[k]} moving {DIRECTIONS[k % 4]}"
                                                         for k in range(10)}
    assert prompts_table() == prompts_table(DigitDataConfig())  # digits: as before
    assert "objects" not in DigitDataConfig().to_dict() and config.to_dict()["objects"] == "shapes"
    (tmp_path / "manifest.json").write_text(json.dumps({"settings": {"digits": config.to_dict()}}))
    assert data_settings(tmp_path) == {"objects": "shapes", "seed": 0}
    digits = DigitDataConfig(seed=3).to_dict()
    (tmp_path / "manifest.json").write_text(json.dumps({"settings": {"digits": digits}}))
    assert data_settings(tmp_path) == {"objects": "digits", "seed": 3}


def test_shape_judge_reads_new_instances(shape_judge):
    assert shape_judge.val_accuracy >= 0.9 and shape_judge.words == SHAPE_WORDS
    clips = [make_digit_clip(SHAPES, "val", i) for i in range(40)]
    hits = sum(shape_judge.judge_digit(c.frames)[0] == c.digit for c in clips)
    assert hits >= 34  # >= 85%
    by_word = [(c.frames, SHAPE_WORDS[c.digit], c.direction) for c in clips[:10]]
    scores = score_prompt_following(by_word, shape_judge)
    assert scores["digit_acc"] >= 0.8 and scores["direction_acc"] == 1.0
    wrong = [(c.frames, SHAPE_WORDS[(c.digit + 1) % 10], c.direction) for c in clips[:10]]
    assert score_prompt_following(wrong, shape_judge)["digit_acc"] <= 0.2
    with pytest.raises(ValueError, match="square"):
        score_prompt_following([(clips[0].frames, "seven", clips[0].direction)], shape_judge)


def test_bad_objects_name_raises():
    with pytest.raises(ValueError, match=r"objects must be one of \('digits', 'shapes'\), got 'letters'"):
        DigitDataConfig(objects="letters")
    with pytest.raises(ValueError, match="got 'Shapes'"):
        DigitJudge(objects="Shapes")
    with pytest.raises(ValueError, match="objects must be one of"):
        prompts_table("letters")


def test_quality_data_command_takes_objects(tmp_path, monkeypatch):
    import benchmarks.quality as quality

    seen = {}
    monkeypatch.setattr("trainers.demo.build_demo_data", lambda out, digits, photos, debian_dir: seen.update(
        out=Path(out), digits=digits, photos=photos))
    quality.main(["data", "--out", str(tmp_path / "data"), "--objects", "shapes"])
    assert seen["digits"].objects == "shapes"
    quality.main(["data", "--out", str(tmp_path / "data")])
    assert seen["digits"].objects == "digits" and seen["photos"].val_videos == ("cityCC0.mpg",)
    quality.main(["data", "--out", str(tmp_path / "data"), "--val-videos", "vtest.avi"])  # a second real-video set
    assert seen["photos"].val_videos == ("vtest.avi",)
    with pytest.raises(SystemExit):
        quality.main(["data", "--out", str(tmp_path / "data"), "--objects", "letters"])
    with pytest.raises(SystemExit):
        quality.main(["data", "--out", str(tmp_path / "data"), "--val-videos", "city.mpg"])
