"""Code noise for tokenizer training: some of each clip's codes replaced by uniformly random ones before decoding,
so the decoder learns to draw clean frames from codes carrying a generator's errors (latent perturbation, as in
RobusTok's tokenizer post-training). A training technique, not architecture: the tokenizer's forward is unchanged."""

from __future__ import annotations

import torch

from magvit2 import VideoTokenizer
from magvit2.tokenizer import TokenizerOutput


def noisy_codes(indices: torch.Tensor, share: float, codebook_size: int, generator: torch.Generator,
                rows: tuple[int, int] | None = None, clips: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (b, t', h', w') long -> (codes with each one replaced with probability `share` by a uniform draw from
    [0, codebook_size), the bool mask of the positions drawn). A draw may equal the code it replaces. `clips`: the
    share of rows (clips) that get noise at all; the others keep every code. `rows`: (offset, total) when these are
    rows offset..offset+b of a `total`-row global batch split over data-parallel processes: the draws are made for
    all `total` rows and sliced, so W processes draw what one process does."""
    if not (0.0 <= share < 1.0 and 0.0 < clips <= 1.0):
        raise ValueError(f"code noise share must be in [0, 1) and its share of clips in (0, 1]; got {share!r}, "
                         f"{clips!r}")
    b = indices.shape[0]
    offset, total = (0, b) if rows is None else rows
    if not 0 <= offset <= offset + b <= total:
        raise ValueError(f"rows=(offset, total) must hold this batch of {b}; got {rows}")
    shape, where = (total, *indices.shape[1:]), generator.device
    hit = torch.rand(shape, generator=generator, device=where) < share
    drawn = torch.randint(0, codebook_size, shape, generator=generator, device=where)
    noisy_rows = torch.rand(total, generator=generator, device=where) < clips  # (total,)
    hit = (hit & noisy_rows.view(-1, *[1] * (len(shape) - 1)))[offset : offset + b].to(indices.device)
    return torch.where(hit, drawn[offset : offset + b].to(indices.device), indices), hit


def reconstruct_with_code_noise(tokenizer: VideoTokenizer, video: torch.Tensor, share: float,
                                generator: torch.Generator, step: int | None = None,
                                rows: tuple[int, int] | None = None, clips: float = 1.0) -> TokenizerOutput:
    """`tokenizer.reconstruct(video)` with `share` of the codes replaced before decoding. Clean positions keep the
    quantizer's straight-through values, so the encoder still learns from them; the drawn ones carry no gradient to
    the encoder. The output's codes and quantizer stats are the clean ones; `rows` and `clips` as in
    `noisy_codes`. video: (b, c, t, h, w) (or images (b, c, h, w)) in [-1, 1]."""
    q = tokenizer.quantize(tokenizer.encode(video), step=step)  # encode checks the video (images: 1 frame)
    codes, hit = noisy_codes(q.indices, share, tokenizer.codebook_size, generator, rows, clips)
    drawn = tokenizer.quantizer.indices_to_codes(codes).to(q.quantized.dtype)  # (b, d, t', h', w')
    quantized = torch.where(hit.unsqueeze(1), drawn, q.quantized)
    recon = tokenizer.decode(quantized)
    return TokenizerOutput(recon.squeeze(2) if video.ndim == 4 else recon, q.indices, q)
