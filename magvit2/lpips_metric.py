"""LPIPS with its learned linear heads (Zhang et al. 2018), as an EVALUATION metric: the number published tables
report. The training loss stays the head-less "LPIPS-style" distance of `magvit2.perceptual.LPIPSDistance`.

What is computed is `lpips.LPIPS(net="vgg", version="0.1")` of the `lpips` package, reimplemented here because that
package imports torchvision (which this project does not depend on): inputs in [-1, 1] are scaled by its
`ScalingLayer` ((x - shift) / scale, shift (-.030, -.088, -.188), scale (.458, .448, .450)); VGG16's relu1_2,
relu2_2, relu3_3, relu4_3 and relu5_3 features are unit-normalised over channels (x / (||x|| + 1e-10)); each squared
difference goes through its 1x1 linear head (non-negative weights, no bias) and is averaged over space; the five
layers are summed. Videos are scored frame by frame and averaged.

Weights (nothing is downloaded):
* the heads: `lpips/weights/v0.1/vgg.pth` (five tensors `lin{0..4}.model.1.weight` of shape (1, C, 1, 1)), read
  with `torch.load(weights_only=True)` from an explicit path, else from the installed `lpips` package's files,
  found without importing it (`pip install lpips`, or `pip install --no-deps lpips` beside a CPU torch: only its
  weight files are read);
* the VGG16 backbone: torchvision's ImageNet VGG16 (`vgg16-397923af.pth`), from an explicit path or torch's hub
  cache, by the rules of `magvit2.perceptual.resolve_vgg16_weights`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from magvit2.perceptual import VGG16Features, freeze_as_buffers, load_state_dict_file, resolve_vgg16_weights

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)  # relu1_2 ... relu5_3
HEADS_FILE = Path("weights") / "v0.1" / "vgg.pth"  # inside the lpips package
_EPS = 1e-10


def installed_lpips_heads() -> Path | None:
    """`lpips/weights/v0.1/vgg.pth` of an installed `lpips` package (located, not imported), or None."""
    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(folder) / HEADS_FILE
        if candidate.is_file():
            return candidate
    return None


def resolve_lpips_heads(path: str | os.PathLike | None = None) -> Path:
    """The heads file: `path` if given, else the installed lpips package's. FileNotFoundError says how to get it."""
    if path is not None:
        candidate = Path(path).expanduser()
        if not candidate.is_file():
            raise FileNotFoundError(f"LPIPS heads file not found: {candidate} (expected lpips' weights/v0.1/vgg.pth)")
        return candidate
    found = installed_lpips_heads()
    if found is None:
        raise FileNotFoundError("LPIPS needs the learned linear heads of the `lpips` package (weights/v0.1/vgg.pth), "
                                "which is not installed: pip install lpips (beside a CPU-only torch: pip install "
                                "--no-deps lpips; only its weight files are read), or pass the file with "
                                "--lpips-heads PATH")
    return found


def load_lpips_heads(path: str | os.PathLike | None = None) -> list[Tensor]:
    """The five head weights `(1, C, 1, 1)` (C = 64, 128, 256, 512, 512), checked: names, shapes, finite, >= 0."""
    file = resolve_lpips_heads(path)
    state = load_state_dict_file(file)
    heads = []
    for i, channels in enumerate(LPIPS_CHANNELS):
        key = f"lin{i}.model.1.weight"
        if key not in state:
            raise ValueError(f"{file}: not an LPIPS VGG heads file: no {key!r} (got {sorted(state)[:6]})")
        w = state[key].float()
        if tuple(w.shape) != (1, channels, 1, 1):
            raise ValueError(f"{file}: {key} has shape {tuple(w.shape)}; expected (1, {channels}, 1, 1) (VGG heads)")
        if not torch.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"{file}: {key} must hold finite, non-negative weights")
        heads.append(w)
    return heads


class LPIPS(nn.Module):
    """LPIPS (VGG, v0.1) with the learned heads: `LPIPS()(x, y)` -> distance per image `(n,)` or per video `(b,)`.

    Build with `vgg_weights=` (a torchvision VGG16 state dict file; default: torch's hub cache) and `heads=` (a path
    to lpips' vgg.pth; default: the installed lpips package's), or give `vgg=` (a `VGG16Features`, e.g. random for
    tests) instead of `vgg_weights`. Frozen; weights are non-persistent buffers, so it never enters a state_dict.
    """

    def __init__(self, vgg_weights: str | os.PathLike | None = None, heads: str | os.PathLike | None = None, *,
                 vgg: VGG16Features | None = None) -> None:
        super().__init__()
        if vgg is not None and vgg_weights is not None:
            raise ValueError("give vgg_weights (a file) or vgg (a VGG16Features module), not both")
        self.heads_file = resolve_lpips_heads(heads)
        head_weights = load_lpips_heads(self.heads_file)
        if vgg is None:
            vgg = VGG16Features()
            vgg.load_torchvision_state_dict(load_state_dict_file(resolve_vgg16_weights(vgg_weights)))
        self.vgg = vgg
        freeze_as_buffers(self.vgg)
        self.vgg.eval()
        for i, w in enumerate(head_weights):
            self.register_buffer(f"head{i}", w, persistent=False)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> LPIPS:
        super().train(mode)
        self.vgg.eval()
        return self

    @torch.no_grad()
    def forward(self, x: Tensor, y: Tensor, batch_size: int = 32) -> Tensor:
        """x, y: images `(n, 3, h, w)` or videos `(b, 3, t, h, w)` in [-1, 1] -> float32 distance per image `(n,)`
        or per video `(b,)` (mean over frames); 0 for identical inputs. Frames go through VGG `batch_size` at a time."""
        if x.shape != y.shape or x.ndim not in (4, 5) or x.shape[1] != 3:
            raise ValueError(f"LPIPS: x and y must both be (n, 3, h, w) or (b, 3, t, h, w); got {tuple(x.shape)}, "
                             f"{tuple(y.shape)}")
        b, is_video = x.shape[0], x.ndim == 5
        if is_video:
            x, y = (v.transpose(1, 2).flatten(0, 1) for v in (x, y))  # (b*t, 3, h, w)
        out = torch.cat([self._distance(x[i:i + batch_size], y[i:i + batch_size])
                         for i in range(0, x.shape[0], batch_size)])
        return out.view(b, -1).mean(dim=1) if is_video else out

    def _distance(self, x: Tensor, y: Tensor) -> Tensor:
        n = x.shape[0]
        both = torch.cat([x, y]).to(self.shift.dtype)  # (2n, 3, h, w): one VGG pass for both
        both = (both - self.shift) / self.scale
        dist = both.new_zeros(n, dtype=torch.float32)
        for i, feats in enumerate(self.vgg(both)):
            feats = feats.float()
            feats = feats / (feats.pow(2).sum(dim=1, keepdim=True).sqrt() + _EPS)
            diff = (feats[:n] - feats[n:]).pow(2)  # (n, C, h', w')
            head = getattr(self, f"head{i}")  # (1, C, 1, 1)
            dist = dist + (diff * head).sum(dim=1).mean(dim=(1, 2))  # 1x1 conv, then the spatial mean
        return dist
