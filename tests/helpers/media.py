"""Real test media made on the fly from images that scikit-image ships (no downloads, nothing committed)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# the photos of conftest's `captioned_media` fixture, in the order it writes them (video i is captioned "a {photo}")
MEDIA_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "brick")


def pan_frames(num_frames: int = 20, size: tuple[int, int] = (48, 64), photo: str = "astronaut", step: int = 3
               ) -> np.ndarray:
    """A camera pan over a real scikit-image photo: uint8 (num_frames, h, w, 3), every frame different."""
    from skimage import data

    h, w = size
    image = getattr(data, photo)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    canvas = (max(h, w) + step * num_frames) * 2
    image = np.asarray(Image.fromarray(np.ascontiguousarray(image[..., :3])).resize((canvas, canvas)))
    return np.stack([image[h // 2 + i * step: h // 2 + i * step + h, i * step: i * step + w]
                     for i in range(num_frames)])


def real_pan_clip(num_frames: int = 5, size: int | tuple[int, int] = 16, step: int = 2, photo: str = "astronaut"
                  ) -> torch.Tensor:
    """A camera pan over a real photo: float (1, 3, num_frames, h, w) in [-1, 1]."""
    from skimage import data

    h, w = (size, size) if isinstance(size, int) else size
    image = getattr(data, photo)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    canvas = max(h, w) * 3
    image = np.asarray(Image.fromarray(image[..., :3]).resize((canvas, canvas), Image.BILINEAR))
    top = [h // 2 + i * step // 2 for i in range(num_frames)]
    frames = [image[top[i]: top[i] + h, i * step: i * step + w] for i in range(num_frames)]
    video = torch.from_numpy(np.stack(frames)).float() / 127.5 - 1  # (t, h, w, 3)
    return video.permute(3, 0, 1, 2).unsqueeze(0).contiguous()
