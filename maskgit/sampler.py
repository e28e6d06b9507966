"""MaskGIT parallel decoding as a pure function of (logits_fn, inputs, torch.Generator).

Decode rule (google-research/maskgit `libml/parallel_decode.py`), for step s = 0 .. S-1:
  1. logits for all positions; sample a token per unknown position categorically (token `temperature`, after
     optional top-k / top-p filtering; factorised vocabularies sample each sub-token independently);
  2. ratio = (s + 1) / S; mask_len = floor(unknown_at_start * mask_ratio(ratio)), clamped to [1, unknown_now - 1]
     (the upper bound wins, so every step fixes at least one token); the last step fills everything;
  3. confidence = log p(sampled) (summed over factors) + choice_temperature * (1 - ratio) * Gumbel noise; tokens
     that were already known (primes, earlier steps) get +inf, so they are never re-masked; `order="random"`
     replaces the log-probability by uniform noise: tokens are kept in random order (1X GENIE's video default:
     confidence-first "tends to copy the previous frame"); `order="frame"` keeps earlier latent frames first
     (confidence, with its noise, ranks tokens within a frame): the first frame settles what the video shows and
     later frames are sampled given it (`frame_tokens` = h' * w' tokens per latent frame); `order="halton"` keeps
     tokens in a randomly shifted 3D Halton order over the latent `grid` (t', h', w'), ignoring confidence: each
     step's tokens are spread evenly over frames and space (`maskgit.halton`);
  4. the mask_len lowest-confidence positions go back to [MASK].
Deviation: where the official rule would stall (more steps than unknown tokens), decoding just finishes early.

Refinement (off by default; `refine_steps` > 0): MaskGIT never revisits a token, so a token fixed early, from little
context, stays even when the finished video contradicts it. After the last step, each of `refine_steps` rounds re-masks
some sampled positions (never primes), redraws them in one pass given everything else, and keeps a redraw only where it
is more likely than the token it would replace under the same distribution (a greedy form of Mask-Predict's re-masking),
guided at `refine_guidance_scale` (None: the last step's scale; 1: no guidance). Each round costs one model pass (of
twice the rows when guided). What a round re-masks, `refine_unit`: "token", a random `refine_ratio` of the sampled
positions; "frame", every sampled position of one latent frame (drawn at random per video among those with sampled
positions), so the frame is redrawn given the other frames alone (`frame_tokens` per latent frame); "worst_frame", the
same for the latent frame the model finds least likely given the others: the first rounds visit every frame once, each
round scoring the frame it redraws as the mean log-probability of its tokens after the round (what `frame_scores`
measures, at no extra pass), and each later round redraws the lowest-scoring frame other than the one redrawn last
(scores of frames not redrawn since are kept, though the frames around them may have changed). Redraws use
`refine_temperature` (None: `temperature`; 0: the most likely token, so a round only moves a token to its mode given the
rest).

Best of N (off by default; `best_of` > 1): each row is decoded `best_of` times (the generator runs on, so the
candidates differ) and the candidate the model itself finds most coherent is kept: `frame_scores` masks each latent
frame's sampled tokens in turn and scores them given every other frame, as the mean log-probability of the sampled
tokens under the last step's (guided) distribution; a candidate's score is the mean over its frames. One frame that
shows another object than the rest is unlikely given the rest, so the score ranks consistent videos first (the
reranking of DALL-E / OpenAI's `best_of`, with the model as its own judge instead of a second model). It costs
`best_of` decodes plus one pass per latent frame per candidate.

Classifier-free guidance and the `logits_fn` contract: `maskgit.guidance`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .draw import Generators, draw_tokens, uniform_rows
from .draw import _sample_categorical as _sample_categorical  # re-exported: its home before the split
from .draw import filter_logits as filter_logits  # re-exported: its home before the split
from .guidance import GuidanceScale, LogitsFn, guidance_at, guided_logits
from .guidance import make_guided_logits_fn as make_guided_logits_fn  # re-exported: its home before the split
from .halton import halton_ranks
from .refine import REFINE_UNITS, WorstFrame, frame_pick, refine
from .schedule import mask_ratio, num_to_mask
from .transformer import merge_codes, split_codes

# which sampled tokens each step keeps: the most confident, random ones, the earliest latent frame's most confident, or
# the next ones in a shifted Halton order over the latent grid
UNMASK_ORDERS = ("confidence", "random", "frame", "halton")


@dataclass
class SamplerStep:
    """Passed to the progress callback after each step. codes: (b, n) state after re-masking ([MASK] = mask_id);
    preview: (b, n) every position filled (the current x0 estimate); num_masked: (b,) still unknown."""

    step: int
    num_steps: int
    guidance_scale: float
    codes: torch.Tensor
    preview: torch.Tensor
    num_masked: torch.Tensor


@torch.no_grad()
def sample(
    logits_fn: LogitsFn,
    batch_size: int,
    seq_len: int,
    *,
    generator: Generators,
    vocab_sizes: Sequence[int],
    mask_id: int | None = None,
    num_steps: int = 12,
    temperature: float = 1.0,
    choice_temperature: float = 4.5,
    schedule: str = "cosine",
    top_k: int | None = None,
    top_p: float | None = None,
    guidance_scale: GuidanceScale = 1.0,
    known_codes: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    callback: Callable[[SamplerStep], None] | None = None,
    order: str = "confidence",
    frame_tokens: int | None = None,
    grid: Sequence[int] | None = None,
    refine_steps: int = 0,
    refine_ratio: float = 0.125,
    refine_unit: str = "token",
    refine_temperature: float | None = None,
    refine_guidance_scale: float | None = None,
    best_of: int = 1,
) -> torch.Tensor:
    """MaskGIT decoding (module docstring). Returns long codes (batch_size, seq_len) in [0, prod(vocab_sizes)).

    vocab_sizes: vocabulary per factor, e.g. (1024,) or (512, 512); codes merge them hi-first (`merge_codes`).
    mask_id: [MASK] in the codes passed to logits_fn; default prod(vocab_sizes) (= the model's codebook_size).
    known_codes: (b, n) long; -1 or mask_id = unknown, anything else is kept fixed (primes / continuation / edits).
    device: where codes live; default known_codes.device, else the generator's device. Random draws always come
    from `generator` (on its device) and never from the global RNG; the same generator state gives the same codes.
    generator may be a list of batch_size generators: row b then draws only from generator b, so it equals what
    sampling that row alone with that generator gives (diffusers' per-video generators).
    grid: the latent grid (t', h', w') the seq_len positions flatten (time-major); needed by order="halton".
    refine_steps / refine_ratio / refine_unit / refine_temperature / refine_guidance_scale: the refinement rounds of
    the module docstring (0 = none); refine_unit "frame" / "worst_frame" needs frame_tokens.
    best_of: candidates decoded per row, the most coherent kept (module docstring); > 1 needs frame_tokens. The
    callback's `step` then counts over the candidates (candidate c's step s is c * num_steps + s).
    """
    vocab_sizes = tuple(int(v) for v in vocab_sizes)
    total = math.prod(vocab_sizes)
    mask_id = total if mask_id is None else int(mask_id)
    if 0 <= mask_id < total:
        raise ValueError(f"mask_id {mask_id} collides with a code in [0, {total})")
    if not isinstance(generator, torch.Generator):
        if not isinstance(generator, (list, tuple)) or not all(isinstance(g, torch.Generator) for g in generator):
            raise ValueError(f"generator must be a torch.Generator or a list of them; got {type(generator).__name__}")
        if len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for a batch of {batch_size}; pass one per row")
    if num_steps < 1 or batch_size < 1 or seq_len < 1:
        raise ValueError(f"num_steps, batch_size and seq_len must be >= 1; got {num_steps}, {batch_size}, {seq_len}")
    if temperature < 0 or choice_temperature < 0:
        raise ValueError(f"temperatures must be >= 0; got {temperature}, {choice_temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1; got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1]; got {top_p}")
    if isinstance(refine_steps, bool) or not isinstance(refine_steps, int) or refine_steps < 0:
        raise ValueError(f"refine_steps must be an int >= 0; got {refine_steps!r}")
    if not 0.0 < refine_ratio <= 1.0:
        raise ValueError(f"refine_ratio must be in (0, 1]; got {refine_ratio!r}")
    if refine_unit not in REFINE_UNITS:
        raise ValueError(f"refine_unit must be one of {REFINE_UNITS}; got {refine_unit!r}")
    if refine_temperature is not None and not refine_temperature >= 0:
        raise ValueError(f"refine_temperature must be >= 0 or None; got {refine_temperature!r}")
    if refine_guidance_scale is not None and not refine_guidance_scale >= 0:
        raise ValueError(f"refine_guidance_scale must be >= 0 or None; got {refine_guidance_scale!r}")
    if isinstance(best_of, bool) or not isinstance(best_of, int) or best_of < 1:
        raise ValueError(f"best_of must be an int >= 1; got {best_of!r}")
    mask_ratio(0.5, schedule)  # validates the schedule name
    if order not in UNMASK_ORDERS:
        raise ValueError(f"order must be one of {UNMASK_ORDERS}; got {order!r}")
    for name, by_frame in (("order='frame'", order == "frame"),
                           (f"refine_unit={refine_unit!r}", refine_steps and refine_unit != "token"),
                           ("best_of > 1", best_of > 1)):
        if by_frame and (not isinstance(frame_tokens, int) or frame_tokens < 1 or seq_len % frame_tokens):
            raise ValueError(f"{name} needs frame_tokens, the tokens per latent frame dividing seq_len "
                             f"{seq_len}; got {frame_tokens!r}")
    if order == "halton" and (grid is None or len(grid) != 3 or math.prod(grid) != seq_len):
        raise ValueError(f"order='halton' needs grid, the latent (t', h', w') of the {seq_len} positions; got {grid!r}")

    if known_codes is not None:
        if tuple(known_codes.shape) != (batch_size, seq_len):
            raise ValueError(f"known_codes must have shape {(batch_size, seq_len)}; got {tuple(known_codes.shape)}")
        device = torch.device(device) if device is not None else known_codes.device
        known = known_codes.to(device).long()
        bad = (known < -1) | ((known >= total) & (known != mask_id))
        if bool(bad.any()):
            raise ValueError(f"known_codes must be -1 / {mask_id} (unknown) or codes in [0, {total})")
        codes = torch.where(known == -1, mask_id, known)
    else:
        first = generator if isinstance(generator, torch.Generator) else generator[0]
        device = torch.device(device) if device is not None else first.device
        codes = torch.full((batch_size, seq_len), mask_id, dtype=torch.long, device=device)

    start, last_scale = codes, guidance_at(guidance_scale, num_steps - 1, num_steps)
    best, best_score = codes, None
    for candidate in range(best_of):
        _reset(logits_fn)
        codes = _decode(logits_fn, start, generator, vocab_sizes=vocab_sizes, mask_id=mask_id, num_steps=num_steps,
                        temperature=temperature, choice_temperature=choice_temperature, schedule=schedule,
                        top_k=top_k, top_p=top_p, guidance_scale=guidance_scale, callback=callback, order=order,
                        frame_tokens=frame_tokens, grid=grid, refine_steps=refine_steps, refine_ratio=refine_ratio,
                        refine_unit=refine_unit, refine_temperature=refine_temperature,
                        refine_guidance_scale=refine_guidance_scale, step_offset=candidate * num_steps,
                        steps_total=best_of * num_steps)
        if best_of == 1:
            return codes
        frames = frame_scores(logits_fn, codes, start == mask_id, frame_tokens, vocab_sizes, mask_id, last_scale)
        score = frames.nan_to_num(0.0).sum(-1) / (~frames.isnan()).sum(-1).clamp(min=1)  # (b,): mean over frames
        better = score > best_score if best_score is not None else torch.ones_like(score, dtype=torch.bool)
        best = torch.where(better[:, None], codes, best)
        best_score = score if best_score is None else torch.where(better, score, best_score)
    return best


def _reset(logits_fn: LogitsFn) -> None:
    """A stateful closure (self-conditioning: `make_guided_logits_fn`) starts a new decode or score afresh."""
    reset = getattr(logits_fn, "reset", None)
    if reset is not None:
        reset()


def frame_scores(logits_fn: LogitsFn, codes: torch.Tensor, sampled: torch.Tensor, frame_tokens: int,
                 vocab_sizes: Sequence[int], mask_id: int, scale: float) -> torch.Tensor:
    """How likely each latent frame's sampled tokens are given every other token: for frame f, its `sampled`
    positions go to [MASK] and the mean log-probability of their codes under the (guided) logits is taken. One model
    pass per frame. codes (B, n) filled; sampled (B, n) bool (primes are False: given, never scored). Returns
    (B, n // frame_tokens) float; NaN for a frame without sampled positions."""
    n = codes.shape[1]
    frames = n // frame_tokens
    current = split_codes(codes, vocab_sizes, mask_id)
    scores = []
    for f in range(frames):
        in_frame = torch.zeros(n, dtype=torch.bool, device=codes.device)
        in_frame[f * frame_tokens : (f + 1) * frame_tokens] = True
        pick = sampled & in_frame  # (b, n)
        _reset(logits_fn)
        logits = guided_logits(logits_fn, torch.where(pick, mask_id, codes), scale, vocab_sizes)
        logp = sum(lg.log_softmax(dim=-1).gather(-1, ids[..., None]).squeeze(-1) for lg, ids in zip(logits, current))
        count = pick.sum(dim=-1)  # (b,)
        total = torch.where(pick, logp, 0.0).sum(dim=-1)
        scores.append(torch.where(count > 0, total / count.clamp(min=1), float("nan")))
    return torch.stack(scores, dim=-1)


def _decode(logits_fn: LogitsFn, codes: torch.Tensor, generator: Generators, *, vocab_sizes: tuple[int, ...],
            mask_id: int, num_steps: int, temperature: float, choice_temperature: float, schedule: str,
            top_k: int | None, top_p: float | None, guidance_scale: GuidanceScale,
            callback: Callable[[SamplerStep], None] | None, order: str, frame_tokens: int | None,
            grid: Sequence[int] | None, refine_steps: int,
            refine_ratio: float, refine_unit: str, refine_temperature: float | None,
            refine_guidance_scale: float | None, step_offset: int,
            steps_total: int) -> torch.Tensor:
    """One decode of `codes` (B, n) ([MASK] = to sample): the steps and refinement rounds of the module docstring.
    The callback sees step `step_offset + s` of `steps_total`."""
    batch_size, seq_len = codes.shape
    device = codes.device
    unknown_at_start_mask = codes == mask_id  # (b, n): the positions this call samples
    unknown_at_start = unknown_at_start_mask.sum(dim=-1)  # (b,)
    if order == "halton":  # one shifted order per decode, drawn before the steps' draws
        halton = -halton_ranks(tuple(int(g) for g in grid), batch_size, generator, device).float()  # (b, n)
    for step in range(num_steps):
        unknown = codes == mask_id  # (b, n)
        unknown_now = unknown.sum(dim=-1)
        if not bool(unknown.any()):
            break
        scale = guidance_at(guidance_scale, step, num_steps)
        logits = guided_logits(logits_fn, codes, scale, vocab_sizes)
        sub_ids, log_conf, _ = draw_tokens(logits, temperature, top_k, top_p, generator)
        sampled = merge_codes(sub_ids, vocab_sizes, mask_id)
        filled = torch.where(unknown, sampled, codes)  # (b, n)

        if step == num_steps - 1:
            codes = filled
        else:
            ratio = (step + 1) / num_steps
            mask_len = num_to_mask(unknown_at_start, ratio, schedule).to(device)  # (b,)
            mask_len = torch.minimum(mask_len.clamp(min=1), unknown_now - 1).clamp(min=0)
            if order in ("random", "halton"):
                confidence = (uniform_rows((batch_size, seq_len), generator, device) if order == "random"
                              else halton)
            else:
                confidence = log_conf
            if choice_temperature > 0 and order not in ("random", "halton"):
                u = uniform_rows((batch_size, seq_len), generator, device).clamp(1e-20, 1.0 - 1e-7)
                confidence = confidence + choice_temperature * (1.0 - ratio) * -torch.log(-torch.log(u))
            if order == "frame":  # a frame outranks every later one: ranks by (frame, confidence)
                frame = torch.arange(seq_len, device=device) // frame_tokens  # (n,)
                confidence = torch.sigmoid(confidence) - frame.to(confidence.dtype)
            confidence = torch.where(unknown, confidence, float("inf"))
            ranks = confidence.argsort(dim=-1, stable=True).argsort(dim=-1)  # 0 = least confident
            codes = torch.where(ranks < mask_len[:, None], mask_id, filled)
        if callback is not None:
            callback(SamplerStep(step_offset + step, steps_total, scale, codes.clone(), filled.clone(),
                                 (codes == mask_id).sum(dim=-1)))
    if refine_steps:
        worst = WorstFrame(unknown_at_start_mask, frame_tokens) if refine_unit == "worst_frame" else None

        def picks() -> torch.Tensor:
            if worst is not None:
                return worst.picks()
            if refine_unit == "frame":
                return frame_pick(unknown_at_start_mask, frame_tokens, generator)
            return (uniform_rows((batch_size, seq_len), generator, device) < refine_ratio) & unknown_at_start_mask

        round_scale = (guidance_at(guidance_scale, num_steps - 1, num_steps) if refine_guidance_scale is None
                       else refine_guidance_scale)
        codes = refine(logits_fn, codes, picks, refine_steps, round_scale,
                        vocab_sizes, mask_id, temperature if refine_temperature is None else refine_temperature,
                        top_k, top_p, generator, observe=None if worst is None else worst.observe)
    return codes
