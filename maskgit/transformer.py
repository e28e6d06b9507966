"""Bidirectional MaskGit transformer over tokenizer codes, cross-attending to text.

Backbone: x-transformers `TransformerWrapper` + `Encoder` (pre-RMSNorm, SDPA attention, qk-norm, GLU FF,
self-attn -> cross-attn -> FF per block). Our own parts:

* positions (`config.position_encoding`): factorised learned (t, h, w) embeddings, summed into the input via
  `sum_embeds` (no 1-D abs positions; a grid with fewer latent frames or a smaller h, w slices the tables), and/or
  axial 3-D rotary positions (`axial_rotary_freqs`) handed to x-transformers' self-attention as its
  `rotary_pos_emb` (its own rotary is 1-D only);
* a learned NULL text embedding `null_text (1, text_dim)`, used with mask [True] for dropped / unconditional rows
  (classifier-free guidance);
* MAGVIT-v2 token factorisation (see `maskgit.config`): sub-token k has its own embedding table of `V_k + 1` rows
  (the last row is its mask id `V_k`); the embeddings are summed (x-transformers `embed_num_tokens`); one linear
  head per factor. `forward` always returns a tuple of logits, one `(b, n, V_k)` tensor per factor (a 1-tuple when
  unfactorised); logits never include a mask id.

`save_pretrained` / `from_pretrained` write and read a model folder (`config.json` + `model.safetensors`, kind
"MaskGitTransformer"; `magvit2.serialization`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from x_transformers import Encoder, TransformerWrapper

from magvit2.hub import PretrainedMixin
from magvit2.model_card import CardSpec
from magvit2.model_paths import ModelKind
from magvit2.serialization import WEIGHTS_NAME, load_model_dir, load_state_strict, save_model_dir
from magvit2.torch_utils import checkpoint_forward, module_device, module_dtype

from .config import MaskGitConfig
from .text import TextEmbedding, as_text_embedding

Logits = tuple[torch.Tensor, ...]
KIND = "MaskGitTransformer"  # the `_kind` of a transformer folder's config.json
# found in its own folder, a pipeline's transformer/, or a MaskGit run's exported pipeline (`magvit2.model_paths`)
TRANSFORMER_KIND = ModelKind(KIND, locations=("transformer", "pipeline/transformer"), what="MaskGit transformer")


def split_codes(codes: torch.Tensor, vocab_sizes: Sequence[int],
                mask_id: int | None = None) -> tuple[torch.Tensor, ...]:
    """Codes -> one sub-id tensor per factor (mixed radix, most significant first: hi = idx // V_lo, lo = idx % V_lo;
    for powers of two hi = idx >> lo_bits, lo = idx & (2**lo_bits - 1)).

    Positions equal to `mask_id` (default prod(vocab_sizes)) or negative get each factor's mask id `V_k`.
    codes: long (...) -> tuple of long (...) tensors.
    """
    total = math.prod(vocab_sizes)
    mask_id = total if mask_id is None else mask_id
    masked = (codes == mask_id) | (codes < 0)
    rest = codes.clamp(0, total - 1)
    subs = []
    for v in reversed(vocab_sizes):
        subs.append(rest % v)
        rest = rest // v
    subs.reverse()
    return tuple(torch.where(masked, v, s) for s, v in zip(subs, vocab_sizes))


def merge_codes(sub_ids: Sequence[torch.Tensor], vocab_sizes: Sequence[int],
                mask_id: int | None = None) -> torch.Tensor:
    """Inverse of `split_codes`: code = (...(s_0 * V_1 + s_1) * V_2 + ...). Any sub-id equal to its mask id `V_k`
    gives `mask_id` (default prod(vocab_sizes))."""
    if len(sub_ids) != len(vocab_sizes):
        raise ValueError(f"expected {len(vocab_sizes)} sub-id tensors; got {len(sub_ids)}")
    total = math.prod(vocab_sizes)
    mask_id = total if mask_id is None else mask_id
    code = torch.zeros_like(sub_ids[0])
    masked = torch.zeros_like(sub_ids[0], dtype=torch.bool)
    for s, v in zip(sub_ids, vocab_sizes):
        masked |= s >= v
        code = code * v + s.clamp(max=v - 1)
    return torch.where(masked, mask_id, code)


ROTARY_BASE = 100.0  # wavelengths of 6 to ~250 tokens: latent grids are tens of tokens a side, not thousands


def axial_rotary_freqs(grid: Sequence[int], dim_head: int, device: torch.device | None = None) -> torch.Tensor:
    """Rotary angles for a (t, h, w) grid in raster order: (n, 3 * d) float32 with d = 2 * (dim_head // 6).

    Each axis rotates its own d dims of every head (x-transformers' interleaved pair layout: angle k at dims 2k,
    2k + 1), so q.k depends on the (dt, dh, dw) offset between two tokens, not on where they are; the last
    dim_head - 3d dims are not rotated.
    """
    d = 2 * (dim_head // 6)
    inv_freq = ROTARY_BASE ** (-torch.arange(0, d, 2, device=device, dtype=torch.float32) / d)  # (d / 2,)
    coords = torch.meshgrid(*(torch.arange(g, device=device, dtype=torch.float32) for g in grid), indexing="ij")
    angles = [(c.reshape(-1, 1) * inv_freq).repeat_interleave(2, dim=-1) for c in coords]  # 3 x (n, d)
    return torch.cat(angles, dim=-1)


class MaskGitTransformer(nn.Module, PretrainedMixin):
    """Text-conditioned bidirectional transformer: masked codes (b, n) -> logits per factor, each (b, n, V_k)."""

    model_kind = TRANSFORMER_KIND

    def __init__(self, config: MaskGitConfig):
        super().__init__()
        if not isinstance(config, MaskGitConfig):
            raise ValueError(f"config must be a MaskGitConfig; got {type(config).__name__}")
        self.config = c = config
        self.vocab_sizes = c.vocab_sizes
        self.factor_names = [f"factor{k}" for k in range(1, len(self.vocab_sizes))]
        self.net = TransformerWrapper(
            num_tokens=self.vocab_sizes[0] + 1,  # + mask row
            max_seq_len=c.seq_len,
            use_abs_pos_emb=False,  # positions: our factorised (t, h, w) tables via sum_embeds
            embed_num_tokens={name: v + 1 for name, v in zip(self.factor_names, self.vocab_sizes[1:])},
            emb_dropout=c.dropout,
            return_only_embed=True,  # our own heads (factors may differ in size for odd bit counts)
            attn_layers=Encoder(
                dim=c.dim, depth=c.depth, heads=c.heads, attn_dim_head=c.dim_head,
                cross_attend=True, cross_attn_dim_context=c.text_dim,
                attn_flash=c.attn_flash, use_rmsnorm=not c.text_adaptive_norm, attn_qk_norm=True,
                use_adaptive_rmsnorm=c.text_adaptive_norm, dim_condition=c.text_dim if c.text_adaptive_norm else None,
                ff_glu=True, ff_mult=c.ff_mult, attn_dropout=c.dropout, ff_dropout=c.dropout,
            ),
        )
        t, h, w = c.latent_shape
        if c.learned_positions:
            self.pos_t = nn.Parameter(torch.zeros(t, c.dim))
            self.pos_h = nn.Parameter(torch.zeros(h, c.dim))
            self.pos_w = nn.Parameter(torch.zeros(w, c.dim))
        self.null_text = nn.Parameter(torch.zeros(1, c.text_dim))  # learned NULL context token (CFG)
        self.context_norm = nn.LayerNorm(c.text_dim)
        self.self_cond_proj = (nn.Sequential(nn.LayerNorm(c.dim), nn.Linear(c.dim, c.dim))
                               if c.self_condition else None)
        self.heads = nn.ModuleList([nn.Linear(c.dim, v) for v in self.vocab_sizes])
        self._init_weights()

    def set_gradient_checkpointing(self, enabled: bool = True) -> MaskGitTransformer:
        """Recompute each transformer block's activations (self-attention, cross-attention, feed-forward) in the
        backward while training; the same outputs and gradients. Returns self."""
        for _, block, _ in self.net.attn_layers.layers:
            checkpoint_forward(block, enabled)
        return self

    def _init_weights(self) -> None:
        std = 0.02
        nn.init.normal_(self.net.token_emb.emb.weight, std=std)
        if self.net.embeds is not None:
            for emb in self.net.embeds.values():
                nn.init.normal_(emb.weight, std=std)
        learned = (self.pos_t, self.pos_h, self.pos_w) if self.config.learned_positions else ()
        for p in (*learned, self.null_text):
            nn.init.normal_(p, std=std)
        for head in self.heads:
            nn.init.normal_(head.weight, std=std)
            nn.init.zeros_(head.bias)
        if self.self_cond_proj is not None:  # starts as a no-op
            nn.init.zeros_(self.self_cond_proj[1].weight)
            nn.init.zeros_(self.self_cond_proj[1].bias)

    # persistence ------------------------------------------------------------------------------------------------
    # save_pretrained / from_pretrained / push_to_hub: `magvit2.hub.PretrainedMixin`; the folder format here.

    def _save_pretrained(self, directory: Path, training: dict[str, Any] | None = None) -> None:
        """`config.json` + `model.safetensors` (as the tokenizer's); `training` goes into the model card only.
        Refused while LoRA layers are in the model (save the adapter, or unload it; fuse first to keep it)."""
        lora = sorted({n.rsplit(".lora_A", 1)[0] for n, _ in self.named_parameters() if ".lora_A." in n})
        if lora:
            raise ValueError(f"this transformer holds LoRA layers ({lora[0]}, ...): unload_lora_weights() before "
                             "save_pretrained (after fuse_lora() to keep the adapters in the weights)")
        save_model_dir(directory, KIND, self.config.to_dict(), self.state_dict())

    @classmethod
    def _load_pretrained(cls, directory: Path, *, from_hub: bool, device: torch.device | str | None,
                         map_location: str | torch.device | None = None) -> MaskGitTransformer:
        """A transformer folder -> the model in eval mode; unknown config keys and mismatched weights raise
        ValueError. `map_location`: the older spelling of `device=`."""
        config, state = load_model_dir(directory, KIND)
        model = cls(MaskGitConfig.from_dict(config))
        load_state_strict(model, state, Path(directory) / WEIGHTS_NAME)
        if map_location is not None and device is None:
            model.to(map_location)
        return model.eval()

    def card_spec(self) -> CardSpec:
        c = self.config
        return CardSpec(kind="text-conditioned MaskGit transformer over video tokenizer codes",
                        import_line="from maskgit import MaskGitTransformer", class_name="MaskGitTransformer",
                        config=c.to_dict(), tags=["maskgit", "magvit2", "video"],
                        usage=f"logits = transformer(codes, text)  # codes (b, n) in [0, {c.codebook_size}]; "
                              f"{c.codebook_size} = [MASK]")

    @property
    def dtype(self) -> torch.dtype:
        return module_dtype(self)

    @property
    def device(self) -> torch.device:
        return module_device(self)

    # helpers ----------------------------------------------------------------------------------------------------

    @property
    def mask_id(self) -> int:
        return self.config.mask_id

    def split_codes(self, codes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(...) codes with mask id `codebook_size` -> one sub-id tensor per factor (mask -> `V_k`)."""
        return split_codes(codes, self.vocab_sizes, self.mask_id)

    def merge_codes(self, sub_ids: Sequence[torch.Tensor]) -> torch.Tensor:
        """Inverse of `split_codes`."""
        return merge_codes(sub_ids, self.vocab_sizes, self.mask_id)

    def check_compatible(self, tokenizer_codebook_size: int, latent_shape: Sequence[int] | None = None) -> None:
        """Raises ValueError unless the tokenizer's vocabulary equals ours and its grid fits `config.latent_shape`."""
        if tokenizer_codebook_size != self.config.codebook_size:
            raise ValueError(f"tokenizer codebook_size {tokenizer_codebook_size} != transformer codebook_size "
                             f"{self.config.codebook_size}; build the MaskGitConfig with the tokenizer's codebook_size")
        if latent_shape is not None:
            self.resolve_grid(math.prod(latent_shape), tuple(latent_shape))

    def resolve_grid(self, n: int, grid: Sequence[int] | None = None) -> tuple[int, int, int]:
        """The (t, h, w) grid of a length-n sequence; `grid=None` keeps h, w of `config.latent_shape`."""
        _, h_max, w_max = self.config.latent_shape
        if grid is None:
            if n % (h_max * w_max):
                raise ValueError(f"sequence length {n} is not a whole number of {h_max}x{w_max} latent frames; "
                                 f"pass grid=(t, h, w)")
            grid = (n // (h_max * w_max), h_max, w_max)
        grid = tuple(int(g) for g in grid)
        if len(grid) != 3 or math.prod(grid) != n:
            raise ValueError(f"grid {grid} does not match sequence length {n}")
        if not all(1 <= g <= m for g, m in zip(grid, self.config.latent_shape)):
            raise ValueError(f"grid {grid} exceeds the model's latent_shape {self.config.latent_shape}")
        return grid

    def positions(self, grid: Sequence[int]) -> torch.Tensor:
        """Factorised position embeddings for a (t, h, w) grid, flattened in (t, h, w) raster order: (n, dim);
        zeros when the model has rotary positions only."""
        t, h, w = grid
        if not self.config.learned_positions:
            return self.null_text.new_zeros(t * h * w, self.config.dim)
        pos = self.pos_t[:t, None, None] + self.pos_h[None, :h, None] + self.pos_w[None, None, :w]  # (t, h, w, d)
        return pos.reshape(t * h * w, -1)

    def build_context(self, text: TextEmbedding | tuple | None, batch_size: int,
                      drop_text: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention context: (b, m, text_dim) + mask (b, m); rows with drop_text True (or text None) see
        only the null embedding (at position 0, every other position masked)."""
        device = self.null_text.device
        null = self.null_text.expand(batch_size, 1, -1)  # (b, 1, text_dim)
        if text is None:
            return null, torch.ones(batch_size, 1, dtype=torch.bool, device=device)
        text = as_text_embedding(text)
        if text.dim != self.config.text_dim:
            raise ValueError(f"text embeddings have width {text.dim}; this model expects text_dim "
                             f"{self.config.text_dim}")
        text = text.expand(batch_size).to(device=device, dtype=self.null_text.dtype)
        embeds, mask = text.embeds, text.mask
        if drop_text is not None:
            drop_text = drop_text.to(device=device, dtype=torch.bool)
            if drop_text.shape != (batch_size,):
                raise ValueError(f"drop_text must have shape ({batch_size},); got {tuple(drop_text.shape)}")
            m = embeds.shape[1]
            null_embeds = torch.cat([null, null.new_zeros(batch_size, m - 1, null.shape[-1])], dim=1)  # (b, m, d)
            null_mask = torch.zeros_like(mask)
            null_mask[:, 0] = True
            embeds = torch.where(drop_text[:, None, None], null_embeds, embeds)
            mask = torch.where(drop_text[:, None], null_mask, mask)
        return embeds, mask

    # forward ----------------------------------------------------------------------------------------------------

    def forward(self, codes: torch.Tensor, text: TextEmbedding | tuple | None = None,
                drop_text: torch.Tensor | None = None, self_cond: torch.Tensor | None = None, *,
                grid: Sequence[int] | None = None,
                return_embeddings: bool = False) -> Logits | tuple[Logits, torch.Tensor]:
        """Logits for every position.

        codes: long (b, n) in [0, codebook_size] (codebook_size = [MASK]) or (b, t, h, w) (then grid = its shape).
        text: `TextEmbedding` / (embeds (b|1, m, text_dim), mask (b|1, m) bool) / None (= all rows unconditional).
        drop_text: bool (b,) or None: True rows use the null text embedding.
        self_cond: (b, n, dim) final hidden states of a previous pass (only with config.self_condition).
        grid: (t, h, w) of the flattened sequence; default: h, w of config.latent_shape.
        Returns a tuple with one (b, n, V_k) float tensor per factor; with return_embeddings also the final hidden
        states (b, n, dim).
        """
        if codes.ndim == 4:
            grid = tuple(codes.shape[1:])
            codes = codes.flatten(1)
        if codes.ndim != 2 or codes.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
            raise ValueError(f"codes must be an integer tensor (b, n) or (b, t, h, w); got {tuple(codes.shape)} "
                             f"{codes.dtype}")
        b, n = codes.shape
        grid = self.resolve_grid(n, grid)
        # checked in eager calls only: under torch.compile this data-dependent branch would split the graph in two
        # (the trainers, which compile, check the codes' vocabulary when they open the shards)
        if not torch.compiler.is_compiling() and bool(((codes < 0) | (codes > self.mask_id)).any()):
            raise ValueError(f"codes must lie in [0, {self.mask_id}] ({self.mask_id} = mask id); got values in "
                             f"[{int(codes.min())}, {int(codes.max())}]; does the tokenizer's codebook_size match?")
        sub = self.split_codes(codes.long())
        context, context_mask = self.build_context(text, b, drop_text)
        extra = self.positions(grid)[None]  # (1, n, dim)
        if self.self_cond_proj is not None:
            if self_cond is None:
                self_cond = extra.new_zeros(b, n, self.config.dim)
            extra = extra + self.self_cond_proj(self_cond)
        elif self_cond is not None:
            raise ValueError("self_cond given but the model was built with self_condition=False")
        context = self.context_norm(context)  # (b, m, text_dim)
        kwargs = {}
        if self.config.rotary_positions:
            kwargs["rotary_pos_emb"] = (axial_rotary_freqs(grid, self.config.dim_head, codes.device)[None], 1.0)
        if self.config.text_adaptive_norm:  # the pooled text (the null embedding for dropped rows) scales every norm
            weights = context_mask.to(context.dtype)[..., None]  # (b, m, 1)
            kwargs["condition"] = (context * weights).sum(1) / weights.sum(1).clamp(min=1)  # (b, text_dim)
        hidden = self.net(
            sub[0],
            embed_ids=dict(zip(self.factor_names, sub[1:])),
            sum_embeds=extra.expand(b, -1, -1),
            context=context,
            context_mask=context_mask,
            return_embeddings=True,
            **kwargs,
        )  # (b, n, dim)
        logits = tuple(head(hidden) for head in self.heads)  # each (b, n, V_k)
        return (logits, hidden) if return_embeddings else logits
