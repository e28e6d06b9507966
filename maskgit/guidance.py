"""Classifier-free guidance for the MaskGIT sampler: the scale at each step, guided logits, and the `logits_fn` closure
around a `MaskGitTransformer` (`maskgit.sampler` decodes with them; `frame_scores` scores with them).

Classifier-free guidance (diffusers / aMUSEd / lucidrains convention): `guided = uncond + s * (cond - uncond)` on the
raw logits, before temperature and filtering (the same as on log-softmax: the per-position log-normaliser terms only
shift every logit of a position by one constant, which softmax ignores). s = 1: conditional only (the uncond half is
not computed); s = 0: unconditional; s > 1: guidance. `guidance_scale` may be a float, a `(start, end)` pair for a
linear ramp over the steps (Muse), or a callable of progress s / (S - 1) in [0, 1].

`logits_fn(codes)` contract: codes (B', n) long with [MASK] = `mask_id`; returns a tuple of (B', n, V_k) logits, one
per factor. B' = B means "conditional"; B' = 2B means rows [:B] conditional and rows [B:] unconditional, so the model
runs once per step on a 2B batch. `make_guided_logits_fn` builds such a closure around a `MaskGitTransformer`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .text import TextEmbedding, as_text_embedding

LogitsFn = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
GuidanceScale = float | tuple[float, float] | Callable[[float], float]


def guidance_at(guidance_scale: GuidanceScale, step: int, num_steps: int) -> float:
    """Guidance scale at `step`: constant, linear ramp (start, end) over the steps, or callable(progress)."""
    progress = step / max(num_steps - 1, 1)
    if callable(guidance_scale):
        return float(guidance_scale(progress))
    if isinstance(guidance_scale, (tuple, list)):
        if len(guidance_scale) != 2:
            raise ValueError(f"a guidance ramp is (start, end); got {guidance_scale!r}")
        start, end = guidance_scale
        return float(start + (end - start) * progress)
    return float(guidance_scale)


def check_logits(out: Sequence[torch.Tensor] | torch.Tensor, rows: int, n: int,
                  vocab_sizes: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """Validates logits_fn output; a bare tensor counts as a 1-tuple. Returns the tuple."""
    if isinstance(out, torch.Tensor):
        out = (out,)
    if not isinstance(out, (tuple, list)) or len(out) != len(vocab_sizes):
        raise ValueError(f"logits_fn must return a tuple of {len(vocab_sizes)} tensors (one per factor); got "
                         f"{type(out).__name__} of length {len(out) if isinstance(out, (tuple, list)) else '-'}")
    for lg, v in zip(out, vocab_sizes):
        if tuple(lg.shape) != (rows, n, v):
            raise ValueError(f"logits_fn returned shape {tuple(lg.shape)}; expected {(rows, n, v)}")
    return tuple(out)


def guided_logits(logits_fn: LogitsFn, codes: torch.Tensor, scale: float,
                   vocab_sizes: Sequence[int]) -> list[torch.Tensor]:
    """Float32 logits per factor for `codes` (B, n): conditional only at scale 1, else one 2B pass, guided."""
    b, n = codes.shape
    if scale == 1.0:
        return [lg.float() for lg in check_logits(logits_fn(codes), b, n, vocab_sizes)]
    both = check_logits(logits_fn(torch.cat([codes, codes])), 2 * b, n, vocab_sizes)
    guided = []
    for lg in both:
        cond, uncond = lg.float().chunk(2)
        guided.append(uncond + scale * (cond - uncond))
    return guided


def make_guided_logits_fn(model: torch.nn.Module, text: TextEmbedding | tuple | None,
                          uncond_text: TextEmbedding | tuple | None = None, *, batch_size: int | None = None,
                          grid: Sequence[int] | None = None) -> LogitsFn:
    """A `logits_fn` for `sample` around a `MaskGitTransformer`.

    text: conditional text (b or 1 rows); None = unconditional model. uncond_text: negative prompt for the
    unconditional half (b or 1 rows); None = the learned null embedding. batch_size: B (default text's batch).
    With config.self_condition the closure feeds each call's final hidden states into the next call (so it is
    stateful; build a new one per `sample` call).
    """
    text = None if text is None else as_text_embedding(text)
    b = batch_size or (text.batch_size if text is not None else None)
    if b is None:
        raise ValueError("batch_size is needed when text is None")
    cond = None if text is None else text.expand(b)
    if uncond_text is not None:
        if cond is None:
            raise ValueError("a negative prompt (uncond_text) needs a conditional text as well")
        both = TextEmbedding.cat([cond, as_text_embedding(uncond_text).expand(b)])
        drop = None
    else:
        both = None if cond is None else TextEmbedding.cat([cond, cond])
        drop = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)])
    state: dict[str, torch.Tensor | None] = {"hidden": None}
    self_cond = bool(getattr(model.config, "self_condition", False))

    def logits_fn(codes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rows = codes.shape[0]
        if rows == b:
            ctx, drop_text = cond, None
        elif rows == 2 * b:
            ctx, drop_text = both, None if (drop is None or both is None) else drop.to(codes.device)
        else:
            raise ValueError(f"logits_fn expects {b} (conditional) or {2 * b} (cond + uncond) rows; got {rows}")
        if not self_cond:
            return model(codes, ctx, drop_text, grid=grid)
        prev = state["hidden"]
        if prev is not None and prev.shape[0] != rows:  # the guidance ramp switched between B and 2B rows
            prev = prev[:rows] if prev.shape[0] > rows else prev.repeat(2, 1, 1)
        logits, state["hidden"] = model(codes, ctx, drop_text, prev, grid=grid, return_embeddings=True)
        return logits

    logits_fn.reset = lambda: state.update(hidden=None)  # type: ignore[attr-defined]  # `sample` starts each decode
    return logits_fn
