"""Reconstruct clips with a trained tokenizer and measure them (the work behind `magvit2-reconstruct` and the
browser app's tokenizer tab: `load_clip` + `reconstruct_clip`).

Outputs never replace a user's file unasked: an input is never an output (even with `overwrite`), and an existing
`<name>.mp4` or `metrics.json` is refused unless `overwrite` (`--overwrite`). Inputs whose names clash get distinct
output names (`output_names`). Everything is checked before anything is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from magvit2 import VideoTokenizer
from magvit2.metrics import psnr, ssim
from magvit2.pixels import from_uint8, to_uint8
from magvit2.serialization import atomic_write_text
from magvit2.torch_utils import eval_mode
from magvit2.video_write import write_video
from trainers.data.video_io import IMAGE_EXTENSIONS, VideoReadError, probe_video, read_clip
from trainers.model_sources import tokenizer_dir

DEFAULT_MAX_LATENT_FRAMES = 9  # default clip length: up to 1 + 8f frames (33 at f = 4); --num-frames overrides


def clip_length(available: int, f: int, num_frames: int | None, trained: int | None = None) -> int:
    """Frames to reconstruct: `num_frames` (checked), else the longest 1 + k*f that fits, capped at the tokenizer's
    training clip length `trained` (when it recorded one that is 1 + k*f) or at 1 + 8f."""
    if num_frames is not None:
        if (num_frames - 1) % f:
            example = 1 + f * max((num_frames - 1) // f, 1)
            raise ValueError(f"--num-frames {num_frames} is not 1 + {f}k (e.g. {example})")
        if num_frames > available:
            raise ValueError(f"--num-frames {num_frames} but the clip has only {available} frames")
        return num_frames
    cap = (trained - 1) // f if trained is not None and (trained - 1) % f == 0 else DEFAULT_MAX_LATENT_FRAMES - 1
    return 1 + f * min((available - 1) // f, cap)


def output_names(paths: list[Path]) -> list[str]:
    """A distinct output stem per input: its stem; `stem-ext` when another input has that stem with another
    extension (`a.mp4`, `a.gif`); then `-2`, `-3`, ... (the same name in two folders: `clip`, `clip-2`)."""
    names: list[str] = []
    for path in paths:
        clash = any(p.stem == path.stem and p.suffix != path.suffix for p in paths)
        base = f"{path.stem}-{path.suffix[1:]}" if clash else path.stem
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def check_outputs(inputs: list[Path], outputs: list[Path], overwrite: bool) -> None:
    """Refuse (one line naming the file) an output that is an input, or that exists when not `overwrite`."""
    sources = {p.resolve() for p in inputs}
    for out in outputs:
        if out.resolve() in sources:
            raise FileExistsError(f"{out} is one of the inputs; refusing to overwrite an input: choose another "
                                  "--out-dir")
        if (out.exists() or out.is_symlink()) and not overwrite:
            raise FileExistsError(f"{out} exists; refusing to overwrite it: pass --overwrite, or choose another "
                                  "--out-dir")


def load_clip(tokenizer: VideoTokenizer, path: Path, num_frames: int | None = None, stride: int = 1,
              trained_frames: int | None = None, name: str | None = None) -> torch.Tensor:
    """A video's first frames (see `clip_length`) or an image, resized (short side) and center-cropped to the
    tokenizer's size: float (1, 3, t, h, w) in [-1, 1]. ValueError naming the file (as `name`, when given: an
    upload's own name rather than where the server keeps it) when it cannot be read."""
    size, f = tuple(tokenizer.config.image_size), tokenizer.time_compression
    try:
        is_image = path.suffix.lower() in IMAGE_EXTENSIONS
        available = 1 if is_image else 1 + (probe_video(path).num_frames - 1) // stride  # frames at `stride`
        frames = 1 if is_image else clip_length(available, f, num_frames, trained_frames)
        return from_uint8(read_clip(path, size, num_frames=frames, stride=stride))[None]
    except VideoReadError as e:
        shown = name or str(path)
        raise ValueError(f"cannot read {shown}: {e.reason.replace(str(path), shown)}") from e


@dataclass
class Reconstruction:
    """A clip through the tokenizer: recon float (b, 3, t, h, w) in [-1, 1], codes long (b, t', h', w'), and the
    per-clip PSNR (dB) and SSIM of recon against the input, each (b,)."""

    recon: torch.Tensor
    codes: torch.Tensor
    psnr_db: torch.Tensor
    ssim: torch.Tensor


@torch.no_grad()
def reconstruct_clip(tokenizer: VideoTokenizer, video: torch.Tensor) -> Reconstruction:
    """video float (b, 3, t, h, w) in [-1, 1] on the tokenizer's device -> `Reconstruction` (eval mode)."""
    with eval_mode(tokenizer):
        out = tokenizer.reconstruct(video)
    recon = out.recon.float().clamp(-1, 1)
    return Reconstruction(recon, out.codes, psnr(recon, video), ssim(recon, video))


@torch.no_grad()
def reconstruct_files(tokenizer_path: str | Path, inputs: list[str | Path], out_dir: str | Path,
                      num_frames: int | None = None, lossless: bool = False, side_by_side: bool = False,
                      device: str | None = None, overwrite: bool = False,
                      frame_stride: int | None = None) -> dict[str, Any]:
    """Reconstruct each input (video: first frames; image: 1 frame) at the tokenizer's size; write
    `OUT/<name>.mp4` and `OUT/metrics.json` (per-clip and mean PSNR/SSIM, measured before video encoding; SSIM of
    the [0, 1] frames, skimage's convention).
    Clip length and frame stride default to what the tokenizer was trained on (`VideoTokenizer.training_info`:
    recorded by the trainer's export), else the longest clip up to 1 + 8f and stride 1.
    Existing outputs are refused unless `overwrite`; an input is never overwritten."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"input not found: {p}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out-dir {out_dir} is a file, not a folder")
    names = output_names(paths)
    check_outputs(paths, [out_dir / f"{n}.mp4" for n in names] + [out_dir / "metrics.json"], overwrite)
    folder = tokenizer_dir(tokenizer_path)
    tokenizer = VideoTokenizer.from_pretrained(folder)
    tokenizer = tokenizer.to(device).eval()
    training = VideoTokenizer.training_info(folder)
    stride = frame_stride if frame_stride is not None else training.get("frame_stride", 1)
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"--frame-stride must be a positive int; got {stride!r}")
    size = tuple(tokenizer.config.image_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    clips = []
    for path, name in zip(paths, names):
        video = load_clip(tokenizer, path, num_frames, stride, training.get("num_frames")).to(device)
        result = reconstruct_clip(tokenizer, video)
        shown = torch.cat([video, result.recon], dim=-1) if side_by_side else result.recon
        write_video(out_dir / f"{name}.mp4", to_uint8(shown[0]), fps=8, lossless=lossless)
        clips.append({"input": str(path), "output": f"{name}.mp4", "frames": video.shape[2],
                      "psnr_db": float(result.psnr_db[0]), "ssim": float(result.ssim[0])})
    metrics = {"tokenizer": str(tokenizer_path), "image_size": list(size), "frame_stride": stride,
               "tokenizer_training": training, "clips": clips,
               "mean_psnr_db": sum(c["psnr_db"] for c in clips) / len(clips),
               "mean_ssim": sum(c["ssim"] for c in clips) / len(clips),
               "ssim_convention": "SSIM of the [0, 1] frames (skimage structural_similarity: Gaussian 11, sigma 1.5, "
                                  "data_range 1, population covariances), per frame, averaged"}
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics
