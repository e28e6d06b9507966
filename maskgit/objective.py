"""MaskGit training objective: masked-token cross-entropy with per-sample cosine masking and condition dropout.

Every random draw (mask ratios, masked positions, condition dropout, self-conditioning) comes from the explicit
`torch.Generator`; the global RNG is only used by the model's own `nn.Dropout` layers when `config.dropout > 0`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from magvit2.torch_utils import uniform

from .schedule import sample_mask_ratios, train_num_masked
from .text import TextEmbedding
from .transformer import split_codes


def tube_mask(num_masked: torch.Tensor, grid: tuple[int, int, int], generator: torch.Generator,
              device: torch.device) -> torch.Tensor:
    """Per-sample temporal tubes (Lumos-1): the same random spatial positions masked in every frame of a (t, h, w)
    grid, round(num_masked / t) of the h*w positions per row (at least 1). (b,) long -> (b, t*h*w) bool."""
    t, h, w = grid
    per_frame = torch.round(num_masked.to(device).double() / t).long().clamp(1, h * w)
    space = random_token_mask(per_frame, h * w, generator, device)  # (b, h*w)
    return space[:, None, :].expand(-1, t, -1).reshape(len(num_masked), t * h * w)


def prefix_frame_mask(ratios: torch.Tensor, grid: tuple[int, int, int], generator: torch.Generator,
                      device: torch.device) -> torch.Tensor:
    """Frame prediction (MAGVIT's task, the state frame-by-frame sampling meets): row i keeps its first k_i latent
    frames whole (k_i uniform in 1..t-1) and masks max(1, round(ratio_i * tokens after them)) random positions of the
    later frames. ratios (b,) in [0, 1] -> (b, t*h*w) bool; needs t >= 2."""
    t, h, w = grid
    if t < 2:
        raise ValueError(f"prefix-frame masks need at least 2 latent frames; got grid {grid}")
    b, frame = ratios.shape[0], h * w
    kept = 1 + (uniform((b,), generator, device) * (t - 1)).long().clamp(max=t - 2)  # (b,) in 1..t-1
    later = (t - kept) * frame  # (b,)
    counts = torch.round(ratios.to(device).double() * later).long().clamp(min=1)
    counts = torch.minimum(counts, later)
    scores = uniform((b, t * frame), generator, device)
    prefix = torch.arange(t * frame, device=device)[None] < (kept * frame)[:, None]  # (b, n)
    ranks = scores.masked_fill(prefix, 2.0).argsort(dim=-1).argsort(dim=-1)  # prefix positions rank last
    return ranks < counts[:, None]


def whole_frame_mask(batch: int, grid: tuple[int, int, int], generator: torch.Generator,
                     device: torch.device) -> torch.Tensor:
    """Frame redraws (the state `refine_unit="frame"` / `"worst_frame"` rounds sample from): row i masks every
    position of one latent frame, drawn uniformly from the t frames, and gives all the others whole.
    -> (batch, t*h*w) bool; needs t >= 2."""
    t, h, w = grid
    if t < 2:
        raise ValueError(f"whole-frame masks need at least 2 latent frames; got grid {grid}")
    frame = (uniform((batch,), generator, device) * t).long().clamp(max=t - 1)  # (batch,) in 0..t-1
    return (torch.arange(t * h * w, device=device)[None] // (h * w)) == frame[:, None]


def random_token_mask(num_masked: torch.Tensor, n: int, generator: torch.Generator,
                      device: torch.device) -> torch.Tensor:
    """Per-sample random subsets: row i has exactly num_masked[i] True among n, positions from a random
    permutation drawn from `generator`. (b,) long -> (b, n) bool."""
    scores = uniform((num_masked.shape[0], n), generator, device)
    ranks = scores.argsort(dim=-1).argsort(dim=-1)  # (b, n): a uniform random permutation per row
    return ranks < num_masked.to(device)[:, None]


@dataclass
class MaskedLossStats:
    """What `masked_token_loss` measured: 0-dim float tensors (read them on logging steps: no device sync here),
    `mask (b, n)` bool = masked positions, `drop_text (b,)` bool."""

    loss: torch.Tensor
    accuracy: torch.Tensor  # masked positions whose argmax is right in every factor
    mask_fraction: torch.Tensor  # masked / all tokens
    drop_fraction: torch.Tensor  # rows whose text was replaced by the null embedding
    mask: torch.Tensor
    drop_text: torch.Tensor
    self_conditioned: bool

    def as_dict(self) -> dict[str, float]:
        return {"loss": float(self.loss), "accuracy": float(self.accuracy), "mask_fraction": float(self.mask_fraction),
                "drop_fraction": float(self.drop_fraction), "self_conditioned": float(self.self_conditioned)}


def masked_token_loss(
    model: Callable,
    codes: torch.Tensor,
    text: TextEmbedding | tuple | None,
    generator: torch.Generator,
    cond_drop_prob: float = 0.1,
    label_smoothing: float = 0.0,
    *,
    schedule: str = "cosine",
    self_cond_prob: float = 0.5,
    grid: tuple[int, int, int] | None = None,
    rows: tuple[int, int] | None = None,
    replicas: int = 1,
    tube_prob: float = 0.0,
    prefix_prob: float = 0.0,
    frame_prob: float = 0.0,
    min_mask_ratio: float = 0.0,
    loss_average: str = "token",
    config: Any = None,
) -> tuple[torch.Tensor, MaskedLossStats]:
    """The MaskGit loss on a batch of ground-truth codes.

    model: a `MaskGitTransformer` (or anything with its forward signature, e.g. its DDP wrapper) and `config` its
    `MaskGitConfig` (default: `model.config`).
    codes: long (b, n) or (b, t, h, w) in [0, codebook_size).
    text: per-sample text (`TextEmbedding` (b, m, text_dim) or (embeds, mask)); None = unconditional.
    cond_drop_prob: per-sample probability of replacing the text by the null embedding, in [0, 1].
    label_smoothing: label smoothing of the cross-entropy, in [0, 1).
    Steps: r ~ U(0, 1) per sample; ratio = mask_ratio(r) (cosine: cos(pi/2 r)); k = max(1, round(n * ratio))
    positions masked via a random permutation; masked positions -> mask id (per factor inside the model); text
    dropped per sample with probability cond_drop_prob (-> null embedding); optional self-conditioning (with
    probability self_cond_prob a no-grad first pass whose final hidden states are fed back; only when the model has
    config.self_condition); cross-entropy on masked positions only (mean over masked tokens, summed over factors).
    rows: (offset, total) when this batch is rows offset..offset+b of a `total`-row global batch split over
    `replicas` data-parallel processes (the rows each process actually loaded; they may differ when clips failed to
    decode): the random draws are made for all `total` rows and sliced, and the loss is scaled by `replicas` and
    normalised by the global batch's masked-token count, so the processes' averaged gradients equal those of one
    process on the whole batch. None = (0, b) on one process.
    tube_prob: per-sample probability of a temporal tube mask (`tube_mask`: the same spatial positions masked in
    every latent frame, so the content of a masked position cannot be copied from another frame) instead of
    independent per-token positions; needs the (t, h, w) grid (4-d codes or `grid`).
    prefix_prob: per-sample probability of a frame-prediction mask (`prefix_frame_mask`: the first latent frames
    given whole, the rest masked at the drawn ratio), the state `unmask_order="frame"` sampling decodes from; needs
    the grid; drawn after the tube choice, so it wins where both are drawn.
    frame_prob: per-sample probability of a whole-frame mask (`whole_frame_mask`: one latent frame masked, the
    others given), the state the frame refinement rounds redraw from; needs the grid; drawn last, so it wins.
    min_mask_ratio: mask ratios are at least this (the easy, nearly unmasked samples teach copying, not reading the
    caption).
    loss_average: "token" (mean over all masked tokens of the global batch) or "sample" (each sample's mean over
    its masked tokens, then the mean over samples: short masks weigh as much as long ones).
    Returns (scalar loss, MaskedLossStats).
    """
    config = model.config if config is None else config
    if not 0.0 <= cond_drop_prob <= 1.0:
        raise ValueError(f"cond_drop_prob must be in [0, 1]; got {cond_drop_prob}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
    if not (all(0.0 <= p <= 1.0 for p in (tube_prob, prefix_prob, frame_prob)) and 0.0 <= min_mask_ratio < 1.0):
        raise ValueError(f"tube_prob, prefix_prob and frame_prob must be in [0, 1] and min_mask_ratio in [0, 1); "
                         f"got {tube_prob}, {prefix_prob}, {frame_prob}, {min_mask_ratio}")
    if loss_average not in ("token", "sample"):
        raise ValueError(f"loss_average must be 'token' or 'sample'; got {loss_average!r}")
    if codes.ndim == 4:
        grid = tuple(codes.shape[1:])
        codes = codes.flatten(1)
    if codes.ndim != 2:
        raise ValueError(f"codes must be (b, n) or (b, t, h, w); got shape {tuple(codes.shape)}")
    codes = codes.long()
    if bool(((codes < 0) | (codes >= config.codebook_size)).any()):
        raise ValueError(f"codes must lie in [0, {config.codebook_size}); got [{int(codes.min())}, "
                         f"{int(codes.max())}]; does the tokenizer's codebook_size match the transformer's?")
    b, n = codes.shape
    device = codes.device
    offset, total = (0, b) if rows is None else rows
    if not (offset >= 0 and offset + b <= total):
        raise ValueError(f"rows=(offset, total) must hold this batch of {b}; got {rows}")

    ratios = sample_mask_ratios(total, generator, schedule, device)  # (total,): the global batch's draws
    if min_mask_ratio > 0:
        ratios = ratios.clamp(min=min_mask_ratio)
    num_masked = train_num_masked(ratios, n)
    global_mask = random_token_mask(num_masked, n, generator, device)  # (total, n) bool
    if tube_prob > 0:  # extra draws only when asked, so runs without tubes keep their random streams
        if grid is None:
            raise ValueError("tube masks need the (t, h, w) grid: pass codes (b, t, h, w) or grid=")
        tubes = uniform((total,), generator, device) < tube_prob  # (total,) bool
        global_mask = torch.where(tubes[:, None], tube_mask(num_masked, grid, generator, device), global_mask)
    if prefix_prob > 0:  # likewise: extra draws only when asked
        if grid is None:
            raise ValueError("prefix-frame masks need the (t, h, w) grid: pass codes (b, t, h, w) or grid=")
        prefixed = uniform((total,), generator, device) < prefix_prob  # (total,) bool
        global_mask = torch.where(prefixed[:, None], prefix_frame_mask(ratios, grid, generator, device), global_mask)
    if frame_prob > 0:  # likewise
        if grid is None:
            raise ValueError("whole-frame masks need the (t, h, w) grid: pass codes (b, t, h, w) or grid=")
        whole = uniform((total,), generator, device) < frame_prob  # (total,) bool
        global_mask = torch.where(whole[:, None], whole_frame_mask(total, grid, generator, device), global_mask)
    drop_text = (uniform((total,), generator, device) < cond_drop_prob)[offset : offset + b]  # (b,) bool
    mask = global_mask[offset : offset + b]  # (b, n): this process's rows
    if loss_average == "token":  # mean over the global batch's masked tokens
        scale = replicas * mask.sum() / global_mask.sum()  # 0-dim tensor; 1 on one process
        weights = None
    else:  # mean over the global batch's rows of each row's mean over its masked tokens
        scale = replicas / total
        weights = (mask / mask.sum(dim=1, keepdim=True))[mask]  # (num_masked,): 1 / the row's masked count
    inputs = torch.where(mask, config.mask_id, codes)  # (b, n)

    self_cond = None
    use_self_cond = bool(getattr(config, "self_condition", False))
    use_self_cond = use_self_cond and float(torch.rand((1,), generator=generator, device=generator.device)) < \
        self_cond_prob  # drawn where the generator lives: no device sync
    if use_self_cond:
        with torch.no_grad():
            _, hidden = model(inputs, text, drop_text, grid=grid, return_embeddings=True)
        self_cond = hidden.detach()
    kwargs = {"self_cond": self_cond} if self_cond is not None else {}
    logits = model(inputs, text, drop_text, grid=grid, **kwargs)  # tuple of (b, n, V_k)

    targets = split_codes(codes, config.vocab_sizes)  # one (b, n) target per factor
    if len(logits) != len(targets):
        raise ValueError(f"model returned {len(logits)} logits tensors; expected one per factor ({len(targets)})")
    loss = codes.new_zeros((), dtype=torch.float32)
    correct = torch.ones(int(mask.sum()), dtype=torch.bool, device=device)
    for lg, tg in zip(logits, targets):
        lg_m = lg[mask].float()  # (num_masked, V_k)
        if weights is None:
            loss = loss + scale * F.cross_entropy(lg_m, tg[mask], label_smoothing=label_smoothing)
        else:
            ce = F.cross_entropy(lg_m, tg[mask], label_smoothing=label_smoothing, reduction="none")  # (num_masked,)
            loss = loss + scale * (ce * weights).sum()
        correct &= lg_m.argmax(-1) == tg[mask]
    stats = MaskedLossStats(
        loss=loss.detach(),
        accuracy=correct.float().mean(),
        mask_fraction=mask.float().mean(),
        drop_fraction=drop_text.float().mean(),
        mask=mask,
        drop_text=drop_text,
        self_conditioned=use_self_cond,
    )
    return loss, stats
