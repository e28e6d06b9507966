"""Training recipes per preset: partial `TokenizerTrainConfig` dicts (the CLI's --preset picks architecture and
recipe together; a --config YAML and flags override them)."""

from __future__ import annotations

from typing import Any

TOKENIZER_RECIPES: dict[str, dict[str, Any]] = {
    # seconds-long runs for tests: every mechanism on (GAN from step 2, R1, LeCam, EMA from step 0)
    "tiny": {
        "data": {"num_frames": 5, "batch_size": 2, "val_clips": 4, "val_fraction": 0.25},
        "run": {"max_steps": 20, "log_every": 1, "val_every": 10, "checkpoint_every": 5},
        "ema": {"beta": 0.9, "update_after_step": 0},
        "gen_optim": {"lr": 1e-3, "warmup_steps": 2},
        "disc_optim": {"lr": 1e-3, "warmup_steps": 2},
        "disc_start_step": 2,
        "loss": {"r1_interval": 2, "temporal_window_lengths": [2]},
    },
    # the CPU demo (make demo): short clips, high LR, GAN late and light
    "demo": {
        "data": {"num_frames": 9, "batch_size": 8, "val_clips": 36, "val_num_frames": 17, "val_fraction": 0.0},
        "run": {"max_steps": 3000, "log_every": 10, "val_every": 250, "checkpoint_every": 250},
        "ema": {"beta": 0.99, "update_after_step": 50},
        "gen_optim": {"lr": 1e-3, "warmup_steps": 50, "schedule": "cosine", "min_lr_ratio": 0.05},
        "disc_optim": {"lr": 2e-4, "warmup_steps": 50},
        "disc_start_step": 100_000,
        "loss": {"recon_loss": "l2"},
    },
    # one GPU
    "base": {
        "data": {"num_frames": 17, "batch_size": 8, "num_workers": 4},
        "run": {"max_steps": 200_000, "mixed_precision": "bf16", "val_every": 2000, "checkpoint_every": 2000},
        "ema": {"beta": 0.999, "update_after_step": 1000},
        "gen_optim": {"lr": 1e-4, "warmup_steps": 2000, "schedule": "cosine"},
        "disc_optim": {"lr": 1e-4, "warmup_steps": 2000},
        "disc_start_step": 20_000,
    },
    # MAGVIT-v2-style; multi-GPU with accelerate launch
    "paper": {
        "data": {"num_frames": 17, "batch_size": 4, "num_workers": 8},
        "run": {"max_steps": 500_000, "mixed_precision": "bf16", "val_every": 5000, "checkpoint_every": 5000},
        "ema": {"beta": 0.999, "update_after_step": 1000},
        "gen_optim": {"lr": 1e-4, "warmup_steps": 5000, "schedule": "cosine", "betas": [0.0, 0.99]},
        "disc_optim": {"lr": 1e-4, "warmup_steps": 5000, "betas": [0.0, 0.99]},
        "disc_start_step": 50_000,
        "loss": {"temporal_window_lengths": [4, 8], "perceptual_weight": 0.0},
    },
}
