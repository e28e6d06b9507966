"""What PSNR simple lossy maps reach on a folder of held-out clips: the scale against which a tokenizer's PSNR reads.

`python -m benchmarks.psnr_ceiling [--val data/demo/tokenizer/val] [--size 32] [--frames 9] [--factor 4]`: the
clips as the demo's tokenizer evaluation reads them (`trainers.demo.report.evaluate_tokenizer`: the center crop of
each clip's first `frames` frames at `size`), then, per frame, average-pooling by `factor` (the tokenizer's space
compression) and upsampling back, bilinear and bicubic, with the pooled colours kept as floats (no bit budget at
all), with those colours rounded to L levels per channel (3 * log2(L) bits per pooled block and frame), and with the
pooled frames also averaged over the tokenizer's causal frame groups (frame 0 alone, then groups of 4). The demo's
tokenizer spends 10 bits (1,000 FSQ codes) per block of `factor` x `factor` pixels x 4 frames: 2.5 bits per block
and frame. Prints the config, versions and machine first.
"""

from __future__ import annotations

import argparse
import math
import platform
from pathlib import Path

import torch
import torch.nn.functional as F

from magvit2.metrics import psnr


def load_clips(val: Path, size: int, frames: int) -> torch.Tensor:
    """(n, 3, frames, size, size) in [-1, 1]: every clip of the folder as the demo's tokenizer evaluation reads it."""
    from trainers.data.folders import VideoFolderDataset
    from trainers.demo.report import center_clip_batches

    dataset = VideoFolderDataset(val, num_frames=frames, image_size=(size, size), random_crop=False,
                                 include_images=False)
    return torch.cat([video for _, video in center_clip_batches(dataset, 8)])


def per_frame(video: torch.Tensor, fn) -> torch.Tensor:
    """Applies fn to (b*t, c, h, w) frames of a (b, c, t, h, w) video."""
    b, c, t, h, w = video.shape
    out = fn(video.transpose(1, 2).reshape(b * t, c, h, w))
    return out.reshape(b, t, c, h, w).transpose(1, 2)


def pooled(video: torch.Tensor, factor: int, mode: str = "bicubic", levels: int | None = None) -> torch.Tensor:
    """Per frame: average-pool by factor, optionally round to `levels` per channel, upsample back with `mode`."""
    def fn(x: torch.Tensor) -> torch.Tensor:
        low = F.avg_pool2d(x, factor)
        if levels is not None:
            low = torch.round((low + 1) / 2 * (levels - 1)) / (levels - 1) * 2 - 1
        return F.interpolate(low, scale_factor=factor, mode=mode, align_corners=False)
    return per_frame(video, fn)


def causal_group_mean(video: torch.Tensor, group: int = 4) -> torch.Tensor:
    """Frame 0 alone, then each run of `group` frames replaced by its mean (a causal tokenizer's latent frames)."""
    parts = [video[:, :, :1]]
    for start in range(1, video.shape[2], group):
        chunk = video[:, :, start:start + group]
        parts.append(chunk.mean(dim=2, keepdim=True).expand_as(chunk))
    return torch.cat(parts, dim=2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--val", default="data/demo/tokenizer/val", help="folder of held-out clips (make demo's)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--frames", type=int, default=9)
    p.add_argument("--factor", type=int, default=4, help="space compression to pool by (the demo tokenizer's: 4)")
    a = p.parse_args(argv)
    video = load_clips(Path(a.val), a.size, a.frames)
    print(f"config: {video.shape[0]} clips from {a.val}, {a.frames} frames of {a.size}x{a.size}, pooling {a.factor}x")
    print(f"versions: torch {torch.__version__}, python {platform.python_version()}; machine: {platform.machine()}, "
          f"{torch.get_num_threads()} threads")

    def row(name: str, recon: torch.Tensor) -> None:
        print(f"  {name:<72s} {float(psnr(recon.clamp(-1, 1), video).mean()):6.2f} dB")

    row("mid-grey frames (all zeros)", torch.zeros_like(video))
    for mode in ("bilinear", "bicubic"):
        row(f"pooled colours as floats, {mode} up", pooled(video, a.factor, mode))
    row("pooled floats, bicubic, mean over causal frame groups", causal_group_mean(pooled(video, a.factor)))
    for levels in (4, 6, 10, 32):
        bits = 3 * math.log2(levels)
        row(f"pooled colours at {levels} levels per channel ({bits:.1f} bits per block and frame)",
            pooled(video, a.factor, levels=levels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
