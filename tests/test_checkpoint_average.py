"""benchmarks.checkpoint_average: a run's export with the mean of its last checkpoints' online weights."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from benchmarks.checkpoint_average import average_checkpoints


def fake_run(root, export, weights, online, values):
    (root / export / weights).parent.mkdir(parents=True)
    save_file({"w": torch.zeros(2), "b": torch.zeros(1)}, root / export / weights)
    (root / export / "config.json").write_text("{}")
    for step, v in enumerate(values):
        (root / f"checkpoints/step-{step:08d}").mkdir(parents=True)
        save_file({"w": torch.full((2,), v), "b": torch.full((1,), -v)}, root / f"checkpoints/step-{step:08d}/{online}")


def test_maskgit_run_averages_the_last_checkpoints(tmp_path):
    fake_run(tmp_path / "run", "pipeline", "transformer/model.safetensors", "transformer.safetensors", [9.0, 1.0, 2.0])
    assert average_checkpoints(tmp_path / "run", tmp_path / "avg", 2) == ["step-00000001", "step-00000002"]
    got = load_file(tmp_path / "avg/pipeline/transformer/model.safetensors")
    assert torch.equal(got["w"], torch.full((2,), 1.5)) and torch.equal(got["b"], torch.full((1,), -1.5))
    assert (tmp_path / "avg/pipeline/config.json").is_file()  # the rest of the export is copied


def test_tokenizer_run_and_bad_requests(tmp_path):
    fake_run(tmp_path / "tok", "tokenizer", "model.safetensors", "tokenizer.safetensors", [4.0])
    average_checkpoints(tmp_path / "tok", tmp_path / "one", 1)
    assert torch.equal(load_file(tmp_path / "one/tokenizer/model.safetensors")["w"], torch.full((2,), 4.0))
    with pytest.raises(ValueError, match="found 1"):
        average_checkpoints(tmp_path / "tok", tmp_path / "two", 2)
    with pytest.raises(FileExistsError):
        average_checkpoints(tmp_path / "tok", tmp_path / "one", 1)
    with pytest.raises(ValueError, match="neither"):
        average_checkpoints(tmp_path / "one" / "tokenizer", tmp_path / "x", 1)
