"""Checking what a `TextToVideoPipeline` call is given: prompts, prompt embeddings (diffusers' tensor form too) and
generators (one, one per video, or none)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import torch
from torch import Tensor

from .text import TextEmbedding, as_text_embedding


def fresh_generator() -> torch.Generator:
    """A CPU generator seeded from the OS entropy pool (never from, and never advancing, torch's global RNG)."""
    return torch.Generator().manual_seed(secrets.randbits(63))


def as_generators(generator: torch.Generator | Sequence[torch.Generator] | None, batch_size: int
                  ) -> torch.Generator | list[torch.Generator]:
    """None -> a fresh generator; a generator -> itself (one stream for the batch); a list -> one per video (its
    length must be the number of videos, diffusers' rule)."""
    if generator is None:
        return fresh_generator()
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (list, tuple)) and all(isinstance(g, torch.Generator) for g in generator):
        if len(generator) != batch_size:
            raise ValueError(f"got a list of {len(generator)} generators for {batch_size} videos (prompts x "
                             f"num_videos_per_prompt); pass one generator or a list of {batch_size}")
        return list(generator)
    raise ValueError(f"generator must be a torch.Generator, a list of them (one per video) or None; got "
                     f"{type(generator).__name__}")


def as_prompt_list(prompt: str | Sequence[str], name: str) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else None
    if prompts is None or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"{name} must be a str or a list of str; got {prompt!r:.80}")
    if not prompts:
        raise ValueError(f"{name} is an empty list; pass at least one prompt")
    return prompts


def embedding_from(embeds: TextEmbedding | Tensor | tuple, mask: Tensor | None, name: str) -> TextEmbedding:
    """A `TextEmbedding`, an `(embeds, mask)` pair, or diffusers' float tensor (b, m, d) with an optional attention
    mask (b, m) (1/True = real token; default all real)."""
    if isinstance(embeds, Tensor):
        if embeds.ndim != 3 or not embeds.is_floating_point():
            raise ValueError(f"{name} must be a float tensor (b, m, text_dim); got {embeds.dtype} "
                             f"{tuple(embeds.shape)}")
        if mask is None:
            mask = torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
        elif not isinstance(mask, Tensor) or tuple(mask.shape) != tuple(embeds.shape[:2]):
            raise ValueError(f"the attention mask of {name} must be a tensor {tuple(embeds.shape[:2])}; got "
                             f"{tuple(getattr(mask, 'shape', ())) or type(mask).__name__}")
        mask = mask.to(embeds.device).bool()
        if not bool(mask.any(dim=1).all()):
            raise ValueError(f"every row of {name} needs at least one real token in its attention mask")
        return TextEmbedding(embeds * mask[..., None].to(embeds.dtype), mask)
    if mask is not None:
        raise ValueError(f"an attention mask goes with a tensor {name}; a TextEmbedding carries its own")
    try:
        return as_text_embedding(embeds)
    except ValueError:
        raise ValueError(f"{name} must be a TextEmbedding, an (embeds, mask) pair or a float tensor (b, m, "
                         f"text_dim); got {type(embeds).__name__}") from None


def check_prime_codes(prime_codes: Tensor, hw: tuple[int, int], codebook_size: int) -> None:
    """prime_codes: an integer tensor (b, t0', h', w') with the tokenizer's (h', w') and codes in [0, codebook_size)."""
    h, w = hw
    if (not isinstance(prime_codes, Tensor) or prime_codes.is_floating_point() or prime_codes.dtype == torch.bool
            or prime_codes.ndim != 4):
        raise ValueError(f"prime_codes must be an integer tensor (b, t0', {h}, {w}); got "
                         f"{getattr(prime_codes, 'dtype', type(prime_codes).__name__)} "
                         f"{tuple(getattr(prime_codes, 'shape', ()))}")
    if tuple(prime_codes.shape[2:]) != (h, w):
        raise ValueError(f"prime_codes must have {h}x{w} codes per latent frame; got shape {tuple(prime_codes.shape)}")
    if prime_codes.numel() and (int(prime_codes.min()) < 0 or int(prime_codes.max()) >= codebook_size):
        raise ValueError(f"prime_codes must lie in [0, {codebook_size}); got values in [{int(prime_codes.min())}, "
                         f"{int(prime_codes.max())}]")


def negative_prompt_list(negative_prompt: str | Sequence[str], batch_size: int) -> list[str]:
    """One negative prompt per prompt: a single one is repeated; otherwise the counts must match."""
    negatives = as_prompt_list(negative_prompt, "negative_prompt")
    if len(negatives) == 1:
        negatives = negatives * batch_size
    if len(negatives) != batch_size:
        raise ValueError(f"got {len(negatives)} negative prompts for {batch_size} prompts; pass one or {batch_size}")
    return negatives


def negative_embedding(embeds: TextEmbedding | Tensor | tuple, mask: Tensor | None, batch_size: int
                       ) -> TextEmbedding:
    """negative_prompt_embeds (1 or batch_size rows, any form `embedding_from` takes) -> batch_size rows."""
    uncond = embedding_from(embeds, mask, "negative_prompt_embeds")
    if uncond.batch_size not in (1, batch_size):
        raise ValueError(f"negative_prompt_embeds has {uncond.batch_size} rows for {batch_size} prompts; pass 1 or "
                         f"{batch_size}")
    return uncond.expand(batch_size)


def check_prime_span(prime_codes: Tensor, what: str, latent_frames: int, num_frames: int, batch_size: int) -> None:
    """prime_codes (b, t0', h', w') must fix 1..latent_frames latent frames (of a num_frames clip) for b = 1 or
    batch_size prompts; `what` names the input in the error."""
    t0 = prime_codes.shape[1]
    if not 1 <= t0 <= latent_frames:
        raise ValueError(f"{what} gives {t0} latent frames but the clip has {latent_frames} "
                         f"(num_frames={num_frames}); prime with fewer frames")
    if prime_codes.shape[0] not in (1, batch_size):
        raise ValueError(f"{what} has batch {prime_codes.shape[0]} for {batch_size} prompts; pass 1 or {batch_size}")


def check_frame_size(height: int | None, width: int | None, image_size: Sequence[int]) -> None:
    """height / width (diffusers' keywords), when given, must be the tokenizer's frame size `image_size`."""
    h, w = image_size
    for name, value, want in (("height", height, h), ("width", width, w)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value != want):
            raise ValueError(f"{name}={value!r}: this pipeline generates {h}x{w} frames (height x width; its "
                             f"tokenizer's image_size); leave height/width unset or pass {h} and {w}")
