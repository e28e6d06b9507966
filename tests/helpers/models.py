"""Tiny models on the `tiny` presets, the tiny text-to-video pipeline, and test doubles of the MaskGit model."""

from __future__ import annotations

import torch

from magvit2 import VideoTokenizer, preset_config
from maskgit import MaskGitConfig, MaskGitTransformer, PipelineDefaults, TextToVideoPipeline, TinyTextEncoder
from maskgit.presets import maskgit_preset

TEXT_DIM = 16  # the width of the TinyTextEncoder embeddings the tiny models read


def tiny_maskgit_config(**overrides) -> MaskGitConfig:
    """The `tiny` preset transformer over 64 codes on a (2, 4, 4) grid reading TEXT_DIM-wide text; keyword
    overrides (any config field, the preset's too)."""
    return MaskGitConfig(**{"codebook_size": 64, "latent_shape": (2, 4, 4), "text_dim": TEXT_DIM,
                            **maskgit_preset("tiny"), **overrides})


def tiny_transformer() -> MaskGitTransformer:
    """The `tiny` preset transformer over 16 codes on a (2, 2, 2) grid with 8-wide text (train mode); seeds torch's
    global RNG with 0."""
    torch.manual_seed(0)
    return MaskGitTransformer(tiny_maskgit_config(codebook_size=16, latent_shape=(2, 2, 2), text_dim=8))


def build_pipeline(codebook_size=64, seed=0, **defaults) -> TextToVideoPipeline:
    """The tiny pipeline: the `tiny` tokenizer (16x16, 5 frames -> 3x8x8 codes of 64), TinyTextEncoder(TEXT_DIM) and
    the `tiny` transformer, 4 sampling steps; `defaults` override `PipelineDefaults`. The global RNG is untouched."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        tokenizer = VideoTokenizer(preset_config("tiny"))
        encoder = TinyTextEncoder(dim=TEXT_DIM)
        transformer = MaskGitTransformer(tiny_maskgit_config(codebook_size=codebook_size,
                                                             latent_shape=tokenizer.latent_shape(5)))
    return TextToVideoPipeline(tokenizer, encoder, transformer, PipelineDefaults(**{"num_inference_steps": 4,
                                                                                   **defaults}))


def gen(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed`."""
    return torch.Generator().manual_seed(seed)


class FakeModel:
    """Fixed logits table (n, V) + an optional perturbation; records what it was called with."""

    def __init__(self, config: MaskGitConfig, perturb=None):
        self.config = config
        gen = torch.Generator().manual_seed(0)
        self.table = torch.randn(config.seq_len, config.codebook_size, generator=gen)
        self.perturb = perturb
        self.calls = []

    def __call__(self, inputs, text, drop_text=None, self_cond=None, *, grid=None, return_embeddings=False):
        self.calls.append({"inputs": inputs.clone(), "drop_text": drop_text})
        logits = self.table[: inputs.shape[1]].expand(inputs.shape[0], -1, -1).clone()
        if self.perturb is not None:
            logits = self.perturb(inputs, logits)
        return (logits,)


def codes_and_text(b=8, n=32, seed=0):
    """Random codes (b, n) in [0, 64) and the TinyTextEncoder(TEXT_DIM) embeddings of b distinct prompts."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 64, (b, n), generator=gen)
    text = TinyTextEncoder(dim=TEXT_DIM).encode([f"prompt number {i}" for i in range(b)])
    return codes, text
