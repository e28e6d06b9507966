"""The quality harness (benchmarks/quality.py) judges and records only runs that trained to their end."""

import json
from typing import ClassVar

import pytest

import benchmarks.quality as quality
import trainers.maskgit_trainer
from trainers.stopping import TrainingStopped


class FakeTrainer:
    """Stands in for MaskGitTrainer: `fit` ends as a SIGTERM'd run or a finished one would."""

    stop = False
    kwargs: ClassVar[dict] = {}

    def __init__(self, config, tokenizer, run, **kwargs):
        self.run = run
        FakeTrainer.kwargs = kwargs

    def fit(self):
        if FakeTrainer.stop:  # what `fit` does once a SIGTERM'd run has saved everything
            raise TrainingStopped(1, self.run)
        return {"step": 40, "val_loss": 1.5}


def run_maskgit(tmp_path, monkeypatch, stop: bool, *extra: str):
    FakeTrainer.stop = stop
    judged = []
    monkeypatch.setattr(trainers.maskgit_trainer, "MaskGitTrainer", FakeTrainer)
    monkeypatch.setattr(quality, "judge_pipeline", lambda a, pipeline, out: judged.append(pipeline) or {"seen": {}})
    (tmp_path / "data").mkdir(exist_ok=True)
    quality.main(["maskgit", "--data", str(tmp_path / "data"), "--codes", str(tmp_path / "codes-tok"),
                  "--name", "x", "--steps", "40", *extra])
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


def test_resume_goes_on_from_the_latest_checkpoint_and_says_so(tmp_path, monkeypatch):
    """`--resume` (a run a SIGTERM stopped): the trainer resumes "latest", and the record marks its minutes as the
    resumed part's; without it a run starts anew."""
    run_maskgit(tmp_path, monkeypatch, False)
    assert FakeTrainer.kwargs["resume"] is None
    run_maskgit(tmp_path, monkeypatch, False, "--resume")
    assert FakeTrainer.kwargs["resume"] == "latest"
    fresh, resumed = (json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines())
    assert (fresh["resumed"], resumed["resumed"]) == (False, True)


def test_sample_with_another_tokenizer_decodes_the_same_codes_with_it(tmp_path, monkeypatch):
    """`sample --tokenizer T`: the pipeline's transformer and text encoder sample, T decodes (a decoder fine-tuned with
    --decoder-only, e.g. with code noise, judged on the same generated codes); the record names T."""
    import torch

    from magvit2 import VideoTokenizer
    from tests.helpers.models import build_pipeline

    pipeline = build_pipeline()
    pipeline.save_pretrained(tmp_path / "pipeline")
    other = VideoTokenizer(pipeline.tokenizer.config)
    other.save_pretrained(tmp_path / "other")
    judged = []
    monkeypatch.setattr(quality, "judge_pipeline", lambda a, target, out: judged.append(target) or {"seen": {}})
    (tmp_path / "data").mkdir()
    for extra in ([], ["--tokenizer", str(tmp_path / "other")]):
        quality.main(["sample", "--data", str(tmp_path / "data"), "--pipeline", str(tmp_path / "pipeline"), *extra])
    assert judged[0] == tmp_path / "pipeline"  # without --tokenizer: the folder as it is
    swapped = judged[1]
    assert all(torch.equal(swapped.tokenizer.state_dict()[k], v) for k, v in other.state_dict().items())
    sampler = pipeline.transformer.state_dict()
    assert all(torch.equal(swapped.transformer.state_dict()[k], v) for k, v in sampler.items())
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["tokenizer"] for r in records] == [None, str(tmp_path / "other")]
