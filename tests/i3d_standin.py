"""A TorchScript stand-in for `i3d_torchscript.pt` (the I3D of StyleGAN-V's FVD, which cannot be downloaded here).

What is known of the real file, and mirrored here: it is the TF-Hub I3D (`deepmind/i3d-kinetics-400/1`, the FVD
network) ported to PyTorch and scripted; `forward(x, rescale=, resize=, return_features=)` takes `(b, 3, t, h, w)`,
`rescale=True` maps [0, 255] to [-1, 1] (x / 255 * 2 - 1), `resize=True` resizes every frame to 224x224 (bilinear),
and `return_features=True` returns the 400 logits before the softmax (shape (b, 400)); it refuses clips of fewer
than 9 frames (its (2, 7, 7) average pool before the logits). The module and parameter names follow
hassony2/kinetics_i3d_pytorch (`src/i3dpt.py`, the PyTorch port of the TF weights: `conv3d_1a_7x7.conv3d.weight`,
`.batch3d.*` batch norms with eps 1e-3, `mixed_3b.branch_1.0` / `.branch_1.1` / `.branch_3.1`, the logits conv
`conv3d_0c_1x1.conv3d` with a bias), including its max pools with padding fixed ahead of time and `ceil_mode`. The
converter does not rely on these names (it maps by structure); they make the stand-in as close to the port as the
public record allows. Test-only code: nothing in the package imports it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MIXED = {"mixed_3b": (192, (64, 96, 128, 16, 32, 32)), "mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
         "mixed_4b": (480, (192, 96, 208, 16, 48, 64)), "mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
         "mixed_4d": (512, (128, 128, 256, 24, 64, 64)), "mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
         "mixed_4f": (528, (256, 160, 320, 32, 128, 128)), "mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
         "mixed_5c": (832, (384, 192, 384, 48, 128, 128))}


class Unit3Dpy(nn.Module):
    """Conv3d with TF "SAME" padding (computed from the input size, as the port's stride-dependent pads do), then
    BatchNorm3d(eps=1e-3) and ReLU."""

    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1, relu: bool = True, bn: bool = True,
                 bias: bool = False, bn_affine: bool = True):
        super().__init__()
        self.k, self.s, self.relu, self.use_bn = k, s, relu, bn
        self.conv3d = nn.Conv3d(cin, cout, k, s, bias=bias)
        self.batch3d = nn.BatchNorm3d(cout, eps=1e-3, affine=bn_affine) if bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for i in [4, 3, 2]:
            size = x.shape[i]
            total = max(self.k - (self.s if size % self.s == 0 else size % self.s), 0)
            pads += [total // 2, total - total // 2]
        x = self.conv3d(F.pad(x, pads))
        if self.use_bn:
            x = self.batch3d(x)
        return F.relu(x) if self.relu else x


class MaxPool3dTFPadding(nn.Module):
    """The port's max pool: zero padding fixed from (kernel, stride), then MaxPool3d with ceil_mode."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        pads: list[int] = []
        for k, s in zip(reversed(kernel), reversed(stride)):
            total = max(k - s, 0)
            pads += [total // 2, total - total // 2]
        self.pad = nn.ConstantPad3d(tuple(pads), 0.0)
        self.pool = nn.MaxPool3d(kernel, stride, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.pad(x))


class Mixed(nn.Module):
    def __init__(self, cin: int, w: tuple[int, ...], bn_affine: bool = True):
        super().__init__()
        self.branch_0 = Unit3Dpy(cin, w[0], bn_affine=bn_affine)
        self.branch_1 = nn.Sequential(Unit3Dpy(cin, w[1], bn_affine=bn_affine),
                                      Unit3Dpy(w[1], w[2], 3, bn_affine=bn_affine))
        self.branch_2 = nn.Sequential(Unit3Dpy(cin, w[3], bn_affine=bn_affine),
                                      Unit3Dpy(w[3], w[4], 3, bn_affine=bn_affine))
        self.branch_3 = nn.Sequential(MaxPool3dTFPadding((3, 3, 3), (1, 1, 1)),
                                      Unit3Dpy(cin, w[5], bn_affine=bn_affine))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x), self.branch_3(x)], dim=1)


class TorchScriptI3D(nn.Module):
    """The stand-in; `torch.jit.script` it."""

    def __init__(self, bn_affine: bool = True):
        super().__init__()
        self.conv3d_1a_7x7 = Unit3Dpy(3, 64, 7, 2, bn_affine=bn_affine)
        self.maxPool3d_2a_3x3 = MaxPool3dTFPadding((1, 3, 3), (1, 2, 2))
        self.conv3d_2b_1x1 = Unit3Dpy(64, 64, bn_affine=bn_affine)
        self.conv3d_2c_3x3 = Unit3Dpy(64, 192, 3, bn_affine=bn_affine)
        self.maxPool3d_3a_3x3 = MaxPool3dTFPadding((1, 3, 3), (1, 2, 2))
        self.mixed_3b, self.mixed_3c = (Mixed(*MIXED[n], bn_affine=bn_affine) for n in ("mixed_3b", "mixed_3c"))
        self.maxPool3d_4a_3x3 = MaxPool3dTFPadding((3, 3, 3), (2, 2, 2))
        self.mixed_4b, self.mixed_4c, self.mixed_4d, self.mixed_4e, self.mixed_4f = (
            Mixed(*MIXED[n], bn_affine=bn_affine) for n in ("mixed_4b", "mixed_4c", "mixed_4d", "mixed_4e", "mixed_4f"))
        self.maxPool3d_5a_2x2 = MaxPool3dTFPadding((2, 2, 2), (2, 2, 2))
        self.mixed_5b, self.mixed_5c = (Mixed(*MIXED[n], bn_affine=bn_affine) for n in ("mixed_5b", "mixed_5c"))
        self.avg_pool = nn.AvgPool3d((2, 7, 7), (1, 1, 1))
        self.dropout = nn.Dropout(0.0)
        self.conv3d_0c_1x1 = Unit3Dpy(1024, 400, relu=False, bn=False, bias=True)
        self.softmax = nn.Softmax(1)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if rescale:
            x = x / 255.0 * 2.0 - 1.0
        if resize:
            b, c, t, h, w = x.shape
            x = x.permute(0, 2, 1, 3, 4).contiguous().view(b * t, c, h, w)
            x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
            x = x.view(b, t, c, 224, 224).permute(0, 2, 1, 3, 4)
        x = self.maxPool3d_2a_3x3(self.conv3d_1a_7x7(x))
        x = self.maxPool3d_3a_3x3(self.conv3d_2c_3x3(self.conv3d_2b_1x1(x)))
        x = self.maxPool3d_4a_3x3(self.mixed_3c(self.mixed_3b(x)))
        x = self.mixed_4f(self.mixed_4e(self.mixed_4d(self.mixed_4c(self.mixed_4b(x)))))
        x = self.mixed_5c(self.mixed_5b(self.maxPool3d_5a_2x2(x)))
        x = self.conv3d_0c_1x1(self.dropout(self.avg_pool(x)))
        logits = x.squeeze(3).squeeze(3).mean(2)  # (b, 400)
        if return_features:
            return logits
        return self.softmax(logits)


def random_standin(seed: int = 0, bn_affine: bool = True) -> TorchScriptI3D:
    """Random weights whose activations neither vanish nor explode; every batch-norm tensor non-trivial."""
    gen = torch.Generator().manual_seed(seed)
    model = TorchScriptI3D(bn_affine=bn_affine)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv3d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2 / m.weight[0].numel()))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, nn.BatchNorm3d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
                    m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.05)
    return model.eval()
