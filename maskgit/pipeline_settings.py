"""`PipelineDefaults`: the sampling settings a `TextToVideoPipeline` uses when a call does not give them.

Stored under "defaults" in a pipeline folder's `pipeline.json`; round-trips through JSON (`to_dict` / `from_dict`)
and rejects unknown keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from magvit2.serialization import config_from_dict

from .sampler import REFINE_UNITS, UNMASK_ORDERS
from .schedule import SCHEDULES


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class PipelineDefaults:
    """Sampling settings used when `__call__` is not given them; stored in `pipeline.json`."""

    num_frames: int | None = None  # None: the longest clip the transformer's latent grid holds
    num_inference_steps: int = 12  # MaskGIT decoding steps
    guidance_scale: float | tuple[float, float] = 3.0  # uncond + s*(cond - uncond) >= 0; 1 = none; (start, end) = ramp
    temperature: float = 1.0  # token sampling temperature (0 = greedy)
    choice_temperature: float = 4.5  # Gumbel noise on the confidence, annealed as 4.5 * (1 - r) (MaskGIT)
    top_k: int | None = None  # keep the k most likely codes per position (None = all)
    top_p: float | None = None  # nucleus sampling mass (None = all)
    mask_schedule: str = "cosine"  # fraction still masked after each step (maskgit.schedule)
    # which sampled tokens each step keeps: "confidence" (MaskGIT), "random", "frame" (earlier latent frames first) or
    # "halton" (a shifted 3D Halton order over the latent grid: each step's tokens spread evenly; maskgit.halton)
    unmask_order: str = "confidence"
    # after the last step, rounds that redraw some tokens given the rest and keep the more likely token
    # (maskgit.sampler: one model pass each; 0 = plain MaskGIT): a random refine_ratio of them (refine_unit "token"),
    # one latent frame's ("frame") or the least likely frame's ("worst_frame"), drawn at refine_temperature (None:
    # temperature; 0: the most likely token) and refine_guidance_scale (None: the last step's guidance; 1: none)
    refine_steps: int = 0
    refine_ratio: float = 0.125
    refine_unit: str = "token"
    refine_temperature: float | None = None
    refine_guidance_scale: float | None = None
    # candidates decoded per video, the one whose latent frames the model finds most likely given each other kept
    # (maskgit.sampler's best of N: best_of decodes + one pass per latent frame each; 1 = one decode)
    best_of: int = 1
    fps: float = 8  # frame rate for written videos (metadata only)

    def __post_init__(self) -> None:
        def positive_int(name: str, value: Any, allow_none: bool = False) -> None:
            if allow_none and value is None:
                return
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}; got {value!r}")

        positive_int("num_frames", self.num_frames, allow_none=True)
        positive_int("num_inference_steps", self.num_inference_steps)
        positive_int("top_k", self.top_k, allow_none=True)
        positive_int("best_of", self.best_of)
        if isinstance(self.refine_steps, bool) or not isinstance(self.refine_steps, int) or self.refine_steps < 0:
            raise ValueError(f"refine_steps must be an int >= 0; got {self.refine_steps!r}")
        if not (_is_number(self.refine_ratio) and 0.0 < self.refine_ratio <= 1.0):
            raise ValueError(f"refine_ratio must be in (0, 1]; got {self.refine_ratio!r}")
        if self.refine_unit not in REFINE_UNITS:
            raise ValueError(f"refine_unit must be one of {', '.join(REFINE_UNITS)}; got {self.refine_unit!r}")
        t = self.refine_temperature
        if t is not None and not (_is_number(t) and t >= 0):
            raise ValueError(f"refine_temperature must be a number >= 0 or None; got {t!r}")
        rg = self.refine_guidance_scale
        if rg is not None and not (_is_number(rg) and rg >= 0):
            raise ValueError(f"refine_guidance_scale must be a number >= 0 or None; got {rg!r}")
        g = self.guidance_scale
        if isinstance(g, list):
            object.__setattr__(self, "guidance_scale", g := tuple(g))
        if not (_is_number(g) or (isinstance(g, tuple) and len(g) == 2 and all(_is_number(x) for x in g))):
            raise ValueError(f"guidance_scale must be a number or a (start, end) pair; got {g!r}")
        if min(g if isinstance(g, tuple) else (g,)) < 0:  # uncond + s * (cond - uncond): s < 0 steers away
            raise ValueError(f"guidance_scale must be >= 0 (1 = no guidance, 0 = unconditional, > 1 = stronger "
                             f"prompt adherence); got {g!r}")
        for name in ("temperature", "choice_temperature"):
            if not _is_number(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a number >= 0; got {getattr(self, name)!r}")
        if self.top_p is not None and not (_is_number(self.top_p) and 0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1] or None; got {self.top_p!r}")
        if self.unmask_order not in UNMASK_ORDERS:
            raise ValueError(f"unmask_order must be one of {', '.join(UNMASK_ORDERS)}; got {self.unmask_order!r}")
        if self.mask_schedule not in SCHEDULES:
            raise ValueError(f"mask_schedule must be one of {', '.join(SCHEDULES)}; got {self.mask_schedule!r}")
        if not _is_number(self.fps) or self.fps <= 0:
            raise ValueError(f"fps must be a number > 0; got {self.fps!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if isinstance(self.guidance_scale, tuple):
            out["guidance_scale"] = list(self.guidance_scale)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineDefaults:
        """Inverse of `to_dict`; unknown keys raise ValueError."""
        return config_from_dict(cls, data)
