"""The seed's (magvit2-pytorch) Python usage, as its README shows it, on our package: `magvit2.VideoTokenizerTrainer`,
`.train()`, `.ema_tokenizer`, `tok(video, return_recon=True)`, `use_wandb_tracking` + `.trackers(...)`. Only sizes
shrink for CPU (tiny dims, 32x32, a few steps on a generated folder of clips)."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
import torch

from trainers.logging import read_metrics

SEED_LAYERS = (
    'residual',
    'compress_space',
    ('consecutive_residual', 2),
    'compress_space',
    ('consecutive_residual', 2),
    'linear_attend_space',
    'compress_space',
    ('consecutive_residual', 2),
    'attend_space',
    'compress_time',
    ('consecutive_residual', 2),
    'compress_time',
    ('consecutive_residual', 2),
    'attend_time',
)


@pytest.fixture
def clip_folder(make_clip, tmp_path):
    for i, photo in enumerate(("astronaut", "coffee", "chelsea", "rocket")):
        make_clip(f"media/{i}.mp4", num_frames=9, size=(40, 40), photo=photo)
    return tmp_path / "media"


def test_import_magvit2_stays_light():
    code = "import sys, magvit2; assert 'trainers' not in sys.modules, 'trainers imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_seed_readme_usage_block(clip_folder, tmp_path, one_thread):
    from magvit2 import (
        VideoTokenizer,
        VideoTokenizerTrainer,
    )

    torch.manual_seed(0)
    tokenizer = VideoTokenizer(
        image_size = 32,        # seed: 128
        init_dim = 8,           # seed: 64
        max_dim = 32,           # seed: 512
        codebook_size = 1024,
        attn_dim_head = 8, attn_heads = 2, linear_attn_dim_head = 8, linear_attn_heads = 2,  # CPU-sized
        layers = SEED_LAYERS,
    )
    before = {k: v.clone() for k, v in tokenizer.state_dict().items()}

    trainer = VideoTokenizerTrainer(
        tokenizer,
        dataset_folder = str(clip_folder),
        dataset_type = 'videos',
        batch_size = 2,             # seed: 4
        grad_accum_every = 2,       # seed: 8
        learning_rate = 2e-5,
        num_train_steps = 3,        # seed: 1_000_000
        num_frames = 5,             # seed default 17
        valid_frac = 0.25,
        discr_start_after_step = 1,
        ema_kwargs = dict(beta = 0.9, update_after_step = 0),
        run_dir = tmp_path / "run", num_workers = 0,
    )

    trainer.train()

    ema_tokenizer = trainer.ema_tokenizer

    video = torch.randn(1, 3, 17, 32, 32)

    codes = ema_tokenizer.tokenize(video)
    assert codes.shape == (1, 5, 4, 4)

    decoded_video = ema_tokenizer.decode_from_code_indices(codes)

    assert torch.allclose(
        decoded_video,
        ema_tokenizer(video, return_recon = True),
        atol = 1e-5,
    )

    # one loop: ours, with the seed's keywords mapped onto the run config
    cfg = trainer.config
    assert (cfg.run.max_steps, cfg.data.batch_size, cfg.grad_accum) == (3, 2, 2)
    assert cfg.gen_optim.lr == cfg.disc_optim.lr == 2e-5
    assert cfg.data.include_images is False and cfg.disc_start_step == 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["step"] == 3
    assert (tmp_path / "run" / "tokenizer" / "config.json").is_file()
    assert read_metrics(tmp_path / "run" / "metrics.jsonl", kind="val")[-1]["psnr_db"] > 0
    # the tokenizer passed in received the trained weights
    after = tokenizer.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    for k, v in trainer.tokenizer.state_dict().items():
        assert torch.equal(after[k].cpu(), v.cpu())


def test_return_codes_and_recon():
    from magvit2 import VideoTokenizer

    tok = VideoTokenizer(image_size=16, init_dim=8, max_dim=16, codebook_size=2**6,
                         layers=("residual", "compress_space", "compress_time")).eval()
    video = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    codes = tok(video, return_codes=True)
    assert torch.equal(codes, tok.tokenize(video))
    both_codes, recon = tok(video, return_codes=True, return_recon=True)
    assert torch.equal(both_codes, codes)
    assert torch.allclose(recon, tok(video))
    assert torch.allclose(tok(video, return_recon=True), tok(video))


def test_trackers_with_wandb(clip_folder, tmp_path, monkeypatch, one_thread):
    import magvit2

    calls = []

    class FakeRun:
        def log(self, values, step):
            calls.append(("log", step))

        def finish(self):
            calls.append(("finish",))

    fake = type(sys)("wandb")
    fake.init = lambda **kw: calls.append(("init", kw)) or FakeRun()
    fake.config = types.SimpleNamespace(update=lambda values, **kw: calls.append(("config", values)))
    fake.Video = lambda path, **kw: ("video", path)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    tok = magvit2.VideoTokenizer(image_size=16, init_dim=8, max_dim=16, codebook_size=2**6,
                                 layers=("residual", "compress_space", "compress_time"))
    trainer = magvit2.VideoTokenizerTrainer(tok, dataset_folder=clip_folder, batch_size=2, num_train_steps=2,
                                            num_frames=5, use_wandb_tracking=True, preset="tiny",
                                            run_dir=tmp_path / "run")
    with trainer.trackers(project_name="magvit2", run_name="baseline"):
        trainer.train()
    inits = [c[1] for c in calls if c[0] == "init"]
    assert len(inits) == 1 and inits[0]["project"] == "magvit2" and inits[0]["name"] == "baseline"
    assert any(c[0] == "log" for c in calls) and calls[-1] == ("finish",)
    assert next(c[1] for c in calls if c[0] == "config")["preset"] == "tiny"  # the run's config, flattened
    assert read_metrics(tmp_path / "run" / "metrics.jsonl", kind="train")  # always written


def test_seed_keywords_refused_or_mapped(clip_folder, tmp_path):
    import magvit2

    tok = magvit2.VideoTokenizer(image_size=16, init_dim=8, max_dim=16, codebook_size=2**6,
                                 layers=("residual", "compress_space", "compress_time"))
    with pytest.raises(ValueError, match="dataset="):
        magvit2.VideoTokenizerTrainer(tok, dataset=object(), batch_size=2, num_train_steps=1)
    with pytest.raises(TypeError, match="bogus"):
        magvit2.VideoTokenizerTrainer(tok, dataset_folder=clip_folder, bogus=1)
    with pytest.raises(ValueError, match="use_wandb_tracking"):
        trainer = magvit2.VideoTokenizerTrainer(tok, dataset_folder=clip_folder, batch_size=2, num_train_steps=1,
                                                num_frames=5, preset="tiny", run_dir=tmp_path / "r")
        with trainer.trackers("p"):
            pass


def test_maskgit_trainer_exported():
    import magvit2
    from trainers.maskgit_trainer import MaskGitTrainer

    assert magvit2.MaskGitTrainer is MaskGitTrainer
