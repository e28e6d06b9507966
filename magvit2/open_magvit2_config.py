"""Configuration of the Open-MAGVIT2 video tokenizer architecture (`magvit2.open_magvit2`).

`OpenMagvit2Config` holds their `ddconfig` (ch, ch_mult, num_res_blocks, z_channels, resolution, in/out channels)
under our names, plus the few attributes every caller of a `VideoTokenizer` reads from `tokenizer.config`
(`image_size` as a tuple, `use_fsq`, `fsq_levels`, `to_dict()`). It round-trips through JSON and rejects unknown
keys; the `architecture` key is what `VideoTokenizer.from_pretrained` dispatches on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from magvit2.config import TokenizerConfig, image_hw
from magvit2.serialization import config_from_dict

ARCHITECTURE = "open_magvit2"
NORM_GROUPS = 32  # every GroupNorm of the architecture has 32 groups (eps 1e-6)


@dataclass(frozen=True)
class OpenMagvit2Config:
    """Architecture of an `OpenMagvit2Tokenizer`. Every field is JSON-serialisable."""

    image_size: tuple[int, int] | int = 128  # (h, w) of input frames (their `resolution`); an int means square
    channels: int = 3  # pixel channels in and out (their in_channels == out_ch)
    ch: int = 128  # width after the input conv (their `ch`); a multiple of 32 (GroupNorm groups)
    ch_mult: tuple[int, ...] = (1, 2, 2, 4)  # width multiplier per level; each level but the last downsamples
    num_res_blocks: int = 4  # residual blocks per level, and in each middle stack
    z_channels: int = 18  # latent width = code bits (LFQ without projections)
    codebook_size: int = 2**18  # 2 ** z_channels
    architecture: str = ARCHITECTURE  # what `VideoTokenizer.from_pretrained` dispatches on
    format_version: int = field(default=1, compare=False)  # persistence format; bumped on breaking changes

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        if self.architecture != ARCHITECTURE:
            raise ValueError(f"OpenMagvit2Config.architecture must be {ARCHITECTURE!r}; got {self.architecture!r}")
        set_("image_size", image_hw(self.image_size))
        mult = tuple(self.ch_mult) if isinstance(self.ch_mult, (list, tuple)) else self.ch_mult
        if not (isinstance(mult, tuple) and mult and all(isinstance(m, int) and m >= 1 for m in mult)):
            raise ValueError(f"ch_mult must be a non-empty list of positive ints, e.g. (1, 2, 2, 4); got "
                             f"{self.ch_mult!r}")
        set_("ch_mult", mult)
        for name in ("channels", "ch", "num_res_blocks", "z_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if self.ch % NORM_GROUPS:
            raise ValueError(f"ch must be a multiple of {NORM_GROUPS} (GroupNorm groups); got {self.ch}")
        if self.codebook_size != 2**self.z_channels:
            raise ValueError(f"codebook_size must be 2 ** z_channels = {2**self.z_channels} (one bit per latent "
                             f"channel); got {self.codebook_size}")
        h, w = self.image_size
        s = self.space_compression
        if h % s or w % s:
            raise ValueError(f"image_size {self.image_size} must be divisible by the space compression {s}")
        if (h // s) * (w // s) < 2:
            raise ValueError(f"image_size {self.image_size} gives a 1x1 latent; the decoder's adaptive norm needs >= 2 "
                             "latent positions (their unbiased variance)")
        if self.format_version != 1:
            raise ValueError(f"unsupported open_magvit2 format_version {self.format_version}; this package reads 1")

    # derived quantities -----------------------------------------------------------------------------------------

    @property
    def level_strides(self) -> tuple[tuple[int, int, int], ...]:
        """(t, h, w) stride of each downsampling level: (1, 2, 2) after a level whose multiplier is 1, else
        (2, 2, 2). One entry per level but the last (the last level does not downsample)."""
        return tuple((1 if m == 1 else 2, 2, 2) for m in self.ch_mult[:-1])

    @property
    def time_compression(self) -> int:
        return math.prod(s[0] for s in self.level_strides)

    @property
    def space_compression(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def init_dim(self) -> int:
        """Width after the input conv (sizes the GAN discriminator when fine-tuning, as TokenizerConfig.init_dim)."""
        return self.ch

    @property
    def max_dim(self) -> int:
        return self.ch * max(self.ch_mult)

    @property
    def use_fsq(self) -> bool:
        return False

    @property
    def fsq_levels(self) -> None:
        return None

    @property
    def dim_cond(self) -> None:
        return None

    @property
    def effective_codebook_size(self) -> int:
        return self.codebook_size

    @property
    def codebook_bits(self) -> int:
        return self.z_channels

    def quantizer_config(self) -> TokenizerConfig:
        """The settings `magvit2.quantize.LFQuantizer` reads (codebook size; our default entropy/commitment weights,
        used only if the model is trained), as the `TokenizerConfig` that class takes."""
        return TokenizerConfig(image_size=self.image_size, channels=self.channels, init_dim=self.z_channels,
                               layers=(), codebook_size=self.codebook_size)

    # persistence --------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        d["ch_mult"] = list(self.ch_mult)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpenMagvit2Config:
        """Inverse of `to_dict`; unknown keys raise ValueError."""
        return config_from_dict(cls, d)

    @classmethod
    def from_ddconfig(cls, ddconfig: dict[str, Any], n_embed: int | None = None, image_size: int | None = None
                      ) -> OpenMagvit2Config:
        """From Open-MAGVIT2's own `ddconfig` (+ `n_embed`, the codebook size). `image_size` overrides their
        `resolution` (the network is fully convolutional; the size only fixes the frames it accepts)."""
        if not isinstance(ddconfig, dict):
            raise ValueError(f"ddconfig must be a JSON object; got {type(ddconfig).__name__}")
        known = {"ch", "ch_mult", "num_res_blocks", "z_channels", "resolution", "in_channels", "out_ch", "double_z"}
        unknown = sorted(set(ddconfig) - known)
        if unknown:
            raise ValueError(f"unknown ddconfig keys {unknown}; known: {sorted(known)}")
        if ddconfig.get("double_z", False):
            raise ValueError("ddconfig.double_z=True is a continuous (KL) autoencoder; Open-MAGVIT2 tokenizers use "
                             "False")
        in_ch, out_ch = ddconfig.get("in_channels", 3), ddconfig.get("out_ch", ddconfig.get("in_channels", 3))
        if in_ch != out_ch:
            raise ValueError(f"ddconfig in_channels ({in_ch}) and out_ch ({out_ch}) must match for a tokenizer")
        missing = [k for k in ("ch", "ch_mult", "num_res_blocks", "z_channels") if k not in ddconfig]
        if missing:
            raise ValueError(f"ddconfig is missing {missing}")
        size = image_size if image_size is not None else ddconfig.get("resolution", 128)
        z = ddconfig["z_channels"]
        return cls(image_size=size, channels=in_ch, ch=ddconfig["ch"], ch_mult=tuple(ddconfig["ch_mult"]),
                   num_res_blocks=ddconfig["num_res_blocks"], z_channels=z,
                   codebook_size=n_embed if n_embed is not None else 2**z)
