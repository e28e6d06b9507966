"""PSNR against the formula, SSIM against scikit-image on real frames (the [0, 1] convention of published tables),
codebook usage on known codes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import color, data
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


def _skimage_ssim(a01: np.ndarray, b01: np.ndarray) -> float:
    """The published convention (Wang et al. 2004, as scikit-image computes it): [0, 1] images, data range 1,
    Gaussian window sigma 1.5, population covariances."""
    return structural_similarity(a01, b01, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, channel_axis=-1 if a01.ndim == 3 else None)


def test_ssim_matches_skimage_on_a_real_photo():
    clean, noisy = _photo_pair()  # [-1, 1], as every metric here takes
    reference = _skimage_ssim((clean + 1) / 2, (noisy + 1) / 2)
    ours = ssim(_to_tensor(clean), _to_tensor(noisy))
    assert ours.shape == (1,) and abs(ours.item() - reference) < 1e-5
    video_x = torch.stack([_to_tensor(clean)] * 3, dim=2)  # (1, 3, 3, h, w)
    video_y = torch.stack([_to_tensor(noisy)] * 3, dim=2)
    batch = ssim(torch.cat([video_x, video_x]), torch.cat([video_y, video_x]))
    assert batch.shape == (2,) and abs(batch[0].item() - reference) < 1e-5 and batch[1].item() == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["astronaut", "camera", "retina", "colorwheel"])
def test_ssim_is_the_0_1_convention_of_published_tables(name):
    """Real frames (RGB astronaut, grayscale camera, and grayscale versions of retina / colorwheel) with noise: ours
    equals skimage's SSIM of the [0, 1] images. SSIM computed on [-1, 1] (skimage with data_range=2 on [-1, 1]) is a
    different number, e.g. 0.783 instead of 0.743 on the noisy retina, because SSIM is not shift-invariant."""
    img = getattr(data, name)()
    if name in ("retina", "colorwheel"):
        img = color.rgb2gray(img[..., :3])
    img = img[::2, ::2].astype(np.float64) / (255.0 if img.dtype == np.uint8 else 1.0)  # [0, 1]
    noisy = np.clip(img + np.random.default_rng(0).normal(0.0, 0.02, img.shape), 0.0, 1.0)
    reference = _skimage_ssim(img, noisy)

    def tensor(a01: np.ndarray) -> torch.Tensor:  # [0, 1] (h, w[, 3]) -> [-1, 1] (1, c, h, w)
        t = torch.from_numpy(a01 * 2 - 1).float()
        return (t.permute(2, 0, 1) if t.ndim == 3 else t[None])[None]

    assert ssim(tensor(img), tensor(noisy)).item() == pytest.approx(reference, abs=1e-5)
    if name == "retina":
        signed = structural_similarity(img * 2 - 1, noisy * 2 - 1, data_range=2.0, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False)
        assert reference == pytest.approx(0.743, abs=5e-3) and signed == pytest.approx(0.783, abs=5e-3)


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
