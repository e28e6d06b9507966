"""Default DataLoader worker counts never trip torch's own "This DataLoader will create N worker processes in total"
warning: the default is the CPUs this process may use, shared among the machine's processes, at most 8 (never a
fixed 4 or 8 whatever the machine). CPUs are pinned to 2 here (a 2-core machine) by patching
`os.sched_getaffinity`, which both torch's check and ours read."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from trainers.data.batches import default_num_workers


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)


def test_default_workers_share_the_cores_among_the_machines_processes(two_cores, monkeypatch):
    assert default_num_workers() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_num_workers() == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_num_workers() == 0  # more processes than cores: load in the main process
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert default_num_workers() == 8  # 64 cores / 4 processes = 16, capped


def test_a_tiny_run_with_the_default_recipe_emits_no_worker_warning(two_cores, make_clip, tmp_path, one_thread):
    from magvit2 import VideoTokenizer, VideoTokenizerTrainer, preset_config

    for i, photo in enumerate(("astronaut", "coffee", "chelsea", "rocket")):
        make_clip(f"media/{i}.mp4", num_frames=9, size=(20, 24), photo=photo)
    torch.manual_seed(0)
    trainer = VideoTokenizerTrainer(VideoTokenizer(preset_config("tiny")), dataset_folder=str(tmp_path / "media"),
                                    batch_size=1, num_train_steps=1, num_frames=5, valid_frac=0.25,
                                    run_dir=tmp_path / "run")  # the seed API's default preset: 'base'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "worker processes in total" in m], messages
    assert trainer.config.data.num_workers is None  # the recipe leaves it to the machine
    assert trainer.trainer.loader.num_workers == 2
