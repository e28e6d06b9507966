"""Named transformer sizes: partial `MaskGitConfig` dicts (architecture only).

codebook_size, latent_shape and text_dim are not here: they always come from the tokenizer, the codes and the text
encoder. Training settings (condition dropout, label smoothing, optimiser, ...) belong to the trainer's recipes.
"""

from __future__ import annotations

import copy
from typing import Any

# position_encoding "both" (learned tables + axial rotary) in every preset but tiny: at the demo's 900 updates it raised
# prompted-object accuracy on two seeds and on a second object set (docs/experiments.md, wave 4); tiny keeps the
# MaskGitConfig default "learned" (the format every saved folder without the key was trained with)
# text_adaptive_norm (the pooled caption also scales every RMSNorm, DiT's adaLN) in every preset but tiny: at the
# demo's 900 updates it raised prompted-digit accuracy from 53% to 73% (seen) and 50% to 64% (held-out pairs) over
# two seeds at the same step cost, and held on the shapes set (docs/experiments.md, wave 6)
MASKGIT_PRESETS: dict[str, dict[str, Any]] = {
    # seconds-long runs for tests: a 2-block model
    "tiny": {"dim": 32, "depth": 2, "heads": 2, "dim_head": 16, "ff_mult": 2},
    # the CPU demo (make demo): dim 128 x depth 4, 2.48M parameters, ~0.41 s/update at batch 16 on 2 cores
    "demo": {"dim": 128, "depth": 4, "heads": 4, "dim_head": 32, "ff_mult": 4, "position_encoding": "both",
             "text_adaptive_norm": True},
    # one GPU: a BERT-base-sized 12 x 768 model (MaskGIT / MAGVIT recipe)
    "base": {"dim": 768, "depth": 12, "heads": 12, "dim_head": 64, "ff_mult": 4, "position_encoding": "both",
             "text_adaptive_norm": True},
    # MAGVIT-v2-sized (24 x 1024); multi-GPU
    "paper": {"dim": 1024, "depth": 24, "heads": 16, "dim_head": 64, "ff_mult": 4, "position_encoding": "both",
              "text_adaptive_norm": True},
}


def maskgit_preset(name: str) -> dict[str, Any]:
    """A copy of `MASKGIT_PRESETS[name]`; ValueError naming the known presets for any other name."""
    if name not in MASKGIT_PRESETS:
        raise ValueError(f"unknown maskgit preset {name!r}; known presets: {', '.join(MASKGIT_PRESETS)}")
    return copy.deepcopy(MASKGIT_PRESETS[name])
