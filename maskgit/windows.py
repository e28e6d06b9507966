"""Videos longer than the transformer's latent grid, by sliding-window continuation: the first window is sampled as
usual; each later window starts `overlap` latent frames before the end of the previous one, and those frames are
fixed (primed) to the codes already sampled, so consecutive windows join on identical codes. The tokenizer then
decodes the whole code sequence at once (its decoder is causal and takes any number of latent frames).

Caveat: a later window's first latent frame sits at the transformer's time position 0, which in training only ever
held a clip's first frame (encoded alone by the causal tokenizer); continuation quality depends on how well the
model copes with that shift (more overlap gives it more context).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .sampler import Generators, SamplerStep, make_guided_logits_fn, sample


@dataclass(frozen=True)
class Window:
    start: int  # first latent frame of the window in the whole video
    length: int  # latent frames in the window (<= the transformer's)
    primed: int  # leading latent frames fixed to already-sampled codes (0 for the first window)


def default_overlap(window: int) -> int:
    """Half the window (at least 1, at most window - 1)."""
    return max(1, min(window - 1, window // 2))


def plan_windows(total: int, window: int, overlap: int | None = None) -> list[Window]:
    """Windows covering `total` latent frames with at most `window` each, each after the first overlapping the
    previous one by `overlap` latent frames (default `default_overlap(window)`)."""
    if total < 1 or window < 1:
        raise ValueError(f"need total >= 1 and window >= 1 latent frames; got {total}, {window}")
    if total <= window:
        return [Window(0, total, 0)]
    if window < 2:
        raise ValueError(f"a video of {total} latent frames needs windows of at least 2 latent frames to chain; the "
                         f"transformer holds {window}")
    overlap = default_overlap(window) if overlap is None else overlap
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 1 <= overlap < window:
        raise ValueError(f"window_overlap must be an int in [1, {window - 1}] latent frames; got {overlap!r}")
    windows, start = [Window(0, window, 0)], window - overlap
    while start + overlap < total:
        length = min(window, total - start)
        windows.append(Window(start, length, overlap))
        start += window - overlap
    return windows


def sample_windows(transformer: Any, known: torch.Tensor, windows: Sequence[Window], settings: Any, cond: Any,
                   uncond: Any, generators: Generators, make_step: Callable[[int, tuple[int, ...]],
                                                                            Callable[[SamplerStep], None]]
                   ) -> torch.Tensor:
    """MaskGIT decoding window by window, in place: known (b, T', h', w') long, -1 = to sample, anything else fixed
    (primes); each window's sampled codes become the next one's primes. settings: a `PipelineDefaults`; cond /
    uncond: text for b rows; make_step(window index, window grid) -> the sampler's per-step hook. Returns known,
    every position filled with codes in [0, codebook_size)."""
    b, grid = known.shape[0], tuple(known.shape[1:])
    s = settings
    for index, window in enumerate(windows):
        part = (window.length, *grid[1:])
        logits_fn = make_guided_logits_fn(transformer, cond, uncond, batch_size=b, grid=part)
        span = slice(window.start, window.start + window.length)
        known[:, span] = sample(
            logits_fn, b, math.prod(part), generator=generators,
            vocab_sizes=transformer.vocab_sizes, mask_id=transformer.mask_id, num_steps=s.num_inference_steps,
            temperature=s.temperature, choice_temperature=s.choice_temperature, schedule=s.mask_schedule,
            top_k=s.top_k, top_p=s.top_p, guidance_scale=s.guidance_scale,
            known_codes=known[:, span].flatten(1), device=known.device, callback=make_step(index, part),
            order=s.unmask_order, frame_tokens=math.prod(part[1:]), grid=part,
            refine_steps=s.refine_steps,
            refine_ratio=s.refine_ratio, refine_unit=s.refine_unit, refine_temperature=s.refine_temperature,
            refine_guidance_scale=s.refine_guidance_scale, best_of=s.best_of,
        ).view(b, *part)
    return known
