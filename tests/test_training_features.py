"""What the diffusers-style training flags do in a real (tiny) run: --num_train_epochs sets the step count from the
data, --resolution the tokenizer's size (and clips of other sizes are resized with a log line), --push_to_hub uploads
the export at every checkpoint and at the end through the model's own push_to_hub (huggingface_hub's upload
monkeypatched, as tests/test_hub.py does), --caption_column and --validation_prompts, --allow_tf32."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.helpers.training import make_stage_two, tokenizer_config
from trainers.tokenizer_trainer import TokenizerTrainer


@pytest.fixture
def clips(tmp_path, make_clip):
    for photo in ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins"):
        make_clip(f"clips/{photo}.mp4", num_frames=7, size=(20, 24), photo=photo)
    return tmp_path / "clips"


@pytest.fixture
def uploads(monkeypatch):
    """HfApi.create_repo / upload_folder recorded instead of sent (`uploads.fail = True`: every upload fails);
    HF_HUB_OFFLINE lifted (the tests set it)."""
    from huggingface_hub import HfApi

    state = SimpleNamespace(pushed=[], fail=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: SimpleNamespace(repo_id=repo_id))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        if state.fail:
            raise OSError("503 Service Unavailable")
        folder = Path(folder_path)
        state.pushed.append({"repo_id": repo_id, "message": kwargs.get("commit_message"),
                             "files": sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                                             if p.is_file()),
                             "readme": (folder / "README.md").read_text()})

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return state


def test_num_train_epochs_sets_the_steps_from_the_data(clips, tmp_path, one_thread):
    cfg = tokenizer_config("--num_train_epochs", "2", "--batch-size", "2", "--gradient_accumulation_steps", "2")
    trainer = TokenizerTrainer(cfg, [clips], tmp_path / "run")
    per_epoch = len(trainer.sampler)  # global batches of an epoch (the tiny recipe holds a quarter out)
    assert per_epoch >= 2 and trainer.config.run.max_steps == -(-2 * per_epoch // 2)
    summary = trainer.fit()
    trainer.close()
    assert summary["step"] == trainer.config.run.max_steps
    epochs = {r["epoch"] for r in json.loads("[" + ",".join(
        (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) + "]") if r["kind"] == "train"}
    assert epochs == {0.0, 1.0}  # two passes over the data, no third


def test_resolution_sets_the_tokenizer_size_and_other_sizes_are_resized_with_a_log_line(clips, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        trainer = TokenizerTrainer(tokenizer_config("--resolution", "32"), [clips], tmp_path / "run")
    assert trainer.tok_config.image_size == (32, 32)
    assert trainer.train_set[(0, 0, -1)]["video"].shape[-2:] == (32, 32)
    text = caplog.text
    assert "files are not 32x32 (width x height: 24x20" in text and "resized on its short side to cover 32x32" in text
    assert "--resolution N" in text and "tokenizer: 32x32 frames, 5-frame clips, 64 codes (preset tiny" in text


def test_push_to_hub_uploads_the_export_at_checkpoints_and_the_end(clips, tmp_path, uploads, one_thread):
    cfg = tokenizer_config("--max-steps", "3", "--checkpointing_steps", "2", "--push_to_hub", "--hub_model_id",
                           "me/tok")
    trainer = TokenizerTrainer(cfg, [clips], tmp_path / "run")
    trainer.fit()
    trainer.close()
    pushed = uploads.pushed
    assert [c["message"] for c in pushed] == ["magvit2-maskgit: step 2", "magvit2-maskgit: step 3"]
    assert all(c["repo_id"] == "me/tok" and {"README.md", "config.json", "model.safetensors"} <= set(c["files"])
               for c in pushed)
    assert "| step | 3 |" in pushed[-1]["readme"] and "| num_frames | 5 |" in pushed[-1]["readme"]  # its card


def test_a_failed_upload_keeps_the_run_and_fails_at_the_end_in_one_line(clips, tmp_path, uploads, capsys):
    from scripts.train_tokenizer import main

    uploads.fail = True
    code = main(["--data", str(clips), "--out", str(tmp_path / "run"), "--preset", "tiny", "--max-steps", "2",
                 "--push_to_hub", "--hub_model_id", "me/tok"])
    err = capsys.readouterr().err
    assert code == 2 and "upload to me/tok failed: 503 Service Unavailable" in err.strip().splitlines()[-1]
    assert (tmp_path / "run" / "summary.json").is_file() and (tmp_path / "run" / "tokenizer").is_dir()


def test_push_to_hub_is_refused_offline_before_any_work(clips, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = tokenizer_config("--push_to_hub", "--hub_model_id", "me/tok")
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE is set"):
        TokenizerTrainer(cfg, [clips], tmp_path / "run")


def test_maskgit_flags_caption_column_validation_prompts_and_push(tmp_path, uploads, monkeypatch, one_thread):
    from scripts import train_maskgit

    data = make_stage_two(tmp_path / "d")
    clips = data["clips"]
    lines = [json.loads(line) for line in (clips / "metadata.jsonl").read_text().splitlines()]
    (clips / "metadata.jsonl").write_text("".join(json.dumps({**r, "prompt": f"prompt {i}"}) + "\n"
                                                  for i, r in enumerate(lines)))
    seen = {}
    import trainers.maskgit_trainer as module

    class Recording(module.MaskGitTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen["trainer"] = self

    monkeypatch.setattr(module, "MaskGitTrainer", Recording)
    code = train_maskgit.main(["--tokenizer", str(data["tokenizer"]), "--train_data_dir", str(clips),
                               "--output_dir", str(tmp_path / "run"), "--preset", "tiny", "--max-steps", "2",
                               "--batch-size", "2", "--caption_column", "prompt", "--validation_prompts", "a red ball",
                               "a blue cube", "--push_to_hub", "--hub_model_id", "me/t2v"])
    assert code == 0
    trainer = seen["trainer"]
    assert set(trainer.train_set.captions) <= {f"prompt {i}" for i in range(len(lines))}
    assert trainer.sample_prompts == ["a red ball", "a blue cube"]
    samples = sorted(p.name for p in (tmp_path / "run" / "samples" / "step-00000002").glob("*.gif"))
    assert samples == ["000-a-red-ball.gif", "001-a-blue-cube.gif"]
    pushed = uploads.pushed
    assert pushed and pushed[-1]["repo_id"] == "me/t2v" and "transformer/model.safetensors" in pushed[-1]["files"]


def test_caption_column_with_code_shards_or_packed_shards_is_one_line(tmp_path, capsys):
    from scripts import train_maskgit

    data = make_stage_two(tmp_path / "d")
    code = train_maskgit.main(["--tokenizer", str(data["tokenizer"]), "--codes", str(data["codes"]), "--out",
                               str(tmp_path / "run"), "--preset", "tiny", "--caption_column", "prompt"])
    err = capsys.readouterr().err
    assert code == 2 and "--codes shards hold the captions magvit2-tokenize stored" in err


def test_allow_tf32():
    from trainers.configs import RunConfig
    from trainers.run_setup import make_accelerator

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        make_accelerator(RunConfig())
        assert not torch.backends.cuda.matmul.allow_tf32
        make_accelerator(RunConfig(allow_tf32=True))
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
