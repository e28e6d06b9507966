"""Defaults that come from what a run knows: the tokenizer export records its training clip length and frame stride
and magvit2-reconstruct defaults to them; --max-minutes without --max-steps says which limit will stop the run."""

from __future__ import annotations

import json
import logging

import pytest

from magvit2 import VideoTokenizer, preset_config


@pytest.fixture
def trained(make_clip, tmp_path, one_thread, caplog):
    from trainers.api import VideoTokenizerTrainer

    for i, photo in enumerate(("astronaut", "coffee", "chelsea", "rocket")):
        make_clip(f"media/{i}.mp4", num_frames=12, size=(40, 40), photo=photo)
    tok = VideoTokenizer(preset_config("tiny"))
    with caplog.at_level(logging.INFO, logger="magvit2.train"):
        trainer = VideoTokenizerTrainer(tok, dataset_folder=tmp_path / "media", preset="tiny", num_train_steps=2,
                                        num_frames=5, run_dir=tmp_path / "run",
                                        overrides={"data": {"frame_stride": 2}, "run": {"max_minutes": 30}})
        trainer.train()
    return tmp_path / "run", tok.time_compression, [r.getMessage() for r in caplog.records]


def test_export_records_training_clips_and_reconstruct_defaults_to_them(trained, make_clip, tmp_path):
    from trainers.commands.reconstruct import reconstruct_files

    run, f, messages = trained
    payload = json.loads((run / "tokenizer" / "config.json").read_text())
    assert payload["training"] == {"num_frames": 5, "frame_stride": 2, "step": 2}
    assert VideoTokenizer.training_info(run / "tokenizer") == payload["training"]
    VideoTokenizer.from_pretrained(run / "tokenizer")  # the extra key does not disturb loading

    assert any("whichever comes first: 30 minutes or step 2" in m for m in messages)

    clip = make_clip("long.mp4", num_frames=20, size=(40, 40))
    metrics = reconstruct_files(run, [clip], tmp_path / "out")
    assert metrics["clips"][0]["frames"] == 5 and metrics["frame_stride"] == 2  # the training clips, not 1 + 8f
    metrics = reconstruct_files(run, [clip], tmp_path / "out2", num_frames=1 + 2 * f, frame_stride=1)
    assert metrics["clips"][0]["frames"] == 1 + 2 * f and metrics["frame_stride"] == 1  # flags win
    short = make_clip("short.mp4", num_frames=6, size=(40, 40))  # 3 frames at stride 2: the longest that fits
    assert reconstruct_files(run, [short], tmp_path / "out3")["clips"][0]["frames"] == 1 + f * ((3 - 1) // f)


def test_folders_without_training_info_and_bad_values(tmp_path):
    from trainers.commands.reconstruct import clip_length

    tok = VideoTokenizer(preset_config("tiny"))
    tok.save_pretrained(tmp_path / "plain")
    assert VideoTokenizer.training_info(tmp_path / "plain") == {}
    assert clip_length(40, 4, None) == 33 and clip_length(40, 4, None, trained=9) == 9
    with pytest.raises(ValueError, match="frame_stride must be an int"):
        tok.save_pretrained(tmp_path / "bad", training={"frame_stride": 0})
    tok.save_pretrained(tmp_path / "bad", training={"num_frames": 5})
    path = tmp_path / "bad" / "config.json"
    payload = json.loads(path.read_text())
    payload["training"]["num_frames"] = "5"
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=r"config.json: training.num_frames must be an int"):
        VideoTokenizer.training_info(tmp_path / "bad")
