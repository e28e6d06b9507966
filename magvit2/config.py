"""Typed, self-validating configuration of the MagViT2 video tokenizer.

`TokenizerConfig` holds architecture and quantizer settings only (loss weights live in `magvit2.losses.LossConfig`).
It round-trips through JSON (`to_dict` / `from_dict`) and rejects unknown keys.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from magvit2.serialization import config_from_dict

# Layer names of the seed's layer vocabulary. `consecutive_residual` takes a count; `compress_*` an optional width.
PLAIN_LAYERS = ("residual", "attend_space", "linear_attend_space", "attend_time", "gateloop_time")
COND_LAYERS = ("cond_residual", "cond_attend_space", "cond_linear_attend_space", "cond_attend_time")
COMPRESS_LAYERS = ("compress_space", "compress_time")
LAYER_NAMES = (*PLAIN_LAYERS, *COND_LAYERS, *COMPRESS_LAYERS, "consecutive_residual")

LayerSpec = str | tuple[str, int]
TIME_PADDINGS = ("causal", "prepend")
BLOCK_STYLES = ("paper", "seed")  # see TokenizerConfig.block_style


def _normalize_layer(spec: Any) -> LayerSpec:
    """Validate one layer spec; returns a hashable, JSON-friendly form (str or (str, int))."""
    if isinstance(spec, str):
        name, arg = spec, None
    elif isinstance(spec, (list, tuple)) and len(spec) == 2 and isinstance(spec[0], str):
        name, arg = spec[0], spec[1]
    else:
        raise ValueError(f"layer spec must be a name or (name, int); got {spec!r}")
    if name not in LAYER_NAMES:
        raise ValueError(f"unknown layer {name!r}; expected one of {', '.join(LAYER_NAMES)}")
    if name == "consecutive_residual" and arg is None:
        raise ValueError("'consecutive_residual' needs a count, e.g. ('consecutive_residual', 2)")
    if arg is None:
        return name
    if name not in ("consecutive_residual", *COMPRESS_LAYERS):
        raise ValueError(f"layer {name!r} takes no argument; got {spec!r}")
    if not isinstance(arg, int) or isinstance(arg, bool) or arg < 1:
        raise ValueError(f"layer {name!r} needs a positive int argument; got {arg!r}")
    return (name, arg)


def image_hw(size: Any, name: str = "image_size") -> tuple[int, int]:
    """An int (square) or (h, w) of positive ints -> (h, w); ValueError otherwise."""
    hw = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    if not (isinstance(hw, (list, tuple)) and len(hw) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in hw)):
        raise ValueError(f"{name} must be an int or (h, w) of positive ints; got {size!r}")
    return tuple(hw)


@dataclass(frozen=True)
class TokenizerConfig:
    """Architecture of a `VideoTokenizer`. Every field is JSON-serialisable."""

    image_size: tuple[int, int] | int  # (h, w) of input frames; an int means square
    channels: int = 3  # input channels (3 for RGB)
    init_dim: int = 64  # width after the input conv
    max_dim: int | None = None  # cap on widths after compress_* layers (None: no cap)
    layers: tuple[LayerSpec, ...] = ("residual", "residual", "residual")  # encoder layers; decoder mirrors them
    codebook_size: int | None = None  # LFQ: a power of 2 (2**18 in the paper); must be None with FSQ
    use_fsq: bool = False  # finite scalar quantization instead of LFQ
    fsq_levels: tuple[int, ...] | None = None  # e.g. (8, 5, 5, 5) -> 1000 codes
    # FSQ's symmetric levels (evenly spaced in [-1, 1] for even level counts too) and, in training only, a uniform
    # offset in [-0.5, 0.5) on this share of the quantized values (vector-quantize-pytorch's `preserve_symmetry` /
    # `noise_dropout`, arXiv 2411.19842 sec. 3.2; the noise needs the symmetric levels; drawn from the global RNG,
    # like dropout)
    fsq_preserve_symmetry: bool = False
    fsq_noise_dropout: float = 0.0
    # FSQ has no auxiliary loss; > 0 adds LFQ's entropy loss on a soft assignment to FSQ's levels (weight * (per-token
    # entropy - codebook entropy); `magvit2.quantize.FSQuantizer`), at this temperature in squared level spacings
    fsq_entropy_loss_weight: float = 0.0
    fsq_entropy_temperature: float = 0.5
    dim_cond: int | None = None  # width of the optional conditioning vector (needed by cond_* layers)
    dim_cond_expansion_factor: float = 4.0  # cond vector is expanded by an MLP to dim_cond * this
    input_conv_kernel_size: tuple[int, int, int] = (7, 7, 7)  # (t, h, w) kernel of the causal stem
    output_conv_kernel_size: tuple[int, int, int] = (3, 3, 3)  # (t, h, w) kernel of the output conv
    residual_conv_kernel_size: int | tuple[int, int, int] = 3  # (t, h, w) kernel in residual blocks; (1, 3, 3):
    # spatial-only residuals, 3x cheaper, time mixed by the compress_time / attend_time layers
    norm_groups: int = 8  # GroupNorm groups (applied per frame, so normalisation stays causal)
    block_style: str = "paper"  # "paper": residual blocks of two norm->SiLU->conv stages, 3x3x3 time resamplers;
    # "seed": magvit2-pytorch's sizes for the same layer list (one conv per residual, light resamplers; about half the
    # parameters and FLOPs; magvit2.layers_seed)
    attn_dim_head: int = 32
    attn_heads: int = 8
    attn_dropout: float = 0.0
    linear_attn_dim_head: int = 8
    linear_attn_heads: int = 16
    ff_mult: int = 4  # feed-forward expansion of attention layers
    # LFQ (paper defaults: entropy 0.1, commitment 0.25)
    lfq_entropy_loss_weight: float = 0.1
    lfq_commitment_loss_weight: float = 0.25
    lfq_diversity_gamma: float = 1.0  # weight of the codebook-entropy term inside the entropy loss
    lfq_inv_temperature: float = 100.0  # sharpness of the soft code assignment used by the entropy
    lfq_entropy_groups: int | None = None  # codebook entropy over groups of bits; None: groups of <= 12 bits
    lfq_entropy_anneal_steps: int = 0  # 0: constant entropy weight
    lfq_entropy_anneal_start_weight: float | None = None  # weight at step 0, linearly annealed to the final one
    # > 0: a non-affine GroupNorm on the quantizer's projected values (FSQ's dimensions before its bound, LFQ's bits
    # before their sign), per frame: statistics over this many groups of them and the frame's h x w tokens (MAGVIT-v2's
    # norm before the quantizer; causal, no new weights); 0: off
    quantizer_norm_groups: int = 0
    # how the first frame becomes a latent frame on its own: "causal" (strided causal convs see 1 + k*f frames,
    # Open-MAGVIT2's rule) or "prepend" (f - 1 copies of the first frame are prepended, so every level works on
    # (k + 1) * f frames and the decoder drops f - 1: 25% more work at 9 frames; folders written before this field
    # existed load as "prepend")
    time_padding: str = "causal"
    format_version: int = field(default=1, compare=False)  # persistence format; bumped on breaking changes

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        set_("image_size", image_hw(self.image_size))
        set_("layers", tuple(_normalize_layer(s) for s in self.layers))
        for name in ("input_conv_kernel_size", "output_conv_kernel_size", "residual_conv_kernel_size"):
            k = getattr(self, name)
            k = (k, k, k) if isinstance(k, int) else tuple(k)
            if len(k) != 3 or any(not isinstance(v, int) or v < 1 or v % 2 == 0 for v in k):
                raise ValueError(f"{name} must be three odd positive ints; got {getattr(self, name)!r}")
            set_(name, k)
        if self.fsq_levels is not None:
            set_("fsq_levels", tuple(self.fsq_levels))
        for name in ("channels", "init_dim", "norm_groups", "attn_dim_head", "attn_heads", "linear_attn_dim_head",
                     "linear_attn_heads", "ff_mult"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if self.block_style not in BLOCK_STYLES:
            choices = ", ".join(map(repr, BLOCK_STYLES))
            raise ValueError(f"block_style must be one of {choices}; got {self.block_style!r}")
        if self.max_dim is not None and self.max_dim < self.init_dim:
            raise ValueError(f"max_dim ({self.max_dim}) must be >= init_dim ({self.init_dim})")
        self._validate_quantizer()
        has_cond_layer = any((s if isinstance(s, str) else s[0]) in COND_LAYERS for s in self.layers)
        if has_cond_layer and self.dim_cond is None:
            raise ValueError("cond_* layers need dim_cond (the width of the cond vector); got dim_cond=None")
        h, w = self.image_size
        f = self.space_compression
        if h % f or w % f:
            raise ValueError(f"image_size {self.image_size} must be divisible by the space compression {f}")
        if self.time_padding not in TIME_PADDINGS:
            raise ValueError(f"time_padding must be one of {TIME_PADDINGS}; got {self.time_padding!r}")
        if self.format_version != 1:
            raise ValueError(f"unsupported tokenizer format_version {self.format_version}; this package reads 1")

    def _validate_quantizer(self) -> None:
        if self.use_fsq:
            if not self.fsq_levels or any(not isinstance(v, int) or v < 2 for v in self.fsq_levels):
                raise ValueError(f"use_fsq=True needs fsq_levels, ints >= 2, e.g. (8, 5, 5, 5); got {self.fsq_levels}")
            if self.codebook_size is not None:
                raise ValueError("codebook_size must be None with FSQ (it is the product of fsq_levels)")
            p = self.fsq_noise_dropout
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise ValueError(f"fsq_noise_dropout must be in [0, 1); got {p!r}")
            if p > 0 and not self.fsq_preserve_symmetry:
                raise ValueError("fsq_noise_dropout > 0 needs fsq_preserve_symmetry=True (the library's noise assumes "
                                 "symmetric levels)")
            w, tau = self.fsq_entropy_loss_weight, self.fsq_entropy_temperature
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= w < float("inf"):
                raise ValueError(f"fsq_entropy_loss_weight must be a finite number >= 0; got {w!r}")
            if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 < tau < float("inf"):
                raise ValueError(f"fsq_entropy_temperature must be a finite number > 0; got {tau!r}")
            self._validate_norm_groups(len(self.fsq_levels), "FSQ dimensions")
            return
        if self.fsq_preserve_symmetry or self.fsq_noise_dropout or self.fsq_entropy_loss_weight:
            raise ValueError("fsq_preserve_symmetry / fsq_noise_dropout / fsq_entropy_loss_weight given but "
                             "use_fsq=False")
        k = self.codebook_size
        if not isinstance(k, int) or k < 2 or k & (k - 1):
            raise ValueError(f"LFQ codebook_size must be a power of 2 (e.g. 1024 or 2**18); got {k!r}")
        if self.fsq_levels is not None:
            raise ValueError("fsq_levels given but use_fsq=False")
        groups = self.lfq_entropy_groups
        if groups is not None and not 1 <= groups <= self.codebook_bits:
            raise ValueError(f"lfq_entropy_groups must be in [1, {self.codebook_bits}] (the code bits); got {groups}")
        if self.lfq_entropy_anneal_steps < 0:
            raise ValueError(f"lfq_entropy_anneal_steps must be >= 0; got {self.lfq_entropy_anneal_steps}")
        self._validate_norm_groups(self.codebook_bits, "LFQ code bits")

    def _validate_norm_groups(self, size: int, what: str) -> None:
        g = self.quantizer_norm_groups
        if isinstance(g, bool) or not isinstance(g, int) or g < 0 or (g and size % g):
            raise ValueError(f"quantizer_norm_groups must be 0 (off) or divide the {size} {what}; got {g!r}")

    # derived quantities -----------------------------------------------------------------------------------------

    @property
    def layer_names(self) -> list[str]:
        """Flat list of layer names, `consecutive_residual` expanded."""
        names = []
        for spec in self.layers:
            name, arg = (spec, None) if isinstance(spec, str) else spec
            names.extend(["residual"] * arg if name == "consecutive_residual" else [name])
        return names

    @property
    def time_compression(self) -> int:
        return 2 ** self.layer_names.count("compress_time")

    @property
    def space_compression(self) -> int:
        return 2 ** self.layer_names.count("compress_space")

    @property
    def effective_codebook_size(self) -> int:
        return math.prod(self.fsq_levels) if self.use_fsq else self.codebook_size

    @property
    def codebook_bits(self) -> int:
        return int(math.log2(self.codebook_size))

    @property
    def entropy_group_sizes(self) -> tuple[int, ...]:
        """Bits per group for the codebook entropy (exact with one group). Default: the fewest near-equal groups of
        <= 12 bits, e.g. 2**18 codes -> (9, 9), MAGVIT-v2's sub-group entropy; 2**13 -> (7, 6)."""
        bits = self.codebook_bits
        groups = self.lfq_entropy_groups or math.ceil(bits / 12)
        return tuple(bits // groups + (i < bits % groups) for i in range(groups))

    # persistence --------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        d["layers"] = [s if isinstance(s, str) else list(s) for s in self.layers]
        for key in ("input_conv_kernel_size", "output_conv_kernel_size", "residual_conv_kernel_size", "fsq_levels"):
            d[key] = None if d[key] is None else list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenizerConfig:
        """Inverse of `to_dict`; unknown keys raise ValueError. A config without `time_padding` was written before
        the field existed, when every tokenizer prepended first-frame copies: it loads as "prepend"."""
        if isinstance(d, dict) and "time_padding" not in d:
            d = {**d, "time_padding": "prepend"}
        return config_from_dict(cls, d)
