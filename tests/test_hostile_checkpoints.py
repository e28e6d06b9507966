"""Checkpoints written by another trainer (or an older version) give one clear line, not a KeyError traceback."""

from __future__ import annotations

import json

import pytest

from tests.helpers.artefacts import rewrite, saved_checkpoint
from tests.helpers.commands import cli, one_line
from trainers import checkpointing as ckpt


def test_init_from_a_checkpoint_of_another_trainer_is_named(tmp_path):
    from trainers.model_sources import load_init_weights

    manager = saved_checkpoint(tmp_path)  # a valid checkpoint, but not a MaskGit trainer's
    with pytest.raises(ckpt.CheckpointCorruptError, match=r"not a MaskGit checkpoint.*maskgit_resolved"):
        load_init_weights(manager.latest())


def test_resume_from_a_state_without_the_optimizer_entry_is_one_line(photo_clips, tmp_path, capsys):
    args = ["--data", photo_clips, "--out", tmp_path / "run", "--preset", "tiny", "--batch-size", "2", "--max-steps",
            "2"]
    assert cli("scripts.train_tokenizer", args, capsys)[0] == 0
    path = tmp_path / "run" / "checkpoints" / "step-00000002"
    state = json.loads((path / "state.json").read_text())
    del state["opt_g_meta"]
    data = json.dumps(state).encode()
    (path / "state.json").write_bytes(data)
    rewrite(path / "COMPLETE.json", lambda m: m["files"].update({"state.json": {
        "size": len(data), "sha256": ckpt.hashlib.sha256(data).hexdigest()}}))
    code, err = cli("scripts.train_tokenizer", [*args[:-1], "3", "--resume", "latest"], capsys)
    one_line(code, err, "state.json", "opt_g_meta")
