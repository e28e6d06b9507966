"""The refinement rounds after MaskGIT's last step (`maskgit.sampler` module docstring, "Refinement"): what a round
re-masks (`REFINE_UNITS`: a random share of the tokens, one random latent frame, or the least likely one) and the
rounds themselves (redraw given the rest, keep the more likely token)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .draw import Generators, draw_tokens, uniform_rows
from .guidance import LogitsFn, guided_logits
from .transformer import merge_codes, split_codes

# what a refinement round re-masks: a random share of the sampled tokens, one latent frame's, or the least likely one's
REFINE_UNITS = ("token", "frame", "worst_frame")


def frame_pick(editable: torch.Tensor, frame_tokens: int, generator: Generators) -> torch.Tensor:
    """(B, n) bool: every editable position of one latent frame per row, the frame drawn uniformly among the row's
    frames that hold an editable position (none for a row without any)."""
    b, n = editable.shape
    has = editable.view(b, n // frame_tokens, frame_tokens).any(dim=-1)  # (b, frames)
    count = has.sum(dim=-1, keepdim=True)  # (b, 1)
    target = (uniform_rows((b, 1), generator, editable.device) * count).floor().clamp(max=count - 1)  # k-th such frame
    chosen = (has.cumsum(dim=-1) > target) & has  # (b, frames): the k-th frame and later ones with positions
    first = chosen & (chosen.cumsum(dim=-1) == 1)  # (b, frames): only the k-th
    return first.repeat_interleave(frame_tokens, dim=-1) & editable


def refine(logits_fn: LogitsFn, codes: torch.Tensor, picks: Callable[[], torch.Tensor], rounds: int, scale: float,
            vocab_sizes: tuple[int, ...], mask_id: int, temperature: float, top_k: int | None, top_p: float | None,
            generator: Generators, observe: Callable[[torch.Tensor, torch.Tensor], None] | None = None
            ) -> torch.Tensor:
    """The refinement rounds of the module docstring. codes (B, n) all filled; picks() -> (B, n) bool: the sampled
    positions one round re-masks; observe(pick, logp), if given, sees after each round the (B, n) log-probability
    of every token under that round's distribution (the kept redraw's or the unchanged token's)."""
    for _ in range(rounds):
        pick = picks()  # (b, n)
        if not bool(pick.any()):
            continue
        logits = guided_logits(logits_fn, torch.where(pick, mask_id, codes), scale, vocab_sizes)
        current = split_codes(codes, vocab_sizes, mask_id)
        sub_ids, log_new, log_current = draw_tokens(logits, temperature, top_k, top_p, generator, current)
        better = pick & (log_new > log_current)
        codes = torch.where(better, merge_codes(sub_ids, vocab_sizes, mask_id), codes)
        if observe is not None:
            observe(pick, torch.where(better, log_new, log_current))
    return codes


class WorstFrame:
    """The frame choice of `refine_unit="worst_frame"` (module docstring): `picks()` -> (B, n) bool, every editable
    position of one latent frame per row; `observe(pick, logp)` records the picked frame's mean log-probability
    after the round. editable (B, n) bool: the sampled positions (primes are never redrawn or scored)."""

    def __init__(self, editable: torch.Tensor, frame_tokens: int):
        b, n = editable.shape
        self.editable, self.frame_tokens = editable, frame_tokens
        self.has = editable.view(b, n // frame_tokens, frame_tokens).any(dim=-1)  # (b, F)
        # -inf: not scored yet, visited first (in frame order); +inf: nothing to redraw there
        self.score = torch.full(self.has.shape, float("-inf"), device=editable.device).masked_fill(~self.has,
                                                                                                   float("inf"))
        self.frame_ids = torch.arange(self.has.shape[1], device=editable.device)  # (F,)
        self.last = torch.full((b, 1), -1, dtype=torch.long, device=editable.device)  # the frame redrawn last
        self.chosen = torch.zeros(b, dtype=torch.long, device=editable.device)  # this round's frame per row

    def picks(self) -> torch.Tensor:
        others = (self.frame_ids == self.last) & (self.has.sum(dim=-1, keepdim=True) > 1)
        self.chosen = self.score.masked_fill(others, float("inf")).argmin(dim=-1)  # (b,)
        self.last = self.chosen[:, None]
        one_hot = self.frame_ids == self.chosen[:, None]  # (b, F)
        return one_hot.repeat_interleave(self.frame_tokens, dim=-1) & self.editable

    def observe(self, pick: torch.Tensor, logp: torch.Tensor) -> None:
        count = pick.sum(dim=-1)  # (b,)
        mean = torch.where(pick, logp, 0.0).sum(dim=-1) / count.clamp(min=1)
        rows = torch.arange(pick.shape[0], device=pick.device)
        self.score[rows, self.chosen] = torch.where(count > 0, mean, self.score[rows, self.chosen])
