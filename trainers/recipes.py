"""Training recipes per preset: partial train-config dicts (steps, batch, learning rates, loss settings). A preset
name picks an architecture (`magvit2.presets` / `maskgit.presets`) and its recipe together; a YAML file and flags
override them (`trainers.configs.build_config`)."""

from __future__ import annotations

from typing import Any

TOKENIZER_RECIPES: dict[str, dict[str, Any]] = {
    # seconds-long runs for tests: every mechanism on (GAN from step 2, R1, LeCam, EMA from step 0)
    "tiny": {
        "data": {"num_frames": 5, "batch_size": 2, "val_clips": 4, "val_fraction": 0.25, "num_workers": 0},
        "run": {"max_steps": 20, "log_every": 1, "val_every": 10, "checkpoint_every": 5},
        "ema": {"beta": 0.9, "update_after_step": 0},
        "gen_optim": {"lr": 1e-3, "warmup_steps": 2},
        "disc_optim": {"lr": 1e-3, "warmup_steps": 2},
        "disc_start_step": 2,
        "loss": {"r1_interval": 2, "temporal_window_lengths": [2]},
    },
    # the CPU demo (make demo): short clips, high LR, GAN late and light
    "demo": {
        "data": {"num_frames": 9, "batch_size": 8, "val_clips": 36, "val_fraction": 0.0, "num_workers": 0},
        # bf16 autocast where the CPU computes in bf16 (AMX / AVX512-BF16: ~1.7x the clip updates per minute), fp32
        # elsewhere: in stage one's 4.2 demo minutes, +0.3 / +0.7 / +1.0 dB held-out PSNR on three pairs (two seeds, a
        # second real-video set; docs/experiments.md, wave 11)
        "run": {"max_steps": 600, "log_every": 10, "val_every": 200, "checkpoint_every": 200,
                "mixed_precision": "auto"},
        "ema": {"beta": 0.99, "update_after_step": 50},
        # lr 2.5e-4, not 1e-3 (waves 8-9): held-out PSNR +1.3 to +2.3 dB in all four paired runs (two demo seeds, one
        # by steps, a second real-video set); prompt following a wash over four MaskGit pairs (docs/experiments.md)
        "gen_optim": {"lr": 2.5e-4, "warmup_steps": 50, "schedule": "cosine", "min_lr_ratio": 0.05},
        "disc_optim": {"lr": 2e-4, "warmup_steps": 50},
        "disc_start_step": 100_000,
        # L2, not L1 (wave 30: L1 lost 0.76 dB held-out PSNR by steps; 0.77 / 1.22 dB after the frame phase, two seeds)
        "loss": {"recon_loss": "l2"},
    },
    # one GPU
    "base": {
        "data": {"num_frames": 17, "batch_size": 8},
        "run": {"max_steps": 200_000, "val_every": 2000, "checkpoint_every": 2000},
        "ema": {"beta": 0.999, "update_after_step": 1000},
        "gen_optim": {"lr": 1e-4, "warmup_steps": 2000, "schedule": "cosine"},
        "disc_optim": {"lr": 1e-4, "warmup_steps": 2000},
        "disc_start_step": 20_000,
    },
    # the seed's README model and trainer settings (magvit2-pytorch: batch 4, 8 accumulated micro-batches, lr 2e-5)
    "seed": {
        "data": {"num_frames": 17, "batch_size": 4, "num_workers": 4},
        "grad_accum": 8,
        "run": {"max_steps": 200_000, "val_every": 2000, "checkpoint_every": 2000},
        "ema": {"beta": 0.999, "update_after_step": 1000},
        "gen_optim": {"lr": 2e-5, "warmup_steps": 1000},
        "disc_optim": {"lr": 2e-5, "warmup_steps": 1000},
        "disc_start_step": 20_000,
    },
    # MAGVIT-v2-style; multi-GPU with accelerate launch
    "paper": {
        "data": {"num_frames": 17, "batch_size": 4},
        "run": {"max_steps": 500_000, "val_every": 5000, "checkpoint_every": 5000},
        "ema": {"beta": 0.999, "update_after_step": 1000},
        "gen_optim": {"lr": 1e-4, "warmup_steps": 5000, "schedule": "cosine", "betas": [0.0, 0.99]},
        "disc_optim": {"lr": 1e-4, "warmup_steps": 5000, "betas": [0.0, 0.99]},
        "disc_start_step": 50_000,
        "loss": {"temporal_window_lengths": [4, 8], "perceptual_weight": 0.0},
    },
}

# Stage two: partial `MaskGitTrainConfig` dicts; the transformer sizes are in maskgit.presets. codebook_size,
# latent_shape and text_dim always come from the tokenizer, the codes and the text encoder.
MASKGIT_RECIPES: dict[str, dict[str, Any]] = {
    # seconds-long runs for tests: a 2-block model, the test-only hash text encoder, EMA from step 0
    "tiny": {
        "text_encoder": "tiny:32",
        "data": {"num_frames": 5, "batch_size": 4, "val_clips": 4, "val_fraction": 0.25, "hflip": False,
                 "include_images": False, "num_workers": 0},
        "run": {"max_steps": 20, "log_every": 1, "val_every": 10, "checkpoint_every": 5},
        "ema": {"beta": 0.9, "update_after_step": 0},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "schedule": "cosine"},
        "pipeline": {"num_inference_steps": 4, "guidance_scale": 2.0},
    },
    # the CPU demo (make demo): 3x8x8 = 192 tokens of the demo tokenizer's 1000 FSQ codes, 4800 captioned
    # moving-digit clips (1200 before wave 13), the bundled MiniLM text encoder. dim 128 x depth 4 (2.48M params) at
    # batch 16 runs ~0.33 s/update on 2 cores (1,138 updates, the step cap, in the demo's 6.3 minutes, wave 12)
    "demo": {
        "cond_drop_prob": 0.1,
        # 40% of the rows mask one whole latent frame, the others given (the state the worst-frame rounds redraw
        # from). A quarter (wave 14): frame consistency +5.9 / +11.6 / +8.3 points seen and +12.6 / +12.5 / +13.7
        # held-out on two digit seeds and a shapes model. 0.4 against 0.25 at lr 5e-3 (wave 17, 400 videos per model):
        # held-out consistency +4.4 / +11.9 / +14.4 points on three digit stage ones and +21.2 on 4,800 shape clips,
        # lower validation loss on the digits; on 1,200 shape clips -6.2 and held-out accuracy -10: for a set that
        # small, train with `frame_mask_prob: 0.25` in a --config YAML (docs/experiments.md)
        "frame_mask_prob": 0.4,
        "text_encoder": "default",
        "data": {"num_frames": 9, "batch_size": 16, "val_clips": 64, "val_fraction": 0.05, "hflip": False,
                 "include_images": False, "num_workers": 0},
        "run": {"max_steps": 1300, "log_every": 10, "val_every": 250, "checkpoint_every": 250},
        "ema": {"beta": 0.995, "update_after_step": 100},
        # lr 2e-3 vs 1e-3 in the 7-minute demo: seen-prompt digit accuracy 42.5% vs 34.2% (120 videos each); 5e-3 vs
        # 2e-3 on 4,800 clips with the whole-frame masks (wave 14, two seeds): frame consistency 71.7 / 78.3% -> 92.5 /
        # 86.7% seen and 43.8 / 42.5% -> 73.8 / 71.2% held-out, held-out digit +18.8 / +6.2 points, lower validation
        # loss; on the 1,200-clip shapes set within noise (3e-3 lies between); 8e-3 and weight decay 0.1 no better
        # (wave 15: a gain at one digit seed, a wash or a loss at the other, split on the shapes) (docs/experiments.md)
        "optim": {"lr": 5e-3, "warmup_steps": 100, "schedule": "cosine", "min_lr_ratio": 0.05, "betas": [0.9, 0.98]},
        # 48 model passes per video (12 before wave 6: frame consistency on held-out prompts 4-6% -> 11-15%), spent
        # since wave 7 as 32 decoding steps + 16 refinement rounds: against 48 plain steps on three digit models,
        # +5.3 / +5.4 points of seen / held-out digit accuracy and +3.9 / +1.2 of frame consistency, same time;
        # since wave 12 each round redraws the latent frame the model finds least likely given the others: against
        # 16 rounds of 12.5% of the tokens, seen-prompt frame consistency +17.5 / +13.3 / +10.0 points on two demo
        # models and a shapes model, held-out pairs within noise; since wave 13 guidance falls from 3 to 2 over the
        # steps (the rounds at 2): seen-prompt frame consistency +5.0 / +16.7 / +4.2 / +10.8 points on two digit
        # models (one at two sampling seeds) and a shapes model, held-out pairs a wash; since wave 16 the codes are
        # drawn at temperature 0.7: frame consistency seen +1.3 / +3.7 / +6.6 / -0.8 points and held-out +4.4 / +8.1 /
        # +5.0 / -1.2 on two digit models (400 videos each) and two shapes models (200), digit accuracy and the spread
        # between a prompt's videos unchanged (docs/experiments.md). Best of two decodes (`best_of: 2`, wave 22): seen
        # consistency +3.9 points over the six recipe MaskGits at the same model, but its second decode's minutes,
        # taken from the MaskGit's (compiled: 1.10x per update in the trainer, not the bare 1.36x), left it 838
        # updates instead of 1,021 in the fresh-clone demo: not adopted
        "pipeline": {"num_inference_steps": 32, "refine_steps": 16, "refine_unit": "worst_frame",
                     "guidance_scale": [3.0, 2.0], "temperature": 0.7},
    },
    # one GPU (MaskGIT / MAGVIT recipe: AdamW (0.9, 0.96), wd 0.045, label smoothing 0.1, 5k warmup, cosine)
    "base": {
        "cond_drop_prob": 0.1,
        "label_smoothing": 0.1,
        "text_encoder": "default",
        "data": {"num_frames": 17, "batch_size": 32, "val_clips": 256, "hflip": False,
                 "include_images": False},
        "run": {"max_steps": 300_000, "log_every": 50, "val_every": 5000,
                "checkpoint_every": 5000},
        "ema": {"beta": 0.9999, "update_after_step": 1000},
        "optim": {"lr": 1e-4, "warmup_steps": 5000, "schedule": "cosine", "betas": [0.9, 0.96],
                  "weight_decay": 0.045},
        "pipeline": {"num_inference_steps": 12, "guidance_scale": 3.0},
    },
    # MAGVIT-v2-sized (24 x 1024); multi-GPU with accelerate launch (batch is per GPU)
    "paper": {
        "cond_drop_prob": 0.1,
        "label_smoothing": 0.1,
        "text_encoder": "default",
        "data": {"num_frames": 17, "batch_size": 32, "val_clips": 512, "hflip": False,
                 "include_images": False},
        "run": {"max_steps": 1_000_000, "log_every": 100, "val_every": 10_000,
                "checkpoint_every": 10_000},
        "ema": {"beta": 0.9999, "update_after_step": 1000},
        "optim": {"lr": 1e-4, "warmup_steps": 5000, "schedule": "cosine", "betas": [0.9, 0.96],
                  "weight_decay": 0.045},
        "pipeline": {"num_inference_steps": 12, "guidance_scale": 3.0},
    },
}
