"""Named tokenizer sizes in one registry (DiT-style). Values are `TokenizerConfig` keyword arguments."""

from __future__ import annotations

from typing import Any

from magvit2.config import TokenizerConfig
from magvit2.open_magvit2_config import OpenMagvit2Config

TOKENIZER_PRESETS: dict[str, dict[str, Any]] = {
    # tests: 16x16 frames, 1 + 2k frames -> 1 + k latent frames of 8x8, 64 codes; every layer kind once
    "tiny": dict(
        image_size=16, init_dim=8, max_dim=16, codebook_size=2**6,
        layers=("residual", "compress_space", "attend_space", "compress_time", "attend_time"),
        input_conv_kernel_size=(3, 3, 3), attn_heads=2, attn_dim_head=8, norm_groups=4, ff_mult=2,
    ),
    # the CPU demo: 32x32, 9 frames -> 3 x 8 x 8 codes (4x space, 4x time), FSQ with 1000 codes; sized for minutes
    # on 2 cores (~0.45 s per update of 8 clips of 9 frames), all compute at <= 16x16 after the stem. FSQ, not LFQ:
    # in a 5-minute CPU budget LFQ learned digit shapes far more slowly (benchmarks/quantizer_budget.py). Levels
    # (8, 5, 5, 5), not (5, 5, 5, 5): the 625 codes fill 64-82% of the codebook at the same PSNR, but the MaskGits on
    # them (two training seeds on each of three stage ones) followed prompts less well: held-out frame consistency
    # 64.8 against 69.1% on average, both seeds of one stage one -12 / -24 points (waves 19-20, docs/experiments.md)
    "demo": dict(
        image_size=32, init_dim=16, max_dim=64, use_fsq=True, fsq_levels=(8, 5, 5, 5),
        layers=("compress_space", "residual", "compress_space", "residual", "compress_time", "residual",
                "compress_time", "residual"),
        input_conv_kernel_size=(3, 3, 3), norm_groups=8,
    ),
    # a single-GPU model: 128x128, 17 frames -> 5 x 16 x 16 codes, 2**14 codes
    "base": dict(
        image_size=128, init_dim=64, max_dim=256, codebook_size=2**14,
        layers=("residual", "compress_space", ("consecutive_residual", 2), "compress_space",
                ("consecutive_residual", 2), "linear_attend_space", "compress_space", ("consecutive_residual", 2),
                "attend_space", "compress_time", ("consecutive_residual", 2), "compress_time",
                ("consecutive_residual", 2), "attend_time"),
    ),
    # the seed's README model (magvit2-pytorch 0.5.1) at the seed's block sizes (block_style="seed": one conv per
    # residual, light resamplers): 117.8M parameters like the seed's; 17 x 128 x 128 -> 5 x 16 x 16 codes of 2**10
    "seed": dict(
        image_size=128, init_dim=64, max_dim=512, codebook_size=2**10, block_style="seed",
        layers=("residual", "compress_space", ("consecutive_residual", 2), "compress_space",
                ("consecutive_residual", 2), "linear_attend_space", "compress_space", ("consecutive_residual", 2),
                "attend_space", "compress_time", ("consecutive_residual", 2), "compress_time",
                ("consecutive_residual", 2), "attend_time"),
    ),
    # MAGVIT-v2 (arXiv 2310.05737): 128x128, 17 frames -> 5 x 16 x 16, 2**18 codes, 8x space, 4x time
    "paper": dict(
        image_size=128, init_dim=128, max_dim=512, codebook_size=2**18,
        layers=(("consecutive_residual", 4), "compress_space", ("consecutive_residual", 4), "compress_space",
                ("consecutive_residual", 4), "compress_time", "compress_space", ("consecutive_residual", 4),
                "compress_time", ("consecutive_residual", 4), "attend_space", "attend_time"),
        lfq_entropy_loss_weight=0.1, lfq_commitment_loss_weight=0.25,
    ),
}


def preset_config(name: str, **overrides: Any) -> TokenizerConfig:
    """The `TokenizerConfig` of a named preset, with keyword overrides."""
    if name not in TOKENIZER_PRESETS:
        raise ValueError(f"unknown tokenizer preset {name!r}; expected one of {sorted(TOKENIZER_PRESETS)}")
    return TokenizerConfig(**{**TOKENIZER_PRESETS[name], **overrides})


# Open-MAGVIT2 (TencentARC SEED-Voken) video tokenizers, a different architecture (`magvit2.open_magvit2`) used to
# load their released weights (`magvit2-convert open-magvit2 --preset NAME`). Values are `OpenMagvit2Config` keyword
# arguments (their ddconfig under our names). Their image tokenizers are 2D-conv models: no preset here (see README).
OPEN_MAGVIT2_PRESETS: dict[str, dict[str, Any]] = {
    # their released video tokenizer: 17x128x128 -> 5x16x16 codes of 2^18 (4x time, 8x space)
    "video": dict(image_size=128, ch=128, ch_mult=(1, 2, 2, 4), num_res_blocks=4, z_channels=18, codebook_size=2**18),
    # the conversion-test fixture (tests/fixtures/open-magvit2-video-tiny): 17x32x32 -> 5x4x4 codes of 2^18
    "video-tiny": dict(image_size=32, ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, z_channels=18,
                       codebook_size=2**18),
}


def open_magvit2_preset_config(name: str, **overrides: Any) -> OpenMagvit2Config:
    """The `OpenMagvit2Config` of a named Open-MAGVIT2 preset, with keyword overrides."""
    if name not in OPEN_MAGVIT2_PRESETS:
        raise ValueError(f"unknown Open-MAGVIT2 preset {name!r}; expected one of {sorted(OPEN_MAGVIT2_PRESETS)}")
    return OpenMagvit2Config(**{**OPEN_MAGVIT2_PRESETS[name], **overrides})
