"""Reconstruction and codebook metrics: pure functions on [-1, 1] videos/images and integer codes.

Videos are ``(b, c, t, h, w)``, images ``(b, c, h, w)``; values in [-1, 1]. PSNR's default ``data_range`` is 2 (the
same number as on [0, 1] with range 1, or on uint8 with 255); SSIM is computed on the [0, 1] images (its numbers
depend on the range, and [0, 1] is the convention of published tables). Every per-sample metric returns a float
tensor of shape ``(b,)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["codebook_usage", "psnr", "ssim", "usage_from_counts"]


def _check_pair(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if x.shape != y.shape:
        raise ValueError(f"{name}: x and y must have the same shape; got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim not in (4, 5):
        raise ValueError(f"{name}: expected (b, c, h, w) or (b, c, t, h, w); got shape {tuple(x.shape)}")


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per sample, over all channels, frames and pixels.

    ``10 * log10(data_range**2 / mean((x - y)**2))``; identical samples give ``inf``. Returns float32 ``(b,)``.
    """
    _check_pair(x, y, "psnr")
    diff = x.detach().double() - y.detach().double()
    mse = diff.pow(2).flatten(1).mean(dim=1)  # (b,)
    return (10.0 * torch.log10(data_range**2 / mse)).float()


def _gaussian_1d(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()  # (size,)


def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per sample, of the [0, 1] images: the convention of scikit-image and of
    published tables. Takes [-1, 1] videos/images like every metric here and maps them to [0, 1] first.

    Equals ``skimage.metrics.structural_similarity(x01, y01, data_range=1, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, channel_axis=-1)`` per frame (Wang et al.'s settings: an 11-tap Gaussian window of
    sigma 1.5, population covariances, K1 = 0.01, K2 = 0.03), averaged over frames: the local statistics are
    computed only where the window lies fully inside the frame ('valid' filtering, what skimage's cropped mean keeps)
    and the SSIM map is averaged over pixels, channels and frames. Frames smaller than the window shrink it to the
    largest odd size that fits. SSIM is not shift-invariant: computing it on [-1, 1] with data range 2 gives other,
    lower numbers (0.763 vs 0.944 on a noisy photo), which is why the range is fixed here. Returns float32 ``(b,)``.
    """
    _check_pair(x, y, "ssim")
    if window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be a positive odd int; got {window_size}")
    if x.ndim == 4:
        x, y = x.unsqueeze(2), y.unsqueeze(2)  # (b, c, 1, h, w)
    b, c, t, h, w = x.shape
    dtype = torch.float64 if x.device.type == "cpu" else torch.float32
    # [-1, 1] -> [0, 1]; (b, c, t, h, w) -> (b*t*c, 1, h, w)
    x = ((x.detach().to(dtype) + 1) / 2).transpose(1, 2).reshape(b * t * c, 1, h, w)
    y = ((y.detach().to(dtype) + 1) / 2).transpose(1, 2).reshape(b * t * c, 1, h, w)
    win = min(window_size, h, w)
    win -= 1 - win % 2  # largest odd size <= win
    g = _gaussian_1d(win, sigma, x.device, dtype)

    def blur(z: torch.Tensor) -> torch.Tensor:  # separable 'valid' Gaussian filter: (n, 1, h, w) -> (n, 1, h', w')
        return F.conv2d(F.conv2d(z, g.view(1, 1, win, 1)), g.view(1, 1, 1, win))

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2  # (K * data_range)^2 with data_range 1
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.reshape(b, -1).mean(dim=1).float()  # (b,)


def codebook_usage(indices: torch.Tensor, codebook_size: int, validate: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """How much of the codebook a set of codes uses.

    Args:
        indices: integer codes of any shape, values in ``[0, codebook_size)``.
        codebook_size: number of codes.
        validate: check the value range (a host sync); the quantizer, whose codes are in range by construction,
            skips it on its hot path.

    Returns:
        ``(usage, perplexity)`` as 0-dim float tensors: ``usage`` = fraction of codes used at least once, in
        [0, 1]; ``perplexity`` = ``exp(entropy)`` of the empirical code distribution, in [1, codebook_size]
        (``codebook_size`` means perfectly uniform use).
    """
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise ValueError(f"indices must be an integer tensor; got {indices.dtype}")
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be >= 1; got {codebook_size}")
    flat = indices.detach().reshape(-1).long()
    if flat.numel() == 0:
        raise ValueError("indices is empty")
    if validate and (int(flat.min()) < 0 or int(flat.max()) >= codebook_size):
        low, high = int(flat.min()), int(flat.max())
        raise ValueError(f"indices must lie in [0, {codebook_size}); got values in [{low}, {high}]")
    return usage_from_counts(torch.bincount(flat, minlength=codebook_size))


def usage_from_counts(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(usage, perplexity)` (see `codebook_usage`) from per-code counts `(codebook_size,)`, e.g. summed over
    processes."""
    counts = counts.double()
    probs = counts / counts.sum()
    entropy = -torch.special.xlogy(probs, probs).sum()  # 0 log 0 = 0, without a host sync
    usage = (counts > 0).double().mean()
    return usage.float(), entropy.exp().clamp(1.0, float(counts.numel())).float()

