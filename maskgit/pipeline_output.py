"""What `TextToVideoPipeline.__call__` returns, following diffusers' conventions: a `TextToVideoPipelineOutput`
with `.frames` (or a `(frames,)` tuple with `return_dict=False`), and `output_type` in

* "np"     float32 numpy (b, t, h, w, 3) in [0, 1] (diffusers' `export_to_video(frames[0])` multiplies by 255);
* "pt"     float torch (b, 3, t, h, w) in [-1, 1]: this package's pixel convention (diffusers' video pipelines
           give (b, t, 3, h, w) in [0, 1]);
* "pil"    a list (one per video) of lists of `PIL.Image.Image` frames;
* "latent" the sampled codes, long (b, t', h', w') in [0, codebook_size).

Also the `callback_on_step_end` plumbing: `callback_on_step_end(pipe, step, timestep, callback_kwargs) -> dict`,
called after each decoding step; `timestep` counts down (num_steps - 1 - step, as aMUSEd's scheduler does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from magvit2.pixels import to_uint8

OUTPUT_TYPES = ("np", "pt", "pil", "latent")

# tensors a callback_on_step_end may ask for (callback_on_step_end_tensor_inputs): the codes after the step with
# [MASK] = codebook_size ("latents"), every position filled with the current estimate ("preview"), and the number
# of positions still masked per video ("num_masked")
CALLBACK_TENSOR_INPUTS = ("latents", "preview", "num_masked")

StepEndCallback = Callable[[Any, int, int, dict[str, Tensor]], dict[str, Any]]


@dataclass
class TextToVideoPipelineOutput:
    """`frames`: the videos in the requested `output_type` (see the module docstring). Indexable like diffusers'
    outputs: `output[0]` is `frames`."""

    frames: Tensor | np.ndarray | list[list[Any]]

    def to_tuple(self) -> tuple[Any]:
        return (self.frames,)

    def __getitem__(self, index: int) -> Any:
        return self.to_tuple()[index]


def check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}; got {output_type!r}")


def check_callback(callback_on_step_end: Any, tensor_inputs: Sequence[str]) -> list[str]:
    if callback_on_step_end is not None and not callable(callback_on_step_end):
        raise ValueError(f"callback_on_step_end must be callable; got {type(callback_on_step_end).__name__}")
    names = list(tensor_inputs)
    unknown = sorted(set(names) - set(CALLBACK_TENSOR_INPUTS))
    if unknown:
        raise ValueError(f"callback_on_step_end_tensor_inputs {unknown} are not available; choose from "
                         f"{list(CALLBACK_TENSOR_INPUTS)}")
    return names


def step_end_kwargs(names: Sequence[str], codes: Tensor, preview: Tensor, num_masked: Tensor,
                    grid: Sequence[int]) -> dict[str, Tensor]:
    """The callback_kwargs of one step: the requested tensors, codes shaped (b, t', h', w')."""
    b = codes.shape[0]
    available = {"latents": codes.view(b, *grid), "preview": preview.view(b, *grid), "num_masked": num_masked}
    return {name: available[name] for name in names}


def check_callback_result(result: Any) -> None:
    """diffusers' callbacks return a dict (of tensors to replace). MaskGIT's state is the codes and their
    confidences, so returned values are not fed back into sampling; anything but a dict (or None) is an error."""
    if result is not None and not isinstance(result, dict):
        raise ValueError(f"callback_on_step_end must return a dict (diffusers' convention); got "
                         f"{type(result).__name__}")


def make_step_fn(pipe: Any, callback: Callable[[int, int, Tensor], None] | None,
                 callback_on_step_end: StepEndCallback | None, tensor_inputs: Sequence[str], grid: Sequence[int],
                 offset: int, total: int, bar: Any) -> Callable[[Any], None]:
    """The sampler's per-step hook (a `SamplerStep` in): the progress bar, `callback(step, total, codes)` and
    `callback_on_step_end(pipe, step, timestep, kwargs)`; steps counted from `offset` over `total` (all windows)."""
    def step_fn(state: Any) -> None:
        step = offset + state.step
        bar.update(step + 1 - bar.n)
        if callback is not None:
            callback(step, total, state.codes.view(state.codes.shape[0], *grid))
        if callback_on_step_end is not None:
            kwargs = step_end_kwargs(tensor_inputs, state.codes, state.preview, state.num_masked, grid)
            check_callback_result(callback_on_step_end(pipe, step, total - 1 - step, kwargs))

    return step_fn


def postprocess_video(video: Tensor, output_type: str) -> Tensor | np.ndarray | list[list[Any]]:
    """Float video (b, 3, t, h, w) in [-1, 1] -> `output_type` ("np", "pt" or "pil")."""
    video = video.float().clamp(-1.0, 1.0)
    if output_type == "pt":
        return video
    if output_type == "np":
        frames = ((video + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 4, 1)  # (b, t, h, w, 3)
        return np.ascontiguousarray(frames.cpu().numpy())
    from PIL import Image

    return [[Image.fromarray(frame) for frame in clip] for clip in to_uint8(video)]  # (b) x (t) PIL images


def numpy_to_uint8(frames: np.ndarray) -> np.ndarray:
    """"np" frames (float in [0, 1]) -> uint8 the way diffusers' `export_to_video` writes them (x * 255, truncated)."""
    return (np.asarray(frames) * 255).astype(np.uint8)


__all__ = ["CALLBACK_TENSOR_INPUTS", "OUTPUT_TYPES", "TextToVideoPipelineOutput", "numpy_to_uint8",
           "postprocess_video"]
