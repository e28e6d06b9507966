"""The Tokenizer tab's work, without gradio: an uploaded clip or image -> the tokenizer's reconstruction beside it,
PSNR/SSIM, the code map and codebook usage. Reading, reconstructing and measuring are `magvit2-reconstruct`'s
(`trainers.commands.reconstruct.load_clip` / `reconstruct_clip`); metrics are `magvit2.metrics`'."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from magvit2 import VideoTokenizer
from magvit2.metrics import codebook_usage
from magvit2.pixels import to_uint8
from trainers.commands.reconstruct import load_clip, reconstruct_clip
from trainers.data.captions import slugify
from trainers.data.video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from trainers.data.video_write import save_image_grid, write_video

CODE_TILE = 96  # code map cells are upscaled so a latent frame is about this many pixels wide


@dataclass
class TokenizerReport:
    """side_by_side: mp4 of original | reconstruction; code_map: png, one panel per latent frame, one colour per
    code; frames: clip length; codes_shape: (t', h', w'); distinct: codes used by this clip; usage: distinct /
    codebook_size; perplexity: exp(entropy) of the clip's code histogram."""

    side_by_side: Path
    code_map: Path
    psnr_db: float
    ssim: float
    frames: int
    codes_shape: tuple[int, int, int]
    distinct: int
    codebook_size: int
    usage: float
    perplexity: float

    def markdown(self) -> str:
        t, h, w = self.codes_shape
        return (f"**PSNR {self.psnr_db:.2f} dB, SSIM {self.ssim:.4f}** over {self.frames} frame"
                f"{'s' if self.frames > 1 else ''} -> {t}x{h}x{w} codes.  \n"
                f"Codebook usage by this clip: {self.distinct} distinct codes of {self.codebook_size} "
                f"({self.usage:.2%}), perplexity {self.perplexity:.1f}.")


def code_colours(codes: np.ndarray) -> np.ndarray:
    """Integer codes (any shape) -> uint8 RGB (..., 3): a fixed pseudo-random colour per code (a multiplicative hash
    of the code id), so equal codes look equal across frames and clips and neighbouring ids look different."""
    h = (codes.astype(np.uint64) * np.uint64(2654435761) + np.uint64(97)) & np.uint64(0xFFFFFF)
    rgb = np.stack([(h >> np.uint64(16)) & np.uint64(255), (h >> np.uint64(8)) & np.uint64(255),
                    h & np.uint64(255)], axis=-1)
    return (64 + rgb.astype(np.float32) * (191 / 255)).astype(np.uint8)  # no near-black cells


def reconstruct_upload(tokenizer: VideoTokenizer, path: str | Path, out_dir: Path, index: int,
                       training: dict[str, Any] | None = None, num_frames: int | None = None) -> TokenizerReport:
    """Reconstruct an uploaded file (video: its first frames, as `magvit2-reconstruct` picks them; image: one
    frame) and write `out_dir/NNN-<name>.mp4` (side by side) and `out_dir/NNN-<name>-codes.png`. Errors name the
    file by its own name, not by the folder the server keeps uploads in."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
        raise ValueError(f"{path.name} is not a video or an image: expected one of "
                         f"{' '.join(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)}; got {suffix or 'no extension'}")
    training = training or {}
    stride = training.get("frame_stride", 1)
    stride = stride if isinstance(stride, int) and not isinstance(stride, bool) and stride >= 1 else 1
    video = load_clip(tokenizer, path, num_frames, stride, training.get("num_frames"), name=path.name)
    device = next(tokenizer.parameters()).device
    video = video.to(device)
    result = reconstruct_clip(tokenizer, video)
    codes = result.codes[0].cpu()  # (t', h', w')
    usage, perplexity = codebook_usage(codes, tokenizer.codebook_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{index:03d}-{slugify(path.stem)}"
    side = write_video(out_dir / f"{stem}.mp4", to_uint8(torch.cat([video, result.recon], dim=-1)[0]), fps=8)
    cells = code_colours(codes.numpy())  # (t', h', w', 3)
    k = max(1, CODE_TILE // max(codes.shape[1], codes.shape[2]))
    code_map = save_image_grid(out_dir / f"{stem}-codes.png", cells.repeat(k, axis=1).repeat(k, axis=2),
                               nrow=codes.shape[0], padding=4)
    return TokenizerReport(side, code_map, float(result.psnr_db[0]), float(result.ssim[0]), int(video.shape[2]),
                           tuple(codes.shape), int(codes.unique().numel()), tokenizer.codebook_size, float(usage),
                           float(perplexity))
