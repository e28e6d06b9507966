"""PSNR against the formula, SSIM against scikit-image on a real photo, codebook usage on known codes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data
from skimage.metrics import structural_similarity

from magvit2.metrics import codebook_usage, psnr, ssim


def _photo_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A real photo in [-1, 1] (h, w, 3) and a noisy, slightly blurred copy."""
    clean = data.chelsea()[::3, ::3].astype(np.float64) / 127.5 - 1.0
    noisy = clean + np.random.default_rng(seed).normal(0.0, 0.08, clean.shape)
    noisy = np.clip(0.5 * noisy + 0.25 * (np.roll(noisy, 1, 0) + np.roll(noisy, 1, 1)), -1, 1)
    return clean, noisy


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float()  # (1, 3, h, w)


def test_psnr_matches_the_formula():
    clean, noisy = _photo_pair()
    expected = 10 * math.log10(4.0 / np.mean((clean.astype(np.float32) - noisy.astype(np.float32)) ** 2))
    x, y = _to_tensor(clean), _to_tensor(noisy)
    assert psnr(x, y).shape == (1,)
    assert psnr(x, y).item() == pytest.approx(expected, abs=1e-4)
    video = torch.stack([x, y], dim=2)  # (1, 3, 2, h, w): per sample over frames
    assert psnr(video, video.flip(2)).item() == pytest.approx(expected - 10 * math.log10(1.0), abs=1e-4)
    assert math.isinf(psnr(x, x).item())


def test_ssim_matches_skimage_on_a_real_photo():
    clean, noisy = _photo_pair()
    reference = structural_similarity(clean, noisy, data_range=2.0, channel_axis=-1, gaussian_weights=True,
                                      sigma=1.5, use_sample_covariance=False)
    ours = ssim(_to_tensor(clean), _to_tensor(noisy))
    assert ours.shape == (1,) and abs(ours.item() - reference) < 1e-3
    video_x = torch.stack([_to_tensor(clean)] * 3, dim=2)  # (1, 3, 3, h, w)
    video_y = torch.stack([_to_tensor(noisy)] * 3, dim=2)
    batch = ssim(torch.cat([video_x, video_x]), torch.cat([video_y, video_x]))
    assert batch.shape == (2,) and abs(batch[0].item() - reference) < 1e-3 and batch[1].item() == pytest.approx(1.0)


def test_ssim_shrinks_the_window_for_tiny_frames():
    clean, noisy = _photo_pair()
    x, y = _to_tensor(clean[:6, :9]), _to_tensor(noisy[:6, :9])
    assert ssim(x, x).item() == pytest.approx(1.0)
    assert -1.0 <= ssim(x, y).item() < 1.0
    with pytest.raises(ValueError, match="same shape"):
        ssim(x, _to_tensor(noisy))


def test_codebook_usage_and_perplexity():
    usage, perplexity = codebook_usage(torch.tensor([[0, 1], [2, 3]]), codebook_size=8)
    assert usage.item() == pytest.approx(0.5) and perplexity.item() == pytest.approx(4.0)
    usage, perplexity = codebook_usage(torch.zeros(2, 3, 4, dtype=torch.long), codebook_size=16)
    assert usage.item() == pytest.approx(1 / 16) and perplexity.item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        codebook_usage(torch.tensor([0, 8]), codebook_size=8)
    with pytest.raises(ValueError, match="integer"):
        codebook_usage(torch.tensor([0.0]), codebook_size=8)
