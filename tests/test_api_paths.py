"""The Python trainer API resolves its paths when the trainer is built (a chdir before `.train()` changes nothing
about where it reads and writes), and its errors name its keywords (`run_dir=`, `results_folder=`, `resume=`) where
the commands' errors name their flags (`--out`, `--resume`)."""

from __future__ import annotations

import pytest
import torch

from magvit2 import VideoTokenizer, VideoTokenizerTrainer, preset_config


@pytest.fixture
def media(make_clip, tmp_path):
    for photo in ("astronaut", "coffee", "chelsea", "rocket"):
        make_clip(f"media/{photo}.mp4", num_frames=9, size=(20, 24), photo=photo)
    return tmp_path / "media"


def _trainer(**kwargs) -> VideoTokenizerTrainer:
    torch.manual_seed(0)
    return VideoTokenizerTrainer(VideoTokenizer(preset_config("tiny")), preset="tiny", num_frames=5,
                                 num_train_steps=2, num_workers=0, **kwargs)


def test_a_chdir_between_construction_and_train_changes_nothing(media, tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    trainer = _trainer(dataset_folder="media", results_folder="results")  # both relative
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    trainer.train()
    run = tmp_path / "results"
    assert trainer.run_dir == run and run.is_absolute()
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "step-00000002").is_dir()
    assert (run / "tokenizer" / "model.safetensors").is_file() and (run / "summary.json").is_file()
    assert list(elsewhere.iterdir()) == []  # nothing was written under the new working directory


def test_python_api_errors_name_keywords_and_cli_errors_name_flags(media, tmp_path, capsys, one_thread):
    from scripts import train_tokenizer

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError) as info:
        _trainer(dataset_folder=media, results_folder=foreign)
    message = str(info.value)
    assert f"results_folder='{foreign}' already exists" in message and "choose a new results_folder" in message
    assert "pass resume to continue" in message and "--" not in message
    with pytest.raises(FileExistsError, match=r"run_dir='.*foreign' already exists.*choose a new run_dir"):
        _trainer(dataset_folder=media, run_dir=foreign)

    args = ["--data", str(media), "--preset", "tiny", "--max-steps", "1", "--num-workers", "0"]
    assert train_tokenizer.main([*args, "--out", str(foreign)]) == 2
    line = capsys.readouterr().err
    assert f"--out {foreign} already exists" in line and "choose a new --out, or pass --resume" in line

    run = tmp_path / "run"
    assert train_tokenizer.main([*args, "--out", str(run), "--num-frames", "5"]) == 0
    capsys.readouterr()
    assert train_tokenizer.main([*args, "--out", str(run), "--num-frames", "5"]) == 2
    assert "already holds checkpoints; pass --resume latest to continue it, or choose a new --out" in \
        capsys.readouterr().err
    with pytest.raises(FileExistsError, match=r"already holds checkpoints; pass resume='latest' to continue it, or "
                                              r"choose a new run_dir$"):
        _trainer(dataset_folder=media, run_dir=run)
