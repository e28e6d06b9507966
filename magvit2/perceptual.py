"""LPIPS-style perceptual distance on a VGG16 feature stack written without torchvision. Off by default.

Weights are never downloaded. They come from an explicit local file (`.safetensors`, or `.pth`/`.pt` read with
`torch.load(weights_only=True)`) or from torch's hub cache (`$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth`, the file
`torchvision.models.vgg16(weights="IMAGENET1K_V1")` leaves there). `VGG16Features` uses torchvision's module indices
and parameter names (`features.0.weight` ... `features.28.bias`), so a torchvision `vgg16()` state dict, a
`features`-only state dict, or the full `vgg16-397923af.pth` loads as is (classifier keys are ignored).

The distance is "LPIPS-style without the learned linear heads" (LPIPS's `lpips=False` baseline): ImageNet-normalised
inputs, features at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3, unit-normalised over channels, squared difference
summed over channels and averaged over space, summed over the five layers with uniform weights.

The frozen network holds its weights as non-persistent buffers: they follow `.to(device)`, are never trained, and
never appear in the `state_dict()` of a module that holds this one.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

VGG16_CACHE_FILENAME = "vgg16-397923af.pth"  # torchvision's IMAGENET1K_V1 VGG16 checkpoint
# torchvision vgg16 "D" config: ints are 3x3 conv widths, "M" a 2x2 max-pool
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
LPIPS_LAYERS = {3: "relu1_2", 8: "relu2_2", 15: "relu3_3", 22: "relu4_3", 29: "relu5_3"}  # features index -> name
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_vgg16_cache_path() -> Path:
    """Where torchvision caches the VGG16 weights: `torch.hub.get_dir()/checkpoints/vgg16-397923af.pth`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_CACHE_FILENAME


def resolve_vgg16_weights(path: str | os.PathLike | None = None) -> Path:
    """The weights file to use: `path` if given, else torch's hub cache. Raises FileNotFoundError naming what was
    tried. Touches only the local filesystem."""
    candidates = [Path(path).expanduser()] if path is not None else [default_vgg16_cache_path()]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"VGG16 weights for the perceptual loss not found (tried: {tried}). Nothing is downloaded. Provide a local "
        "file with perceptual_weights_path= (a torchvision vgg16 state dict as .pth/.pt/.safetensors, e.g. "
        f"{VGG16_CACHE_FILENAME}), copy that file into {default_vgg16_cache_path().parent}, or set "
        "perceptual_weight=0 to train without the perceptual loss."
    )


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from `.safetensors` or `.pth`/`.pt`/`.bin` (never unpickles arbitrary objects)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if path.suffix in (".pth", ".pt", ".bin"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{path} must hold a state dict (name -> tensor); got {type(state).__name__}")
        return state
    raise ValueError(f"weights file must end in .safetensors, .pth, .pt or .bin; got {path}")


class VGG16Features(nn.Module):
    """torchvision's `vgg16().features` (13 convs, ReLUs, 5 max-pools) with the same indices and parameter names.

    forward: `(n, 3, h, w)` ImageNet-normalised -> the five LPIPS feature maps (relu1_2 ... relu5_3).
    Randomly initialised; call `load_torchvision_state_dict` (or build through `LPIPSDistance`) for real weights.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                in_channels = v
        self.features = nn.Sequential(*layers)

    def load_torchvision_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load `features.N.{weight,bias}` (a full torchvision vgg16 state dict; classifier keys ignored) or a bare
        `features` state dict (`N.{weight,bias}`). All 26 conv tensors must be present with the right shapes."""
        expected = self.state_dict()
        if not any(k.startswith("features.") for k in state):
            state = {f"features.{k}": v for k, v in state.items()}
        picked = {k: v for k, v in state.items() if k in expected}
        missing = sorted(set(expected) - set(picked), key=lambda k: int(k.split(".")[1]))
        if missing:
            raise ValueError(f"not a torchvision VGG16 state dict: missing {missing}; got keys {sorted(state)[:4]}...")
        bad = [f"{k}: expected {tuple(expected[k].shape)}, got {tuple(v.shape)}"
               for k, v in picked.items() if v.shape != expected[k].shape]
        if bad:
            raise ValueError(f"VGG16 weight shapes do not match: {bad}")
        self.load_state_dict(picked, strict=True)

    def forward(self, x: Tensor) -> list[Tensor]:
        taps = []
        for i, layer in enumerate(self.features[: max(LPIPS_LAYERS) + 1]):
            x = layer(x)
            if i in LPIPS_LAYERS:
                taps.append(x)  # (n, C_l, h / 2^l, w / 2^l)
        return taps


def freeze_as_buffers(module: nn.Module) -> None:
    """Turn every parameter into a non-persistent buffer: no grad, no optimizer, not in state_dict, moves with .to()."""
    for sub in module.modules():
        for name, param in list(sub.named_parameters(recurse=False)):
            delattr(sub, name)
            sub.register_buffer(name, param.detach().requires_grad_(False), persistent=False)


class LPIPSDistance(nn.Module):
    """LPIPS-style perceptual distance (uniform layer weights, no learned heads) on a frozen VGG16.

    Build with `weights_path=` (local file), with nothing (torch's hub cache), or `random_init=True` (tests only: a
    random VGG is not a perceptual metric). Construction never touches the network.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None, *, random_init: bool = False) -> None:
        super().__init__()
        if random_init and weights_path is not None:
            raise ValueError("give weights_path or random_init=True, not both")
        self.vgg = VGG16Features()
        if not random_init:
            path = resolve_vgg16_weights(weights_path)
            self.vgg.load_torchvision_state_dict(load_state_dict_file(path))
        freeze_as_buffers(self.vgg)
        self.vgg.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> LPIPSDistance:
        super().train(mode)
        self.vgg.eval()  # always frozen (VGG has no dropout/BN in `features`, but keep the statement true)
        return self

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """x, y: images `(n, 3, h, w)` or videos `(b, 3, t, h, w)`, float in [-1, 1] -> distance per image `(n,)` or
        per video `(b,)` (mean over frames), >= 0 and 0 for identical inputs. Gradients flow to both inputs."""
        if x.shape != y.shape or x.ndim not in (4, 5) or x.shape[1] != 3:
            raise ValueError(f"x and y must both be (n, 3, h, w) or (b, 3, t, h, w); got {tuple(x.shape)}, "
                             f"{tuple(y.shape)}")
        b, is_video = x.shape[0], x.ndim == 5
        if is_video:
            x, y = (v.transpose(1, 2).flatten(0, 1) for v in (x, y))  # (b*t, 3, h, w)
        n = x.shape[0]
        both = torch.cat([x, y]).to(self.mean.dtype)  # (2n, 3, h, w): one VGG pass for both
        both = ((both + 1) / 2 - self.mean) / self.std  # [-1, 1] -> ImageNet-normalised
        dist = both.new_zeros(n, dtype=torch.float32)
        for feats in self.vgg(both):
            feats = feats.float()
            # unit norm over channels; rsqrt(. + eps^2) keeps the gradient finite where a feature vector is all 0
            feats = feats * torch.rsqrt(feats.pow(2).sum(dim=1, keepdim=True) + 1e-20)
            fx, fy = feats[:n], feats[n:]
            dist = dist + (fx - fy).pow(2).sum(dim=1).mean(dim=(1, 2))  # (n,)
        return dist.view(b, -1).mean(dim=1) if is_video else dist
