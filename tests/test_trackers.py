"""Trackers through accelerate (`--report_to`): the scalars and the validation samples of a real (tiny) run land in
TensorBoard's event files (read back with TensorBoard's EventAccumulator); wandb under WANDB_MODE=disabled stays
off the network; metrics.jsonl is written whatever the trackers."""

from __future__ import annotations

import socket

import pytest
from PIL import Image

from tests.helpers.training import make_stage_two, maskgit_config, tokenizer_config
from trainers.logging import read_metrics


def events(folder):
    """Every scalar and image summary written under `folder` (TensorBoard's own reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list(folder.rglob("events.out.tfevents.*"))
    assert files, f"no event files under {folder}"
    scalars, images = {}, {}
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0, "images": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        for tag in acc.Tags()["images"]:
            images.setdefault(tag, []).extend(acc.Images(tag))
    return scalars, images


@pytest.fixture
def no_network(monkeypatch):
    """Any TCP/UDP connection attempt fails the test (local AF_UNIX sockets are allowed)."""
    original = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network access attempted: {address}")
        return original(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


def test_tokenizer_run_logs_scalars_and_sample_videos_to_tensorboard(clips, tmp_path, one_thread):
    from trainers.tokenizer_trainer import TokenizerTrainer

    cfg = tokenizer_config("--max-steps", "2", "--report_to", "tensorboard", "--tracker_project_name", "tok",
                           "--logging_dir", "tb")
    trainer = TokenizerTrainer(cfg, [clips], tmp_path / "run")
    trainer.fit()
    trainer.close()
    scalars, images = events(tmp_path / "run" / "tb" / "tok")
    assert [s for s, _ in scalars["train/generator.recon"]] == [1, 2]
    val = read_metrics(tmp_path / "run" / "metrics.jsonl", kind="val")[-1]  # the record, always written
    assert scalars["val/psnr_db"] == [(2, pytest.approx(val["psnr_db"], rel=1e-5))]
    gif = images["val/samples/val0"][0]
    assert gif.step == 2 and gif.encoded_image_string[:6] == b"GIF89a"  # an animated GIF: TensorBoard's video
    on_disk = tmp_path / "run" / "samples" / "step-00000002" / "val0.gif"
    assert gif.encoded_image_string == on_disk.read_bytes()
    with Image.open(on_disk) as im:
        assert (gif.width, gif.height) == im.size and im.n_frames == cfg.data.num_frames


def test_maskgit_run_with_tensorboard_and_disabled_wandb(tmp_path, monkeypatch, no_network, one_thread):
    import wandb

    from trainers.maskgit_trainer import MaskGitTrainer

    monkeypatch.setenv("WANDB_MODE", "disabled")
    data = make_stage_two(tmp_path)
    cfg = maskgit_config("--max-steps", "2", "--report_to", "tensorboard,wandb", "--batch-size", "2")
    trainer = MaskGitTrainer(cfg, data["tokenizer"], tmp_path / "run", codes_dir=data["codes"],
                             sample_prompts=["a red ball"])
    trainer.metrics.open_trackers()
    run = trainer.accelerator.get_tracker("wandb", unwrap=True)
    assert run.settings.mode == "disabled" and wandb.run is run  # WANDB_MODE honoured: no offline/online run
    trainer.fit()
    trainer.close()
    assert not (tmp_path / "run" / "wandb").exists()  # disabled: nothing written
    scalars, images = events(tmp_path / "run" / "logs" / "magvit2")
    assert {"train/loss", "train/accuracy", "val/accuracy"} <= set(scalars)
    assert images["val/samples/000-a-red-ball"][0].encoded_image_string[:6] == b"GIF89a"
    assert read_metrics(tmp_path / "run" / "metrics.jsonl", kind="train")


@pytest.fixture
def clips(tmp_path, make_clip):
    for i, photo in enumerate(("astronaut", "coffee", "chelsea", "rocket")):
        make_clip(f"clips/{photo}.mp4", num_frames=7, size=(20, 24), photo=photo)
        if i < 2:
            make_clip(f"clips/{photo}.png", size=(20, 24), photo=photo)
    return tmp_path / "clips"
