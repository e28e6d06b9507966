"""Real test media made on the fly from images that scikit-image ships (no downloads, nothing committed)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


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


def weights_after_update(monkeypatch, trainer, module: torch.nn.Module, step: int) -> dict[str, torch.Tensor]:
    """A dict that `trainer.fit()` fills with `module`'s weights once `step` updates are done (monkeypatched
    train_step)."""
    snapshot: dict[str, torch.Tensor] = {}
    train_step = trainer.train_step

    def remember(batches):
        logs = train_step(batches)
        if trainer.step == step:
            snapshot.update({k: v.clone() for k, v in module.state_dict().items()})
        return logs

    monkeypatch.setattr(trainer, "train_step", remember)
    return snapshot
