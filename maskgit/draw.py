"""Drawing tokens from MaskGit logits, shared by the decoding steps (`maskgit.sampler`) and the refinement rounds
(`maskgit.refine`): top-k / top-p filtering, categorical draws through the Gumbel-max race, and uniforms per row
from one generator or a list of them."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from magvit2.torch_utils import uniform

Generators = torch.Generator | Sequence[torch.Generator]  # one for the batch, or one per row (diffusers' lists)


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Sets logits outside the top-k and outside the top-p nucleus to -inf (the best token is always kept).
    (..., V) -> (..., V)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        remove = probs.cumsum(dim=-1) - probs >= top_p  # mass before this token already reaches top_p
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def _sample_categorical(logits: torch.Tensor, temperature: float, generator: Generators
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, n, V) logits -> sampled ids (B, n) and their log-probabilities (B, n) under the sampling distribution.
    A list of generators draws row b from generator b (as the row alone would with that generator)."""
    if temperature <= 0:  # greedy
        logp = logits.log_softmax(dim=-1)
        ids = logp.argmax(dim=-1)
    else:
        logp = (logits / temperature).log_softmax(dim=-1)
        rows = [(logp, generator)] if isinstance(generator, torch.Generator) else \
            [(logp[b : b + 1], g) for b, g in enumerate(generator)]
        ids = torch.cat([_gumbel_max(lp, g) for lp, g in rows])
    return ids, logp.gather(-1, ids[..., None]).squeeze(-1)


def _gumbel_max(logp: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per position from (b, n, V) log-probabilities: argmax(log p + Gumbel noise), the Gumbel noise from one
    uniform per code. The same race `torch.multinomial` runs with exponential draws (a small change of one logit
    rarely changes the winner, so bf16 and fp32 draw alike), at less than half its CPU cost; an inverse CDF is cheaper
    still but a rounding error anywhere below a code's cumulative position moves the draw. Ids of probability 0 are
    never drawn. -> (b, n) long."""
    u = uniform(tuple(logp.shape), generator, logp.device).clamp_(1e-20, 1.0 - 1e-7)
    return (logp - u.log_().neg_().log_()).argmax(dim=-1)


def draw_tokens(logits: Sequence[torch.Tensor], temperature: float, top_k: int | None, top_p: float | None,
                 generator: Generators, current: Sequence[torch.Tensor] | None = None
                 ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
    """Draws one sub-id per factor from (B, n, V_k) logits. Returns the sub-ids, their summed log-probability
    (B, n) under the sampling distribution and, when `current` sub-ids are given, theirs under the same one."""
    sub_ids, log_conf = [], 0.0
    log_current = None if current is None else 0.0
    for k, lg in enumerate(logits):
        lg = filter_logits(lg, top_k, top_p)
        ids, logp = _sample_categorical(lg, temperature, generator)
        sub_ids.append(ids)
        log_conf = log_conf + logp
        if current is not None:
            full = lg.log_softmax(dim=-1) if temperature <= 0 else (lg / temperature).log_softmax(dim=-1)
            log_current = log_current + full.gather(-1, current[k][..., None]).squeeze(-1)
    return sub_ids, log_conf, log_current


def uniform_rows(shape: tuple[int, int], generator: Generators, device: torch.device) -> torch.Tensor:
    """U[0, 1) of `shape` (B, n); with a list of generators, row b from generator b."""
    if isinstance(generator, torch.Generator):
        return uniform(shape, generator, device)
    return torch.cat([uniform((1, *shape[1:]), g, device) for g in generator])
