"""Attention and token-mixing blocks of the tokenizer, each `(b, c, t, h, w) -> (b, c, t, h, w)`.

- `SpaceAttentionBlock`: softmax attention over the h*w positions of each frame, axial 2D rotary positions.
- `LinearSpaceAttentionBlock`: linear-cost attention over h*w (softmax feature maps), rotary positions.
- `TimeAttentionBlock`: causal attention over the frames of each pixel, 1D rotary positions.
- `GateLoopTimeBlock`: a gated linear recurrence over time (causal, cheap).
Each is pre-norm residual: x + mixer(norm(x)), then x + ff(norm(x)). With `dim_cond`, the norms are adaptive
(RMSNorm whose gain comes from the cond vector): the `cond_*` layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from rotary_embedding_torch import RotaryEmbedding, apply_rotary_emb
from torch import Tensor, nn


class AdaptiveRMSNorm(nn.Module):
    """RMSNorm over the last dim; gain = learned gain, times (1 + gamma(cond)) when conditioned (gamma starts at 0)."""

    def __init__(self, dim: int, dim_cond: int | None = None):
        super().__init__()
        self.norm = nn.RMSNorm(dim, eps=1e-6)
        self.to_gamma = None
        if dim_cond is not None:
            self.to_gamma = nn.Linear(dim_cond, dim)
            nn.init.zeros_(self.to_gamma.weight)
            nn.init.zeros_(self.to_gamma.bias)

    def forward(self, x: Tensor, cond: Tensor | None, pattern_batch: int) -> Tensor:
        """x: (B, n, d) where B = b * pattern_batch (frames or pixels folded into the batch); cond: (b, dim_cond)."""
        x = self.norm(x)
        if self.to_gamma is None:
            return x
        if cond is None:
            raise ValueError("cond_* attention layer needs `cond` of shape (b, dim_cond); got None")
        gamma = self.to_gamma(cond).repeat_interleave(pattern_batch, dim=0)  # (B, d)
        return x * (1 + gamma[:, None, :])


class FeedForward(nn.Module):
    """GEGLU feed-forward on (B, n, d)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        inner = int(dim * mult * 2 / 3)
        self.proj_in = nn.Linear(dim, inner * 2)
        self.proj_out = nn.Linear(inner, dim)

    def forward(self, x: Tensor) -> Tensor:
        a, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(a * F.gelu(gate))


class _Block(nn.Module):
    """Shared skeleton: fold (b, c, t, h, w) into sequences, pre-norm mixer + FF residuals, unfold."""

    fold = ""  # einops pattern (b, c, t, h, w) -> (B, n, c)
    unfold = ""

    def __init__(self, dim: int, ff_mult: int, dim_cond: int | None):
        super().__init__()
        self.norm_mix = AdaptiveRMSNorm(dim, dim_cond)
        self.norm_ff = AdaptiveRMSNorm(dim, dim_cond)
        self.ff = FeedForward(dim, ff_mult)

    def mix(self, x: Tensor, grid: tuple[int, int, int]) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        b, _, t, h, w = x.shape
        seq = rearrange(x, self.fold)  # (B, n, c)
        per_sample = seq.shape[0] // b
        seq = seq + self.mix(self.norm_mix(seq, cond, per_sample), (t, h, w))
        seq = seq + self.ff(self.norm_ff(seq, cond, per_sample))
        return rearrange(seq, self.unfold, b=b, t=t, h=h, w=w)


class SpaceAttentionBlock(_Block):
    """Softmax self-attention among the h*w positions of each frame, with axial (h, w) rotary embeddings."""

    fold = "b c t h w -> (b t) (h w) c"
    unfold = "(b t) (h w) c -> b c t h w"

    def __init__(self, dim, heads=8, dim_head=32, dropout=0.0, ff_mult=4, dim_cond=None):
        super().__init__(dim, ff_mult, dim_cond)
        if dim_head % 4 or dim_head < 8:
            raise ValueError(f"attn_dim_head must be a multiple of 4 and >= 8 (axial rotary); got {dim_head}")
        self.heads, self.dropout = heads, dropout
        self.to_qkv = nn.Linear(dim, heads * dim_head * 3, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)
        self.rotary = RotaryEmbedding(dim_head // 2)  # per axis; h and w halves make up the whole head dim

    def mix(self, x: Tensor, grid: tuple[int, int, int]) -> Tensor:
        _, h, w = grid
        q, k, v = rearrange(self.to_qkv(x), "B (hh ww) (qkv n d) -> qkv B n hh ww d", qkv=3, n=self.heads, hh=h)
        freqs = self.rotary.get_axial_freqs(h, w)  # (h, w, dim_head)
        q, k = apply_rotary_emb(freqs, q), apply_rotary_emb(freqs, k)
        q, k, v = (rearrange(a, "B n hh ww d -> B n (hh ww) d") for a in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.to_out(rearrange(out, "B n s d -> B s (n d)"))


class LinearSpaceAttentionBlock(_Block):
    """Linear attention over h*w ("efficient attention": softmax over features for q, over positions for k).

    Rotary positions are applied to the feature-mapped q and k (RoFormer's linear-attention variant), so the
    cost stays O(h*w) while attention weights depend on relative position.
    """

    fold = "b c t h w -> (b t) (h w) c"
    unfold = "(b t) (h w) c -> b c t h w"

    def __init__(self, dim, heads=16, dim_head=8, ff_mult=4, dim_cond=None):
        super().__init__(dim, ff_mult, dim_cond)
        if dim_head % 4 or dim_head < 8:
            raise ValueError(f"linear_attn_dim_head must be a multiple of 4 and >= 8 (axial rotary); got {dim_head}")
        self.heads, self.scale = heads, dim_head**-0.5
        self.to_qkv = nn.Linear(dim, heads * dim_head * 3, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)
        self.rotary = RotaryEmbedding(dim_head // 2)

    def mix(self, x: Tensor, grid: tuple[int, int, int]) -> Tensor:
        _, h, w = grid
        q, k, v = rearrange(self.to_qkv(x), "B (hh ww) (qkv n d) -> qkv B n hh ww d", qkv=3, n=self.heads, hh=h)
        q = q.softmax(dim=-1) * self.scale
        k = rearrange(k, "B n hh ww d -> B n (hh ww) d").softmax(dim=-2)
        k = rearrange(k, "B n (hh ww) d -> B n hh ww d", hh=h)
        freqs = self.rotary.get_axial_freqs(h, w)
        q, k = apply_rotary_emb(freqs, q), apply_rotary_emb(freqs, k)
        q, k, v = (rearrange(a, "B n hh ww d -> B n (hh ww) d") for a in (q, k, v))
        context = torch.einsum("bnsd,bnse->bnde", k, v)  # (B, n, d, d)
        out = torch.einsum("bnsd,bnde->bnse", q, context)  # (B, n, s, d)
        return self.to_out(rearrange(out, "B n s d -> B s (n d)"))


class TimeAttentionBlock(_Block):
    """Causal softmax self-attention over the frames of each spatial position, with 1D rotary embeddings."""

    fold = "b c t h w -> (b h w) t c"
    unfold = "(b h w) t c -> b c t h w"

    def __init__(self, dim, heads=8, dim_head=32, dropout=0.0, ff_mult=4, dim_cond=None):
        super().__init__(dim, ff_mult, dim_cond)
        self.heads, self.dropout = heads, dropout
        self.to_qkv = nn.Linear(dim, heads * dim_head * 3, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)
        self.rotary = RotaryEmbedding(dim_head)

    def mix(self, x: Tensor, grid: tuple[int, int, int]) -> Tensor:
        q, k, v = rearrange(self.to_qkv(x), "B t (qkv n d) -> qkv B n t d", qkv=3, n=self.heads)
        q, k = self.rotary.rotate_queries_or_keys(q), self.rotary.rotate_queries_or_keys(k)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.to_out(rearrange(out, "B n t d -> B t (n d)"))


class GateLoopTimeBlock(_Block):
    """Gated linear recurrence over time per spatial position: s_t = a_t * s_{t-1} + (1 - a_t) * v_t, out = g_t * s_t.

    Causal by construction; a cheap alternative to time attention (the seed's `gateloop_time`).
    """

    fold = "b c t h w -> (b h w) t c"
    unfold = "(b h w) t c -> b c t h w"

    def __init__(self, dim, ff_mult=4, dim_cond=None):
        super().__init__(dim, ff_mult, dim_cond)
        self.to_gates = nn.Linear(dim, dim * 3)
        self.to_out = nn.Linear(dim, dim)

    def mix(self, x: Tensor, grid: tuple[int, int, int]) -> Tensor:
        a, v, g = self.to_gates(x).chunk(3, dim=-1)  # each (B, t, c)
        a, g = torch.sigmoid(a), torch.sigmoid(g)
        state = torch.zeros_like(v[:, 0])
        outs = []
        for i in range(x.shape[1]):
            state = a[:, i] * state + (1 - a[:, i]) * v[:, i]
            outs.append(state)
        return self.to_out(g * torch.stack(outs, dim=1))
