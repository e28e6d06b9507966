"""Quantizers over vector-quantize-pytorch: lookup-free (LFQ, default) and finite scalar (FSQ).

Why we extend LFQ here (one place): the library's training forward builds a tokens x codebook_size probability
matrix for its entropy loss (2.7 GB per matrix at 2^18 codes for 2,560 tokens), so we keep its projections,
bit convention and `indices_to_codes`, and compute the same entropy exactly in factorised form instead:

- per-sample entropy: the soft assignment softmax(2 * inv_temp * <z, c>) over the hypercube {-1, 1}^K factorises
  into K independent bits with p(bit_k = 1) = sigmoid(4 * inv_temp * z_k), so its entropy is a sum of K binary
  entropies (exact, O(K) memory);
- codebook entropy: H(mean over tokens of the assignment) does not factorise; we compute it exactly over groups
  of <= 12 bits (one group = the exact joint entropy; 2^18 -> two groups of 9 bits, MAGVIT-v2's sub-group
  entropy), chunked over tokens with activation checkpointing, so memory is chunk x 2^bits_per_group.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from vector_quantize_pytorch import FSQ, LFQ

from magvit2.config import TokenizerConfig
from magvit2.distributed import global_average
from magvit2.metrics import codebook_usage

ENTROPY_CHUNK = 4096  # tokens per chunk of the codebook-entropy computation
FSQ_JOINT_CHUNK = 2**22  # entries of one (tokens, codebook) matrix of FSQ's joint soft assignment


@dataclass
class QuantizerOutput:
    """What a quantizer returns. Scalars are 0-dim tensors; `usage` and `perplexity` are detached."""

    quantized: Tensor  # (b, d, t', h', w') codes projected back to the latent width (straight-through in training)
    indices: Tensor  # (b, t', h', w') long in [0, codebook_size)
    aux_loss: Tensor  # entropy_weight * (per_sample - gamma * codebook entropy) + commitment_weight * commitment
    per_sample_entropy: Tensor  # nats, mean over tokens (low = confident assignments)
    codebook_entropy: Tensor  # nats, of the batch-averaged assignment (high = codes used evenly)
    commitment: Tensor  # mean squared distance between pre-quantization values and their codes
    entropy_weight: float  # the (possibly annealed) entropy weight used in aux_loss
    usage: Tensor  # fraction of the codebook used by this batch's indices
    perplexity: Tensor  # exp(entropy of this batch's index histogram)


def entropy_weight_at(config: TokenizerConfig, step: int | None) -> float:
    """Entropy-loss weight at a training step: linear anneal from the start weight to the final one, then constant."""
    final = config.lfq_entropy_loss_weight
    start = config.lfq_entropy_anneal_start_weight
    steps = config.lfq_entropy_anneal_steps
    if step is None or steps == 0 or start is None:
        return final
    frac = min(max(step, 0) / steps, 1.0)
    return start + (final - start) * frac


def binary_entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy (nats) of Bernoulli(sigmoid(logits)), numerically stable."""
    p = torch.sigmoid(logits)
    return p * F.softplus(-logits) + (1 - p) * F.softplus(logits)


def _group_prob_sum(log_p: Tensor, log_1mp: Tensor, bits: Tensor) -> Tensor:
    """Sum over tokens of the joint distribution over the 2^m sub-codes of one bit group.

    log_p, log_1mp: (n, m) log-probabilities of each bit being 1 / 0; bits: (2^m, m) in {0, 1}. Returns (2^m,).
    """
    log_joint = log_p @ bits.t() + log_1mp @ (1 - bits).t()  # (n, 2^m)
    return log_joint.exp().sum(dim=0)


class Float32Module(nn.Module):
    """A module whose floating weights and buffers stay float32 through `.to(dtype)` / `.half()` / `.bfloat16()`
    (devices still move): the quantizer's projections, signs and entropies are computed in fp32 inside a model cast
    to bf16/fp16 (diffusers / transformers keep such modules in fp32 the same way). Inputs are cast to fp32 in
    `forward`; outputs go back to the input's dtype."""

    def _apply(self, fn, recurse=True):
        def move_only(t: Tensor) -> Tensor:  # a cast is replaced by a move of the unrounded tensor
            out = fn(t)
            return t.to(device=out.device) if t.is_floating_point() and out.dtype != t.dtype else out

        return super()._apply(move_only, recurse)


def frame_group_norm(z: Tensor, frame_tokens: int, groups: int, eps: float = 1e-5) -> Tensor:
    """Non-affine GroupNorm of projected values per frame: z (b, n, ..., D) with n = frames x frame_tokens (frame
    major, as the library flattens (t, h, w)) -> same shape, each frame's values in each of `groups` groups of the D
    dimensions at zero mean and unit variance over the frame's tokens (causal: no statistic mixes frames)."""
    b, n, d = z.shape[0], z.shape[1], z.shape[-1]
    g = z.reshape(b, n // frame_tokens, frame_tokens, -1, groups, d // groups)  # (b, t, hw, c, groups, D / groups)
    var, mean = torch.var_mean(g, dim=(2, 3, 5), correction=0, keepdim=True)
    return ((g - mean) * torch.rsqrt(var + eps)).reshape(z.shape)


class LFQuantizer(Float32Module):
    """Lookup-free quantization of `(b, dim, t, h, w)` latents into K = log2(codebook_size) sign bits."""

    def __init__(self, dim: int, config: TokenizerConfig):
        super().__init__()
        self.config = config
        self.codebook_size = config.codebook_size
        self.lfq = LFQ(dim=dim, codebook_size=config.codebook_size, entropy_loss_weight=0.0, channel_first=True)
        self.group_sizes = config.entropy_group_sizes
        for i, m in enumerate(self.group_sizes):
            codes = torch.arange(2**m)
            bits = ((codes[:, None] >> torch.arange(m - 1, -1, -1)) & 1).float()  # (2^m, m), big-endian like LFQ
            self.register_buffer(f"group_bits_{i}", bits, persistent=False)

    def entropies(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(per-sample entropy, codebook entropy) of the soft assignment of z: (n, K) fp32 pre-quantization values."""
        logits = 4.0 * self.config.lfq_inv_temperature * z  # (n, K): logit of each bit being +1
        per_sample = binary_entropy_from_logits(logits).sum(dim=-1).mean()
        log_p, log_1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
        codebook_entropy = z.new_zeros(())
        start = 0
        for i, m in enumerate(self.group_sizes):
            bits = getattr(self, f"group_bits_{i}")
            lp, l1 = log_p[:, start : start + m], log_1mp[:, start : start + m]
            start += m
            total = z.new_zeros(2**m)
            for c in range(0, z.shape[0], ENTROPY_CHUNK):
                chunk = (lp[c : c + ENTROPY_CHUNK], l1[c : c + ENTROPY_CHUNK], bits)
                total = total + (checkpoint(_group_prob_sum, *chunk, use_reentrant=False) if z.requires_grad
                                 else _group_prob_sum(*chunk))
            avg = global_average(total, z.shape[0])  # (2^m,): over every process's tokens
            codebook_entropy = codebook_entropy - (avg * avg.clamp(min=1e-12).log()).sum()
        return per_sample, codebook_entropy

    def forward(self, x: Tensor, step: int | None = None) -> QuantizerOutput:
        """x: (b, dim, t, h, w) continuous latents -> QuantizerOutput with `quantized` of the same shape."""
        t, h = x.shape[2:4]
        with torch.autocast(device_type=x.device.type, enabled=False):  # the quantizer always runs in fp32
            seq = rearrange(x.float(), "b d t h w -> b (t h w) d")
            z = self.lfq.project_in(seq)  # (b, n, K)
            if self.config.quantizer_norm_groups:
                z = frame_group_norm(z, h * x.shape[-1], self.config.quantizer_norm_groups)
            q = torch.where(z > 0, torch.ones_like(z), -torch.ones_like(z))
            indices = ((q > 0).long() * self.lfq.mask.long()).sum(dim=-1)  # (b, n)
            zq = z + (q - z).detach() if self.training else q
            quantized = self.lfq.project_out(zq)  # (b, n, dim)
            zero = z.new_zeros(())
            per_sample = codebook_entropy = commitment = zero
            weight = entropy_weight_at(self.config, step)
            if self.training:
                per_sample, codebook_entropy = self.entropies(rearrange(z, "b n k -> (b n) k"))
                commitment = F.mse_loss(z, q.detach())
            aux = weight * (per_sample - self.config.lfq_diversity_gamma * codebook_entropy)
            aux = aux + self.config.lfq_commitment_loss_weight * commitment
        indices = rearrange(indices, "b (t h w) -> b t h w", t=t, h=h)
        usage, perplexity = codebook_usage(indices, self.codebook_size, validate=False)
        return QuantizerOutput(
            quantized=rearrange(quantized, "b (t h w) d -> b d t h w", t=t, h=h).to(x.dtype),
            indices=indices,
            aux_loss=aux,
            per_sample_entropy=per_sample,
            codebook_entropy=codebook_entropy,
            commitment=commitment,
            entropy_weight=weight,
            usage=usage,
            perplexity=perplexity,
        )

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """(b, t, h, w) long -> (b, dim, t, h, w) float32: exactly the eval-mode `quantized` for those indices."""
        bits = ((indices[..., None] & self.lfq.mask) != 0).float()  # (b, t, h, w, K)
        return rearrange(self.lfq.project_out(bits * 2 - 1), "b t h w d -> b d t h w")


class RatedNoiseFSQ(FSQ):
    """The library's FSQ, its `noise_dropout` drawn at the rate asked: vector-quantize-pytorch 1.32 draws the mask with
    `full_like(z, p).bernoulli_()`, which ignores the tensor (`Tensor.bernoulli_` defaults to 0.5), so every rate
    acted as 0.5. A uniform offset in [-0.5, 0.5) on a share p of the quantized values, clamped to [-1, 1], in
    training only; drawn from the global RNG, like dropout. With `norm_groups` > 0, `frame_group_norm` on the
    projected values before the bound (the library has no hook between its projection and its bound); the caller
    sets `frame_tokens` (h x w) before each call."""

    norm_groups: int = 0
    frame_tokens: int = 0

    def quantize(self, z: Tensor) -> Tensor:
        """z: (b, n, c, D) projected values -> their quantized values (FSQ's bound, after the norm when on)."""
        if self.norm_groups:
            z = frame_group_norm(z, self.frame_tokens, self.norm_groups)
        return super().quantize(z)

    def maybe_apply_noise(self, bounded_z: Tensor) -> Tensor:
        if not self.training or self.noise_dropout == 0.0:
            return bounded_z
        noised = torch.rand_like(bounded_z) < self.noise_dropout
        offset = torch.rand_like(bounded_z) - 0.5
        return torch.where(noised, bounded_z + offset, bounded_z).clamp(-1.0, 1.0)


class FSQuantizer(Float32Module):
    """Finite scalar quantization; codebook size = prod(fsq_levels). With `fsq_entropy_loss_weight` > 0, LFQ's
    entropy loss on a soft assignment of each value to its dimension's levels, softmax(-(v - level)^2 / temperature)
    in level units (rounding v gives the code): the per-token entropy (a sum over dimensions) pushes values to level
    centres, the exact codebook entropy of the batch-averaged joint assignment (prod(levels) entries, chunked) spreads
    them over the codes. Without it FSQ has no auxiliary loss."""

    def __init__(self, dim: int, config: TokenizerConfig):
        super().__init__()
        self.codebook_size = config.effective_codebook_size
        self.entropy_weight, self.temperature = config.fsq_entropy_loss_weight, config.fsq_entropy_temperature
        self.fsq = RatedNoiseFSQ(levels=list(config.fsq_levels), dim=dim, channel_first=True,
                       preserve_symmetry=config.fsq_preserve_symmetry, noise_dropout=float(config.fsq_noise_dropout))
        self.fsq.norm_groups = config.quantizer_norm_groups

    def level_values(self, z: Tensor) -> Tensor:
        """(n, D) projected values -> (n, D) positions in level units, levels at 0 .. L_d - 1 (the library's bounds,
        shifted: rounding them gives each dimension's level index)."""
        levels = self.fsq._levels.to(z)  # (D,)
        if self.fsq.preserve_symmetry:
            return (levels - 1) * (torch.tanh(z) + 1) / 2
        half_l = (levels - 1) * (1 + 1e-3) / 2  # the library's eps
        offset = torch.where(self.fsq._levels % 2 == 0, 0.5, 0.0).to(z)
        bounded = torch.tanh(z + torch.atanh(offset / half_l)) * half_l - offset  # rounds to -(L//2) .. L-1-L//2
        return bounded + torch.div(levels, 2, rounding_mode="floor")

    def entropies(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(per-token entropy, codebook entropy) in nats of the soft assignment of z: (n, D) fp32 projected values."""
        v = self.level_values(z)  # (n, D)
        levels = self.fsq._levels.tolist()
        centres = torch.arange(max(levels), device=z.device, dtype=z.dtype)  # (Lmax,)
        absent = centres[None, :] >= self.fsq._levels.to(z.device)[:, None]  # (D, Lmax): beyond dimension d's levels
        logits = (-(v[..., None] - centres) ** 2 / self.temperature).masked_fill(absent, float("-inf"))  # (n, D, Lmax)
        log_p = logits.log_softmax(dim=-1)
        probs = [p[..., :n_levels] for p, n_levels in zip(log_p.exp().unbind(dim=1), levels)]  # D x (n, L_d)
        per_token = -(log_p.exp() * log_p.nan_to_num(neginf=0.0)).sum(dim=(1, 2)).mean()
        chunk = max(1, FSQ_JOINT_CHUNK // self.codebook_size)  # tokens per joint matrix
        total = z.new_zeros(self.codebook_size)
        for c in range(0, z.shape[0], chunk):
            joint = probs[0][c : c + chunk]  # built dimension by dimension, first dimension fastest (library order)
            for p in probs[1:]:
                joint = (p[c : c + chunk, :, None] * joint[:, None, :]).flatten(1)
            total = total + joint.sum(dim=0)
        avg = global_average(total, z.shape[0])  # (codebook,): over every process's tokens
        return per_token, -(avg * avg.clamp(min=1e-12).log()).sum()

    def forward(self, x: Tensor, step: int | None = None) -> QuantizerOutput:
        with torch.autocast(device_type=x.device.type, enabled=False):
            self.fsq.frame_tokens = x.shape[-2] * x.shape[-1]
            quantized, indices = self.fsq(x.float())  # (b, dim, t, h, w), (b, t, h, w)
            zero = quantized.new_zeros(())
            per_token = codebook_entropy = aux = zero
            if self.training and self.entropy_weight > 0:
                z = self.fsq.project_in(rearrange(x.float(), "b d t h w -> b (t h w) d"))  # as the library's
                if self.fsq.norm_groups:
                    z = frame_group_norm(z, self.fsq.frame_tokens, self.fsq.norm_groups)
                z = z.flatten(0, 1)  # (n, D)
                per_token, codebook_entropy = self.entropies(z)
                aux = self.entropy_weight * (per_token - codebook_entropy)
        usage, perplexity = codebook_usage(indices, self.codebook_size, validate=False)
        return QuantizerOutput(quantized.to(x.dtype), indices.long(), aux, per_token, codebook_entropy, zero,
                               self.entropy_weight, usage, perplexity)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        return self.fsq.indices_to_codes(indices)  # (b, dim, t, h, w) float32


def build_quantizer(dim: int, config: TokenizerConfig) -> LFQuantizer | FSQuantizer:
    return FSQuantizer(dim, config) if config.use_fsq else LFQuantizer(dim, config)
