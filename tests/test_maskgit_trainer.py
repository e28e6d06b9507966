"""The MaskGit training loop in-process on a tiny tokenizer (16x16, f=2: 5 frames -> 3x8x8 codes of 64) over real
photo pans: it learns (prompt -> clip codes through the exported pipeline), condition dropout happens at the
configured rate, LRs follow the schedule, the non-finite guard stops before the update, state round-trips exactly,
vocabularies are checked, on-the-fly tokenization equals the shards, and sample videos are written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from magvit2 import VideoTokenizer, preset_config
from maskgit import TextToVideoPipeline
from scripts import train_maskgit
from tests.helpers.media import pan_frames
from tests.helpers.training import (
    STAGE_TWO_CAPTIONS,
    STAGE_TWO_PHOTOS,
    make_stage_two,
    maskgit_config,
    maskgit_trainer,
    reset_accelerate_state,
    weights_after_update,
)
from trainers.checkpointing import CheckpointManager
from trainers.commands.tokenize_folder import tokenize_folder
from trainers.data.codes import CodeShardDataset
from trainers.data.video_io import read_video, write_video
from trainers.guards import NonFiniteLossError
from trainers.logging import read_metrics
from trainers.maskgit_trainer import MaskGitTrainer
from trainers.optim import lr_at


@pytest.fixture(scope="module")
def stage_two(tmp_path_factory) -> dict[str, Path]:
    return make_stage_two(tmp_path_factory.mktemp("stage2"))


def test_overfits_four_captioned_clips_and_regenerates_them_from_their_prompts(tmp_path, one_thread):
    """The headline: trainer + objective + exported pipeline together. ~11 s."""
    captions = ("an astronaut in space", "a cup of coffee", "a cat named chelsea", "a rocket on the pad")
    data = make_stage_two(tmp_path, STAGE_TWO_PHOTOS[:4], captions)
    shards = CodeShardDataset(data["codes"])
    agreement = (shards.codes[:, None] == shards.codes[None]).float().mean(dim=(2, 3, 4))  # (4, 4)
    assert agreement[~torch.eye(4, dtype=torch.bool)].max() < 0.5  # the clips differ: the prompt must pick one
    cfg = maskgit_config("--max-steps", "400", maskgit={"dim": 64}, data={"val_fraction": 0.0},
                         run={"log_every": 50, "val_every": 1000, "checkpoint_every": 1000},
                         optim={"lr": 3e-3, "warmup_steps": 10})
    t = maskgit_trainer(data, tmp_path / "run", cfg=cfg)
    t.fit()
    pipe = TextToVideoPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    for guidance in (1.0, 2.0):
        codes = pipe(list(shards.captions), generator=torch.Generator().manual_seed(0), output_type="latent",
                     guidance_scale=guidance, num_inference_steps=8).frames  # (4, 3, 8, 8)
        accuracy = (codes == shards.codes).float().mean(dim=(1, 2, 3))
        assert bool((accuracy > 0.9).all()), (guidance, accuracy)


class DropSpy:
    """Stands in for the transformer inside the objective and records the drop_text rows it is called with."""

    def __init__(self, model):
        self.model, self.config, self.dropped = model, model.config, []

    def __call__(self, codes, text, drop_text=None, *args, **kwargs):
        self.dropped.append(drop_text.clone())
        return self.model(codes, text, drop_text, *args, **kwargs)


@pytest.mark.parametrize("rate", [0.1, 0.0])
def test_condition_dropout_happens_at_the_configured_rate(stage_two, tmp_path, rate, one_thread):
    cfg = maskgit_config("--max-steps", "60", "--batch-size", "6", cond_drop_prob=rate,
                         data={"val_fraction": 0.0}, run={"val_every": 1000, "checkpoint_every": 1000})
    t = maskgit_trainer(stage_two, tmp_path / "run", cfg=cfg)
    t.model = spy = DropSpy(t.transformer)
    t.text_encoder.encode = None  # training reads the caption bank: the encoder never runs after startup
    t.fit()
    dropped = torch.cat(spy.dropped).float()
    logged = [r["drop_fraction"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl", kind="train")]
    assert len(logged) == 60 and dropped.numel() == 360
    assert sum(logged) / len(logged) == pytest.approx(float(dropped.mean()))
    if rate == 0:
        assert float(dropped.sum()) == 0
    else:  # 360 Bernoulli(0.1) draws: mean 0.1, std 0.016
        assert 0.05 < float(dropped.mean()) < 0.15


def test_lr_follows_the_schedule_with_one_optimizer_step_per_update(stage_two, tmp_path):
    t = maskgit_trainer(stage_two, tmp_path / "run", cfg=maskgit_config("--max-steps", "6", grad_accum=2))
    calls, batches = [], []
    step, batch_codes = t.optimizer.step, t.batch_codes
    t.optimizer.step = lambda *a, **k: (calls.append(t.optimizer.param_groups[0]["lr"]), step(*a, **k))[1]
    t.batch_codes = lambda batch: (batches.append(batch["index"]), batch_codes(batch))[1]
    t.fit()
    assert len(batches) == 12  # grad_accum=2 micro-batches per update
    records = read_metrics(tmp_path / "run" / "metrics.jsonl", kind="train")
    expected = [lr_at(t.config.optim, s, 6) for s in range(6)]
    assert [r["lr"] for r in records] == pytest.approx(expected) and calls == pytest.approx(expected)
    assert expected[0] < expected[1] == max(expected) > expected[-1]  # warmup (2 steps), then cosine decay
    assert {int(s["step"]) for s in t.optimizer.state_dict()["state"].values()} == {6}
    assert int(t.ema.step) == 6
    assert all(0 < r["mask_fraction"] <= 1 and 0 <= r["accuracy"] <= 1 and r["tokens_per_s"] > 0 for r in records)


def nan_loss_at(steps: set[int], trainer: MaskGitTrainer, monkeypatch) -> None:
    import trainers.maskgit_trainer as module

    original = module.masked_token_loss

    def patched(*args, **kwargs):
        loss, stats = original(*args, **kwargs)
        return (loss * float("nan"), stats) if trainer.step in steps else (loss, stats)

    monkeypatch.setattr(module, "masked_token_loss", patched)


def test_frame_mask_prob_reaches_the_objective(stage_two, tmp_path, monkeypatch):
    import trainers.maskgit_trainer as module

    masks, original = [], module.masked_token_loss

    def spy(*args, **kwargs):
        loss, stats = original(*args, **kwargs)
        masks.append((stats.mask.clone(), args[1].shape[1:]))  # (b, n) masked positions, the (t', h', w') grid
        return loss, stats

    monkeypatch.setattr(module, "masked_token_loss", spy)
    cfg = maskgit_config("--max-steps", "3", frame_mask_prob=1.0, run={"val_every": 1000, "checkpoint_every": 1000})
    maskgit_trainer(stage_two, tmp_path / "run", cfg=cfg).fit()
    assert len(masks) == 3
    for mask, (t, h, w) in masks:
        per_frame = mask.view(len(mask), t, h * w).sum(-1)  # (b, t')
        assert t >= 2 and (per_frame.sum(-1) == h * w).all() and (per_frame.max(-1).values == h * w).all()


def test_non_finite_loss_stops_before_the_update_and_writes_no_checkpoint(stage_two, tmp_path, monkeypatch):
    cfg = maskgit_config("--max-steps", "8", run={"checkpoint_every": 1})
    t = maskgit_trainer(stage_two, tmp_path / "run", cfg=cfg)
    nan_loss_at({3}, t, monkeypatch)
    snapshot = weights_after_update(monkeypatch, t, t.transformer, 3)  # before the non-finite update
    with pytest.raises(NonFiniteLossError, match=r"step 3 \(transformer\): loss=nan.*step-00000003"):
        t.fit()
    assert t.step == 3
    assert all(torch.equal(v, snapshot[k]) for k, v in t.transformer.state_dict().items())
    assert [s for s, _ in CheckpointManager(tmp_path / "run").list_complete()] == [1, 2, 3]


def test_skip_policy_skips_and_counts_then_gives_up(stage_two, tmp_path, monkeypatch):
    t = maskgit_trainer(stage_two, tmp_path / "run", "--max-steps", "10")
    t.guard.policy = "skip"
    nan_loss_at({2, 3, 6, 7, 8, 9}, t, monkeypatch)
    with pytest.raises(NonFiniteLossError, match="4 consecutive"):
        t.fit()
    records = read_metrics(tmp_path / "run" / "metrics.jsonl", kind="train")
    assert [r["step"] for r in records if r["skipped_update"]] == [3, 4, 7, 8, 9]
    assert t.guard.total_skipped == 5 and int(t.ema.step) == 4


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_round_trips_every_state_exactly_and_continues_identically(stage_two, tmp_path):
    a = maskgit_trainer(stage_two, tmp_path / "run", "--max-steps", "5")
    a.fit()
    b = maskgit_trainer(stage_two, tmp_path / "run", "--max-steps", "5", resume="latest")  # same LR horizon
    assert b.step == a.step == 5
    assert states_equal(a.transformer.state_dict(), b.transformer.state_dict())
    assert states_equal(a.ema.state_dict(), b.ema.state_dict()) and int(b.ema.step) == 5
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert all(states_equal(state, sb["state"][i]) for i, state in sa["state"].items())
    for t in (a, b):  # one more update from the same consumed data position gives the same weights
        t.train_step(t.batches())
    assert states_equal(a.transformer.state_dict(), b.transformer.state_dict())


def test_resume_refuses_another_architecture_and_a_reused_run_dir(stage_two, tmp_path):
    maskgit_trainer(stage_two, tmp_path / "run", "--max-steps", "2").fit()
    with pytest.raises(FileExistsError, match="resume='latest'"):
        maskgit_trainer(stage_two, tmp_path / "run", "--max-steps", "4")
    with pytest.raises(ValueError, match=r"differs from this run's in \['dim'\]"):
        maskgit_trainer(stage_two, tmp_path / "run", cfg=maskgit_config("--max-steps", "4", maskgit={"dim": 48}),
                        resume="latest")
    with pytest.raises(ValueError, match="text encoder 'tiny:32'"):
        maskgit_trainer(stage_two, tmp_path / "run", "--max-steps", "4", "--text-encoder", "tiny:16", resume="latest")


def test_several_code_folders_train_as_one_set(stage_two, tmp_path):
    """`codes_dir=[a, b]` (`--codes A B`): the clips of both folders, in order, each with its own caption; a folder
    of another tokenizer is named in the error."""
    more = tmp_path / "more"
    more.mkdir()
    write_video(more / "moon.mp4", pan_frames(5, (16, 16), "moon"), lossless=True)
    (more / "metadata.jsonl").write_text(json.dumps({"file_name": "moon.mp4", "text": "the moon at night"}))
    tokenize_folder(stage_two["tokenizer"], more, tmp_path / "codes-more", num_frames=5, device="cpu")
    first, second = CodeShardDataset(stage_two["codes"]), CodeShardDataset(tmp_path / "codes-more")
    args = train_maskgit.build_parser().parse_args(["--tokenizer", "t", "--out", "o", "--codes", "a", "b"])
    assert args.codes == ["a", "b"]
    t = maskgit_trainer(stage_two, tmp_path / "run", cfg=maskgit_config("--max-steps", "2", data={"val_fraction": 0.0}),
                        codes_dir=[stage_two["codes"], tmp_path / "codes-more"])
    assert len(t.train_set) == len(first) + len(second) == len(STAGE_TWO_PHOTOS) + 1
    assert list(t.train_set.captions) == [*first.captions, "the moon at night"]
    assert torch.equal(t.train_set.codes, torch.cat([first.codes, second.codes]))
    t.fit()
    other = make_stage_two(tmp_path / "k32", STAGE_TWO_PHOTOS[:2], STAGE_TWO_CAPTIONS[:2], codebook_size=2**5)
    with pytest.raises(ValueError, match=r"vocabulary mismatch: codes_dir .*k32"):
        maskgit_trainer(stage_two, tmp_path / "run2", codes_dir=[stage_two["codes"], other["codes"]])


def test_vocabulary_and_grid_mismatches_are_clear_errors(stage_two, tmp_path):
    other = make_stage_two(tmp_path / "k32", STAGE_TWO_PHOTOS[:2], STAGE_TWO_CAPTIONS[:2], codebook_size=2**5)
    with pytest.raises(ValueError, match=r"vocabulary mismatch: codes_dir .* 64-code tokenizer .* has 32 codes"):
        MaskGitTrainer(maskgit_config(), other["tokenizer"], tmp_path / "run", codes_dir=stage_two["codes"])
    with pytest.raises(ValueError, match="vocabulary mismatch: val_codes_dir"):
        maskgit_trainer(stage_two, tmp_path / "run", val_codes_dir=other["codes"])
    big = tmp_path / "big"
    VideoTokenizer(preset_config("tiny", image_size=32)).save_pretrained(big)
    with pytest.raises(ValueError, match=r"latent grid mismatch: .* \(3, 8, 8\) .* \(3, 16, 16\)"):
        MaskGitTrainer(maskgit_config(), big, tmp_path / "run", codes_dir=stage_two["codes"])
    with pytest.raises(ValueError, match=r"maskgit\.codebook_size is set by the trainer"):
        maskgit_config(maskgit={"codebook_size": 64})


def test_large_fsq_codebooks_get_one_sub_token_per_fsq_dimension(tmp_path):
    levels = (8, 8, 8, 8, 5)  # 20480 codes > 2**14: factorised by default, like LFQ codebooks of that size
    data = make_stage_two(tmp_path, codebook_size=None, use_fsq=True, fsq_levels=levels)
    t = maskgit_trainer(data, tmp_path / "run", cfg=maskgit_config("--max-steps", "2"))
    assert t.transformer.vocab_sizes == (5, 8, 8, 8, 8) and t.transformer.config.codebook_size == 20480
    t.fit()
    pipe = TextToVideoPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert pipe.transformer.vocab_sizes == (5, 8, 8, 8, 8)
    codes = pipe(["a cup of coffee"], generator=torch.Generator().manual_seed(0), output_type="latent",
                 num_inference_steps=3).frames
    assert codes.shape == (1, 3, 8, 8) and int(codes.min()) >= 0 and int(codes.max()) < 20480
    single = maskgit_trainer(data, tmp_path / "single",
                             cfg=maskgit_config("--max-steps", "1", maskgit={"factorize_codes": False}))
    assert single.transformer.vocab_sizes == (20480,)  # opting out keeps one head
    small = make_stage_two(tmp_path / "small", codebook_size=None, use_fsq=True,
                           fsq_levels=(5, 4, 3))
    small_trainer = maskgit_trainer(small, tmp_path / "s", cfg=maskgit_config("--max-steps", "1"))
    assert small_trainer.transformer.vocab_sizes == (60,)
    forced = maskgit_trainer(small, tmp_path / "f",
                             cfg=maskgit_config("--max-steps", "1", maskgit={"factorize_codes": True}))
    assert forced.transformer.vocab_sizes == (3, 4, 5)


def test_on_the_fly_tokenization_feeds_the_same_codes_as_the_shards(stage_two, tmp_path):
    shards = CodeShardDataset(stage_two["codes"])
    by_path = {r["path"]: shards.codes[i] for i, r in enumerate(shards.records)}
    t = maskgit_trainer(stage_two, tmp_path / "run", "--max-steps", "3", data_dirs=[stage_two["clips"]])
    assert t.val_clips is not None and len(t.val_clips) == 2  # held out by file, tokenized once at startup
    assert all(torch.equal(c, by_path[p]) for c, p in zip(t.val_clips.codes, t.val_clips.paths))
    t.train_set.random_crop = False  # center crops from frame 0, as magvit2-tokenize takes them
    fed, batch_codes = [], t.batch_codes

    def spy(batch):
        assert "video" in batch and "codes" not in batch  # clips are tokenized here, not read from shards
        codes = batch_codes(batch)  # (b, t', h', w')
        fed.extend(zip(batch["path"], codes))
        return codes

    t.batch_codes = spy
    summary = t.fit()
    assert summary["step"] == 3 and math.isfinite(summary["val_loss"])
    assert len(fed) == 12 and all(torch.equal(codes, by_path[path]) for path, codes in fed)


def test_sample_videos_are_written_and_decode(stage_two, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cup of coffee\n\n  a cat looking up \n")
    t = maskgit_trainer(stage_two, tmp_path / "run", "--max-steps", "2", sample_prompts=prompts,
                        cfg=maskgit_config("--max-steps", "2", run={"val_every": 2}))
    t.fit()
    folder = tmp_path / "run" / "samples" / "step-00000002"
    lines = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    assert [line["prompt"] for line in lines] == ["a cup of coffee", "a cat looking up"]
    for line in lines:
        assert read_video(folder / line["file"]).shape == (5, 16, 16, 3)
        assert read_video(folder / line["gif"]).shape == (5, 16, 16, 3)
        assert line["settings"]["num_inference_steps"] == 4 and line["settings"]["num_frames"] == 5


def test_init_from_a_run_loads_ema_weights_with_a_fresh_optimizer(stage_two, tmp_path, caplog):
    base = maskgit_trainer(stage_two, tmp_path / "base", "--max-steps", "3")
    base.fit()
    assert "1 of 4 training clips have an empty caption" in caplog.text
    exported = TextToVideoPipeline.from_pretrained(tmp_path / "base" / "pipeline").transformer
    t = maskgit_trainer(stage_two, tmp_path / "ft", "--max-steps", "1", init_from=tmp_path / "base")
    assert states_equal(t.transformer.state_dict(), exported.state_dict())
    assert t.step == 0 and not t.optimizer.state_dict()["state"]
    ckpt = tmp_path / "base" / "checkpoints" / "step-00000003"
    t2 = maskgit_trainer(stage_two, tmp_path / "ft2", "--max-steps", "1", init_from=ckpt)
    assert states_equal(t2.transformer.state_dict(), base.transformer.state_dict())
    other = make_stage_two(tmp_path / "k32", STAGE_TWO_PHOTOS[:2], STAGE_TWO_CAPTIONS[:2], codebook_size=2**5)
    with pytest.raises(ValueError, match="vocabulary mismatch: init_from"):
        maskgit_trainer(other, tmp_path / "ft3", init_from=tmp_path / "base",
                        cfg=maskgit_config("--max-steps", "1", "--batch-size", "2", data={"val_fraction": 0.0}))


def test_max_minutes_stops_with_a_checkpoint_export_and_summary(stage_two, tmp_path):
    summary = maskgit_trainer(stage_two, tmp_path / "run", "--max-steps", "1000", "--max-minutes", "0.0001").fit()
    assert summary["step"] < 1000
    assert CheckpointManager(tmp_path / "run").latest() is not None
    assert (tmp_path / "run" / "pipeline" / "pipeline.json").is_file()
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["step"] == summary["step"] and math.isfinite(saved["val_loss"]) and 0 <= saved["val_accuracy"] <= 1


def test_launcher_gradient_accumulation_divides_the_loss_once(stage_two, tmp_path, monkeypatch,
                                                              fresh_accelerate_state):
    """`accelerate launch --gradient_accumulation_steps 4` (ACCELERATE_GRADIENT_ACCUMULATION_STEPS) and our own
    `--gradient-accumulation-steps 4` give the same gradient: the loss is divided by the micro-batch count once
    (dividing again in `Accelerator.backward` would give 0.25x the gradient, clip 4x looser and log wrong norms)."""
    grads = {}
    for name, launcher, flags in (("flag", None, ["--gradient-accumulation-steps", "4"]), ("launcher", "4", [])):
        reset_accelerate_state()
        if launcher is None:
            monkeypatch.delenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", raising=False)
        else:
            monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", launcher)
        t = maskgit_trainer(stage_two, tmp_path / name, "--max-steps", "1", *flags)
        assert t.grad_accum == 4
        update = t.update

        def capture(phase, groups, losses, name=name, t=t, update=update):
            grads[name] = torch.cat([p.grad.flatten() for p in t.transformer.parameters() if p.grad is not None])
            return update(phase, groups, losses)

        monkeypatch.setattr(t, "update", capture)
        t.fit()
    assert grads["flag"].norm() > 0
    torch.testing.assert_close(grads["launcher"], grads["flag"], rtol=1e-5, atol=1e-8)
