"""Typed, self-validating configuration of the MaskGit transformer (stage two).

`MaskGitConfig` holds the architecture of `maskgit.transformer.MaskGitTransformer` (training-objective settings such
as condition dropout and label smoothing belong to the trainer). It round-trips through JSON (`to_dict` /
`from_dict`) and rejects unknown keys.

Token factorisation (MAGVIT-v2 §3.1): a codebook of `2**K` codes with K > 14 is predicted as two sub-tokens:
`hi = idx >> lo_bits` and `lo = idx & (2**lo_bits - 1)` with `hi_bits = ceil(K / 2)`, `lo_bits = floor(K / 2)`
(2**18 -> 512 x 512; 2**19 -> 1024 x 512). Each sub-token has its own embedding table (+1 mask row) and its own
output head. `factorize_codes` does this for power-of-two (LFQ) codebooks. `code_factors` names the sub-token
vocabularies explicitly (mixed radix, most significant first); for an FSQ codebook with levels (8, 5, 5, 5) the
factors (5, 5, 5, 8) make each sub-token exactly one FSQ dimension, so codes that differ in one level share three
of four embeddings and targets. The MaskGit trainer does this for FSQ tokenizers above 2**14 codes (the same rule
as LFQ) or when `factorize_codes` is True. On the demo's 1,000 FSQ codes one head wins: the per-dimension heads lost
digit accuracy and frame consistency on two of three stage ones (waves 18-19, docs/experiments.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from magvit2.serialization import config_from_dict

FACTORIZE_ABOVE = 2**14  # auto: factorise codebooks larger than this (power of two only)
POSITION_ENCODINGS = ("learned", "rotary", "both")
_LEGACY_KEYS = ("cond_drop_prob", "label_smoothing")  # training settings stored by earlier versions


def _is_pow2(k: int) -> bool:
    return k >= 2 and k & (k - 1) == 0


def factor_vocab_sizes(codebook_size: int, factorize: bool) -> tuple[int, ...]:
    """Vocabulary of each sub-token: `(codebook_size,)` or `(2**ceil(K/2), 2**floor(K/2))` for `2**K` codes."""
    if not factorize:
        return (codebook_size,)
    bits = codebook_size.bit_length() - 1
    lo_bits = bits // 2
    return (2 ** (bits - lo_bits), 2**lo_bits)


@dataclass(frozen=True)
class MaskGitConfig:
    """Architecture of a `MaskGitTransformer`. Every field is JSON-serialisable."""

    codebook_size: int  # tokenizer vocabulary; codes lie in [0, codebook_size); mask id = codebook_size
    latent_shape: tuple[int, int, int]  # (t', h', w'): the largest token grid (fewer latent frames also work)
    dim: int = 256  # transformer width
    depth: int = 4  # number of (self-attn, cross-attn, FF) blocks
    heads: int = 8
    dim_head: int = 32
    ff_mult: int = 4  # GLU feed-forward expansion
    text_dim: int = 384  # width of the text-encoder embeddings (cross-attention context); 384 = MiniLM-L6
    dropout: float = 0.0  # attention / FF / embedding dropout (nn.Dropout: uses torch's global RNG when > 0)
    factorize_codes: bool | None = None  # None: auto (True when codebook_size > 2**14 and a power of two)
    code_factors: tuple[int, ...] | None = None  # explicit sub-token vocabularies (most significant first)
    self_condition: bool = False  # feed back the previous pass's final hidden states (Chen et al.)
    text_adaptive_norm: bool = False  # also condition every norm on the pooled text (adaptive RMSNorm, DiT's
    # adaLN finding), besides cross-attention
    position_encoding: str = "learned"  # "learned": factorised (t, h, w) tables added to the input; "rotary":
    # axial 3-D rotary positions in self-attention (attention sees relative offsets: a shape learned at one place
    # is known everywhere); "both": the two together
    attn_flash: bool = True  # F.scaled_dot_product_attention (flash / mem-efficient / math kernels)
    format_version: int = field(default=1, compare=False)

    def __post_init__(self) -> None:
        k = self.codebook_size
        if not isinstance(k, int) or isinstance(k, bool) or k < 2:
            raise ValueError(f"codebook_size must be an int >= 2; got {k!r}")
        shape = self.latent_shape
        if not (isinstance(shape, (list, tuple)) and len(shape) == 3
                and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
            raise ValueError(f"latent_shape must be (t', h', w') of three positive ints; got {shape!r}")
        object.__setattr__(self, "latent_shape", tuple(shape))
        for name in ("dim", "depth", "heads", "dim_head", "ff_mult", "text_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1]; got {self.dropout!r}")
        if self.factorize_codes not in (None, True, False):
            raise ValueError(f"factorize_codes must be None (auto), True or False; got {self.factorize_codes!r}")
        if self.factorize_codes and self.code_factors is None and not (_is_pow2(k) and k >= 4):
            raise ValueError(f"factorize_codes=True needs a power-of-two codebook_size >= 4 (LFQ); got {k}")
        if self.code_factors is not None:
            factors = self.code_factors
            if not (isinstance(factors, (list, tuple)) and len(factors) >= 1
                    and all(isinstance(v, int) and not isinstance(v, bool) and v >= 2 for v in factors)):
                raise ValueError(f"code_factors must be a list of ints >= 2 (e.g. FSQ levels); got {factors!r}")
            if math.prod(factors) != k:
                raise ValueError(f"code_factors {tuple(factors)} multiply to {math.prod(factors)}, but "
                                 f"codebook_size is {k}")
            if self.factorize_codes is False:
                raise ValueError("code_factors needs factorize_codes None or True; got False")
            object.__setattr__(self, "code_factors", tuple(factors))
        if self.position_encoding not in POSITION_ENCODINGS:
            raise ValueError(f"position_encoding must be one of {', '.join(POSITION_ENCODINGS)}; "
                             f"got {self.position_encoding!r}")
        if self.position_encoding != "learned" and self.dim_head < 6:
            raise ValueError(f"rotary positions need dim_head >= 6 (2 rotated dims per axis); got {self.dim_head}")
        if self.format_version != 1:
            raise ValueError(f"unsupported maskgit format_version {self.format_version}; this package reads 1")

    # derived quantities -----------------------------------------------------------------------------------------

    @property
    def factorized(self) -> bool:
        """Whether codes are predicted as several sub-tokens (`code_factors`, or `factorize_codes` resolved)."""
        if self.code_factors is not None:
            return len(self.code_factors) > 1
        if self.factorize_codes is None:
            return self.codebook_size > FACTORIZE_ABOVE and _is_pow2(self.codebook_size)
        return self.factorize_codes

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        """Vocabulary per factor, e.g. `(1024,)`, `(512, 512)` for 2**18 codes or `(5, 5, 5, 8)` for FSQ; their
        product = codebook_size."""
        if self.code_factors is not None:
            return self.code_factors
        return factor_vocab_sizes(self.codebook_size, self.factorized)

    @property
    def learned_positions(self) -> bool:
        return self.position_encoding in ("learned", "both")

    @property
    def rotary_positions(self) -> bool:
        return self.position_encoding in ("rotary", "both")

    @property
    def mask_id(self) -> int:
        """Id of the [MASK] token in (merged) code sequences; each factor's own mask id is its vocab size."""
        return self.codebook_size

    @property
    def seq_len(self) -> int:
        """Largest sequence length n = t' * h' * w'."""
        return math.prod(self.latent_shape)

    # persistence ------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["latent_shape"] = list(self.latent_shape)
        out["code_factors"] = None if self.code_factors is None else list(self.code_factors)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MaskGitConfig:
        """Inverse of `to_dict`; unknown keys raise ValueError (strict)."""
        if isinstance(data, Mapping):  # folders written by earlier versions also hold these training settings
            data = {k: v for k, v in data.items() if k not in _LEGACY_KEYS}
        return config_from_dict(cls, data)
