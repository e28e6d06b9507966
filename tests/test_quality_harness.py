"""The quality harness (benchmarks/quality.py) judges and records only runs that trained to their end."""

import json

import pytest

import benchmarks.quality as quality
import trainers.maskgit_trainer


class FakeTrainer:
    """Stands in for MaskGitTrainer: `fit` ends as a SIGTERM'd run or a finished one would."""

    stop = False

    def __init__(self, config, tokenizer, run, **kwargs):
        self.stop_requested = False

    def fit(self):
        self.stop_requested = FakeTrainer.stop
        return {"step": 1 if FakeTrainer.stop else 40, "val_loss": 1.5}


def run_maskgit(tmp_path, monkeypatch, stop: bool):
    FakeTrainer.stop = stop
    judged = []
    monkeypatch.setattr(trainers.maskgit_trainer, "MaskGitTrainer", FakeTrainer)
    monkeypatch.setattr(quality, "judge_pipeline", lambda a, pipeline, out: judged.append(pipeline) or {"seen": {}})
    (tmp_path / "data").mkdir()
    quality.main(["maskgit", "--data", str(tmp_path / "data"), "--codes", str(tmp_path / "codes-tok"),
                  "--name", "x", "--steps", "40"])
    return judged


def test_a_run_stopped_by_sigterm_is_not_judged_or_recorded(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as stopped:
        run_maskgit(tmp_path, monkeypatch, stop=True)
    assert stopped.value.code == 3
    assert "stopped by SIGTERM at step 1" in capsys.readouterr().err
    assert not (tmp_path / "results.jsonl").exists()


def test_a_finished_run_is_judged_and_recorded(tmp_path, monkeypatch):
    judged = run_maskgit(tmp_path, monkeypatch, stop=False)
    assert judged == [tmp_path / "maskgit-x" / "pipeline"]
    (line,) = (tmp_path / "results.jsonl").read_text().splitlines()
    assert json.loads(line)["steps"] == 40
