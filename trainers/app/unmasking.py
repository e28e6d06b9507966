"""The unmasking view: what the video looks like after each MaskGIT step.

`StepRecorder` is a `callback_on_step_end` (diffusers' convention, `maskgit.pipeline_output`) that keeps, after each
step, the codes with [MASK] where positions are still masked ("latents") and every position filled with the current
estimate ("preview"). `render_unmasking` decodes the previews in one batch and dims the pixels whose code is still
masked, so each step shows the video the model has settled on so far (bright) and its current guess for the rest
(dim). Masked codes have no pixels of their own, so the guess stands in for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from magvit2 import VideoTokenizer
from magvit2.pixels import to_uint8
from trainers.data.video_write import save_image_grid, write_video

MASKED_TINT = np.array([40, 44, 60], dtype=np.float32)  # masked pixels: 35% of the guess over this dark blue-grey
GUESS_WEIGHT = 0.35
DECODE_CHUNK = 8  # previews decoded per tokenizer call


class StepRecorder:
    """`callback_on_step_end` for `TextToVideoPipeline`: keeps the first video's codes after each step (cleared when
    a new video starts at step 0) and calls `on_step(step, num_steps)`. Draws no randomness, so the video does not
    depend on it."""

    tensor_inputs = ("latents", "preview")

    def __init__(self, on_step: Callable[[int, int], None] | None = None) -> None:
        self.on_step = on_step
        self.latents: list[torch.Tensor] = []  # per step: (t', h', w') long, [MASK] = mask id
        self.previews: list[torch.Tensor] = []  # per step: (t', h', w') long, every position filled

    def __call__(self, pipe: Any, step: int, timestep: int, kwargs: dict[str, torch.Tensor]) -> dict:
        if step == 0:
            self.latents, self.previews = [], []
        self.latents.append(kwargs["latents"][0].detach().cpu())
        self.previews.append(kwargs["preview"][0].detach().cpu())
        if self.on_step is not None:
            self.on_step(step, step + timestep + 1)  # timestep counts down: num_steps - 1 - step
        return {}


@dataclass
class UnmaskingView:
    """frames: uint8 (S, t, h, w, 3), the clip after each of the S steps, still-masked pixels dimmed; masked:
    (S,) fraction of codes still masked after each step."""

    frames: np.ndarray
    masked: np.ndarray


@torch.no_grad()
def render_unmasking(tokenizer: VideoTokenizer, latents: list[torch.Tensor], previews: list[torch.Tensor],
                     mask_id: int) -> UnmaskingView:
    """Decode each step's preview codes (t', h', w') and dim the pixels of codes that were still `mask_id`."""
    if not previews or len(latents) != len(previews):
        raise ValueError(f"need one latents and one preview per step; got {len(latents)} and {len(previews)}")
    codes = torch.stack(previews)  # (S, t', h', w')
    masks = torch.stack(latents) == mask_id  # (S, t', h', w')
    device = next(tokenizer.parameters()).device
    videos = [tokenizer.decode_from_code_indices(chunk.to(device)).float().cpu()
              for chunk in codes.split(DECODE_CHUNK)]
    frames = to_uint8(torch.cat(videos))  # (S, t, h, w, 3)
    t, h, w = frames.shape[1:4]
    f = tokenizer.time_compression
    latent_of_frame = [0] + [1 + (i - 1) // f for i in range(1, t)]  # causal: frame 0 alone, then f per latent
    pixel_mask = masks[:, latent_of_frame]  # (S, t, h', w')
    pixel_mask = pixel_mask.repeat_interleave(h // masks.shape[2], 2).repeat_interleave(w // masks.shape[3], 3)
    pixel_mask = pixel_mask.numpy()[..., None]  # (S, t, h, w, 1)
    dimmed = (GUESS_WEIGHT * frames + (1 - GUESS_WEIGHT) * MASKED_TINT).round().astype(np.uint8)
    masked_fraction = masks.flatten(1).float().mean(1).numpy()
    return UnmaskingView(np.where(pixel_mask, dimmed, frames), masked_fraction)


def _pick(n: int, most: int) -> list[int]:
    """At most `most` indices spread evenly over range(n), the first and the last included."""
    return sorted({round(x) for x in np.linspace(0, n - 1, min(n, most))})


def _upscale(frames: np.ndarray, tile: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (..., h, w, 3) by the integer factor that brings the longer side near `tile`."""
    k = max(1, tile // max(frames.shape[-3], frames.shape[-2]))
    return frames.repeat(k, axis=-3).repeat(k, axis=-2)


def write_unmasking(view: UnmaskingView, out_dir: Path, stem: str, max_rows: int = 16, max_columns: int = 9,
                    tile: int = 64, fps: float = 4) -> tuple[Path, Path]:
    """`out_dir/stem.png`: a strip with one row per step (at most `max_rows`, the last included) and one column per
    frame (at most `max_columns`); `out_dir/stem.mp4`: one video frame per step, the clip's frames side by side
    (scrub it to watch the unmasking). Returns (png, mp4)."""
    s, t = view.frames.shape[:2]
    columns = _pick(t, max_columns)
    shown = _upscale(view.frames[:, columns], tile)  # (S, c, H, W, 3)
    rows = _pick(s, max_rows)
    strip = save_image_grid(out_dir / f"{stem}.png", shown[rows].reshape(-1, *shown.shape[2:]), nrow=len(columns))
    gap = np.full((s, shown.shape[2], 2, 3), 255, dtype=np.uint8)
    pieces = [piece for c in range(len(columns)) for piece in ((gap,) if c else ()) + (shown[:, c],)]
    video = write_video(out_dir / f"{stem}.mp4", np.concatenate(pieces, axis=2), fps=fps)
    return strip, video
