"""The tokenizer training loop in-process: LR schedule values, one D step per update on the G forward, the
non-finite guard, exact state round trips, fine-tuning, time limits and clear errors."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from magvit2 import VideoTokenizer
from tests.helpers.training import reset_accelerate_state, tokenizer_config, weights_after_update
from trainers.checkpointing import CheckpointManager
from trainers.guards import NonFiniteLossError
from trainers.logging import read_metrics
from trainers.optim import OptimConfig, lr_at
from trainers.tokenizer_trainer import TokenizerTrainer

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "brick")


@pytest.fixture
def clips(tmp_path, make_clip):
    for i, photo in enumerate(PHOTOS):
        make_clip(f"clips/{photo}.mp4", num_frames=7, size=(20, 24), photo=photo)
        if i < 2:
            make_clip(f"clips/{photo}.png", size=(20, 24), photo=photo)
    return tmp_path / "clips"


def trainer(clips, run_dir, *flags, **kwargs) -> TokenizerTrainer:
    return TokenizerTrainer(tokenizer_config(*flags), [clips], run_dir, **kwargs)


def test_lr_schedules_are_pure_functions_with_the_documented_values():
    warm = OptimConfig(lr=1e-3, warmup_steps=4)
    assert [lr_at(warm, s) for s in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    cos = OptimConfig(lr=1e-3, warmup_steps=2, schedule="cosine", min_lr_ratio=0.1)
    assert lr_at(cos, 2, total_steps=12) == pytest.approx(1e-3)
    assert lr_at(cos, 7, total_steps=12) == pytest.approx(1e-4 + 0.9e-3 * 0.5)
    assert lr_at(cos, 12, total_steps=12) == pytest.approx(1e-4)
    assert lr_at(cos, 500, total_steps=12) == pytest.approx(1e-4)


def test_optimizers_run_at_the_scheduled_lr_and_d_steps_once_per_update(clips, tmp_path, monkeypatch):
    t = trainer(clips, tmp_path / "run", "--max-steps", "6")
    calls = {"reconstruct": 0}
    original = t.g_forward

    def counting(*args, **kwargs):
        calls["reconstruct"] += 1
        return original(*args, **kwargs)

    t.g_forward = counting
    t.fit()
    records = read_metrics(tmp_path / "run" / "metrics.jsonl", kind="train")
    c = t.config
    for r in records:  # logged LR of update number step-1 matches the pure schedule (no wrapper shifts it)
        assert r["lr_g"] == pytest.approx(lr_at(c.gen_optim, r["step"] - 1, c.run.max_steps))
    assert t.opt_g.param_groups[0]["lr"] == pytest.approx(lr_at(c.gen_optim, 5, 6))
    assert calls["reconstruct"] == 6  # the D step reuses the G forward: one tokenizer pass per update
    adversarial_updates = 6 - c.disc_start_step
    assert t.d_step == adversarial_updates
    # exactly one D step per update for the 3D discriminator (temporal ones skip 1-frame image batches)
    assert {int(t.opt_d.state[p]["step"]) for p in t.loss_fn.discriminator.parameters()} == {adversarial_updates}
    assert {int(s["step"]) for s in t.opt_g.state_dict()["state"].values()} == {6}
    assert all(r["generator.adversarial"] == 0 for r in records if r["step"] <= c.disc_start_step)
    assert any(r["generator.adversarial"] != 0 for r in records if r["step"] > c.disc_start_step)


def test_non_finite_loss_stops_before_the_update_and_writes_no_checkpoint(clips, tmp_path, monkeypatch):
    t = trainer(clips, tmp_path / "run", "--max-steps", "8")
    loss_fn = t.loss_fn.generator_loss

    def nan_at_step_3(video, out, **kwargs):
        total, parts = loss_fn(video, out, **kwargs)
        if kwargs["step"] == 3:
            parts.recon = torch.tensor(float("nan"))
            total = total * float("nan")
        return total, parts

    monkeypatch.setattr(t.loss_fn, "generator_loss", nan_at_step_3)
    snapshot = weights_after_update(monkeypatch, t, t.tokenizer, 3)  # before the non-finite update
    with pytest.raises(NonFiniteLossError, match=r"step 3 .*generator\.recon"):
        t.fit()
    assert t.step == 3
    assert all(torch.equal(v, snapshot[k]) for k, v in t.tokenizer.state_dict().items())
    steps = [s for s, _ in CheckpointManager(tmp_path / "run").list_complete()]
    assert 3 not in steps and 4 not in steps


def test_skip_policy_skips_and_counts_then_gives_up(clips, tmp_path, monkeypatch):
    t = trainer(clips, tmp_path / "run", "--max-steps", "10")
    t.guard.policy = "skip"
    loss_fn = t.loss_fn.generator_loss
    bad_steps = {2, 3, 6, 7, 8, 9}

    def nan_sometimes(video, out, **kwargs):
        total, parts = loss_fn(video, out, **kwargs)
        return (total * float("nan"), parts) if kwargs["step"] in bad_steps else (total, parts)

    monkeypatch.setattr(t.loss_fn, "generator_loss", nan_sometimes)
    with pytest.raises(NonFiniteLossError, match="4 consecutive"):
        t.fit()
    records = read_metrics(tmp_path / "run" / "metrics.jsonl", kind="train")
    assert [r["step"] for r in records if r["skipped_update"]] == [3, 4, 7, 8, 9]
    assert t.guard.total_skipped == 5


def test_checkpoint_round_trips_every_state_exactly(clips, tmp_path):
    a = trainer(clips, tmp_path / "run", "--max-steps", "5")
    a.fit()
    b = trainer(clips, tmp_path / "run", "--max-steps", "6", resume="latest")
    assert b.step == a.step == 5 and b.d_step == a.d_step
    for name in ("tokenizer", "ema", "loss_fn"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), name
    assert int(b.ema.step) == int(a.ema.step) == 5
    for opt in ("opt_g", "opt_d"):
        sa, sb = getattr(a, opt).state_dict(), getattr(b, opt).state_dict()
        for i, state in sa["state"].items():
            assert all(torch.equal(v, sb["state"][i][k]) for k, v in state.items())
        assert sa["param_groups"] == sb["param_groups"]
    assert b.loss_fn.lecam.ema_real == a.loss_fn.lecam.ema_real != 0


def test_resume_refuses_a_different_architecture_and_a_reused_run_dir(clips, tmp_path):
    trainer(clips, tmp_path / "run", "--max-steps", "2").fit()
    with pytest.raises(FileExistsError, match="resume='latest'"):
        trainer(clips, tmp_path / "run", "--max-steps", "4")
    cfg = tokenizer_config("--max-steps", "4")
    cfg = type(cfg)(**{**cfg.__dict__, "tokenizer": {"codebook_size": 2**5}})
    with pytest.raises(ValueError, match="differs from this run's in \\['codebook_size'\\]"):
        TokenizerTrainer(cfg, [clips], tmp_path / "run", resume="latest")


def test_init_from_fine_tunes_from_the_exported_tokenizer(clips, tmp_path):
    trainer(clips, tmp_path / "base", "--max-steps", "3").fit()
    exported = VideoTokenizer.from_pretrained(tmp_path / "base" / "tokenizer")
    t = trainer(clips, tmp_path / "ft", "--max-steps", "1", init_from=tmp_path / "base")
    assert all(torch.equal(v, exported.state_dict()[k]) for k, v in t.tokenizer.state_dict().items())
    assert t.step == 0 and not t.opt_g.state_dict()["state"]  # fresh optimizer
    t.fit()


def test_max_minutes_stops_with_a_checkpoint_and_export(clips, tmp_path):
    t = trainer(clips, tmp_path / "run", "--max-steps", "1000", "--max-minutes", "0.0001")
    summary = t.fit()
    assert summary["step"] < 1000
    assert CheckpointManager(tmp_path / "run").latest() is not None
    assert (tmp_path / "run" / "tokenizer" / "model.safetensors").is_file()
    assert math.isfinite(summary["psnr_db"])


def test_bad_frame_count_for_the_tokenizer_is_a_clear_error(clips, tmp_path):
    with pytest.raises(ValueError, match=r"data.num_frames=4 must be 1 \+ 2k"):
        trainer(clips, tmp_path / "run", "--num-frames", "4")



def test_bf16_autocast_path_trains_with_finite_losses_and_fp32_weights(clips, tmp_path, monkeypatch,
                                                                       fresh_accelerate_state):
    """The mixed-precision path on CPU (accelerate's bf16 autocast), GAN off: the encoder runs in bf16 inside
    autocast, the quantizer casts to fp32 itself, losses stay finite and the stored weights stay fp32.
    (GAN steps under CPU bf16 are not covered: see the closing note of the tokenizer-training issue.)"""
    t = trainer(clips, tmp_path / "run", "--max-steps", "3", "--mixed-precision", "bf16")
    t.config = replace(t.config, disc_start_step=1000)
    assert t.accelerator.mixed_precision == "bf16"
    seen = []
    quantize = t.tokenizer.quantizer.forward

    def spy(x, *args, **kwargs):
        seen.append(x.dtype)
        return quantize(x, *args, **kwargs)

    monkeypatch.setattr(t.tokenizer.quantizer, "forward", spy)
    summary = t.fit()
    assert summary["step"] == 3 and math.isfinite(summary["psnr_db"])
    records = read_metrics(tmp_path / "run" / "metrics.jsonl", kind="train")
    assert [r["skipped_update"] for r in records] == [0.0, 0.0, 0.0]
    assert torch.bfloat16 in seen  # autocast really ran the encoder in bf16
    assert all(p.dtype == torch.float32 for p in t.tokenizer.parameters())


def record_each_update(monkeypatch, t: TokenizerTrainer) -> list[dict]:
    """After every update: both models' weights (D's parameters: its LeCam running means move in every forward),
    the EMA's, d_step and the loss scale (monkeypatched train_step)."""
    states: list[dict] = []
    train_step = t.train_step

    def record(batches):
        logs = train_step(batches)
        states.append({"g": {k: v.clone() for k, v in t.tokenizer.state_dict().items()},
                       "d": {k: v.detach().clone() for k, v in t.loss_fn.named_parameters()},  # D's weights
                       "ema": {k: v.clone() for k, v in t.ema.ema_model.state_dict().items()},
                       "d_step": t.d_step, "scale": t.accelerator.scaler.get_scale()})
        return logs

    monkeypatch.setattr(t, "train_step", record)
    return states


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("overflowing", ["generator", "discriminator"])
def test_fp16_overflow_in_either_optimizer_skips_both(clips, tmp_path, monkeypatch, overflowing):
    """GradScaler semantics for the GAN's two optimizers (one scaler, updated once per step): when the gradients of
    EITHER optimizer overflow, neither steps, d_step does not advance (D's LR schedule and R1 cadence stay in step),
    the EMA does not move, the scale halves, and later updates train. (CPU has no fp16 autocast, so a CPU
    GradScaler is injected and the overflow forced at update 3 in one loss: a finite loss whose scaled gradients
    overflow.) The optimizer whose gradients are finite must not step on its own."""
    t = trainer(clips, tmp_path / "run", "--max-steps", "6")
    monkeypatch.setattr(t.accelerator, "scaler", torch.amp.GradScaler("cpu", init_scale=2.0**10))
    name = f"{overflowing}_loss"
    loss = getattr(t.loss_fn, name)

    def overflow_at_3(*args, **kwargs):
        total, parts = loss(*args, **kwargs)
        return (total * 1e37 if t.step == 3 else total), parts

    monkeypatch.setattr(t.loss_fn, name, overflow_at_3)
    states = record_each_update(monkeypatch, t)
    assert t.fit()["step"] == 6
    records = {r["step"]: r for r in read_metrics(tmp_path / "run" / "metrics.jsonl", kind="train")}
    assert [records[s]["skipped_update"] for s in range(1, 7)] == [0, 0, 0, 1, 0, 0]
    before, after = states[2], states[3]  # after updates 0-2, and after the overflowing update 3
    assert same(before["g"], after["g"]) and same(before["d"], after["d"]) and same(before["ema"], after["ema"])
    assert after["d_step"] == before["d_step"] and after["scale"] == before["scale"] / 2
    assert not same(after["g"], states[4]["g"]) and not same(after["d"], states[4]["d"])  # update 4 trained both
    assert states[4]["d_step"] == after["d_step"] + 1 and not same(after["ema"], states[4]["ema"])
    assert t.d_step == 6 - t.config.disc_start_step - 1


def test_skip_policy_under_fp16_skips_the_step_and_keeps_training(clips, tmp_path, monkeypatch):
    """`run.nonfinite: skip` with a GradScaler: the skipped step still updates the scaler (it unscaled), so the next
    step can unscale again (no "unscale_() has already been called")."""
    t = trainer(clips, tmp_path / "run", "--max-steps", "5")
    t.guard.policy = "skip"
    monkeypatch.setattr(t.accelerator, "scaler", torch.amp.GradScaler("cpu", init_scale=2.0**10))
    loss_fn = t.loss_fn.generator_loss

    def nan_at_2(video, out, **kwargs):
        total, parts = loss_fn(video, out, **kwargs)
        return (total * float("nan"), parts) if kwargs["step"] == 2 else (total, parts)

    monkeypatch.setattr(t.loss_fn, "generator_loss", nan_at_2)
    states = record_each_update(monkeypatch, t)
    assert t.fit()["step"] == 5
    records = {r["step"]: r for r in read_metrics(tmp_path / "run" / "metrics.jsonl", kind="train")}
    assert [records[s]["skipped_update"] for s in range(1, 6)] == [0, 0, 1, 0, 0]
    assert same(states[1]["g"], states[2]["g"]) and not same(states[2]["g"], states[3]["g"])
    assert t.guard.total_skipped == 1


def test_launcher_settings_apply_unless_flags_are_given_and_config_yaml_records_them(clips, tmp_path, monkeypatch,
                                                                                    fresh_accelerate_state):
    """`accelerate launch --mixed_precision bf16 --gradient_accumulation_steps 2` reaches the trainer through the
    environment; our flags win when given."""
    import yaml

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "2")
    t = trainer(clips, tmp_path / "launcher", "--max-steps", "1")
    launch = yaml.safe_load((tmp_path / "launcher" / "config.yaml").read_text())["launch"]
    assert (t.accelerator.mixed_precision, t.grad_accum) == ("bf16", 2)
    assert launch["mixed_precision"] == "bf16" and launch["grad_accum"] == 2 and launch["num_processes"] == 1
    reset_accelerate_state()
    t = trainer(clips, tmp_path / "flags", "--max-steps", "1", "--mixed-precision", "no")
    assert t.accelerator.mixed_precision == "no" and t.grad_accum == 2
