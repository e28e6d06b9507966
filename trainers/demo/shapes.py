"""Procedurally drawn shapes: a second object set for the moving-object clips, made here and never used by the demo.

``load_shape_images()`` has the contract of ``digits.load_digit_images()`` (float32 images ``(n, 8, 8)`` in
[0, 16], int labels ``(n,)``), so the clips, the image split and the judge work unchanged on it; quality experiments
tuned on digits can be re-checked on shapes to see whether a win is specific to handwritten digits.

Ten classes (``SHAPE_WORDS``), 180 instances each, every instance drawn differently, like handwriting: each one is
rasterised on a 64x64 grid (8x supersampling) with its own size, aspect ratio, stroke width, rotation and
sub-pixel offset, area-downsampled to 8x8, and given a slightly uneven ink level. Like ``load_digits`` the shapes
stay inside the central 6x6 pixels (a blank 1-pixel border) and the background is exactly 0. Everything derives
from a fixed seed.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from trainers.rng import derive_seed

SHAPE_WORDS = (
    "square", "circle", "triangle", "plus", "cross", "diamond", "ring", "bar", "pillar", "arrow",
)
SHAPES_PER_CLASS = 180
_SHAPES_SEED = 2_024
_SHAPE_KEY = 7_937  # derive_seed purpose tag of one shape instance
_SUPERSAMPLE = 8  # drawing grid = 8 * 8 = 64 pixels a side


def _inside(label: int, x: np.ndarray, y: np.ndarray, stroke: float) -> np.ndarray:
    """Bool mask of class ``label`` at canonical coordinates ``(x, y)`` (x right, y down; the shape spans about
    [-1, 1]); ``stroke``: line width of the line-drawn classes, canonical units."""
    half = stroke / 2
    word = SHAPE_WORDS[label]
    if word == "square":
        return (np.abs(x) <= 0.78) & (np.abs(y) <= 0.78)
    if word == "circle":
        return x**2 + y**2 <= 0.92**2
    if word == "triangle":  # apex up, base down
        return (y <= 0.8) & (np.abs(x) <= (y + 0.9) * 0.55)
    if word == "plus":
        return ((np.abs(x) <= half) & (np.abs(y) <= 0.92)) | ((np.abs(y) <= half) & (np.abs(x) <= 0.92))
    if word == "cross":
        u, v = (x + y) / np.sqrt(2), (x - y) / np.sqrt(2)
        return (((np.abs(u) <= half) | (np.abs(v) <= half)) & (np.abs(x) <= 0.82) & (np.abs(y) <= 0.82))
    if word == "diamond":  # taller than wide, like a playing-card diamond
        return np.abs(x) / 0.68 + np.abs(y) <= 0.98
    if word == "ring":
        r2 = x**2 + y**2
        return (r2 <= 0.92**2) & (r2 >= (0.92 - stroke * 1.15) ** 2)
    if word == "bar":
        return (np.abs(x) <= 0.95) & (np.abs(y) <= 0.2 + half)
    if word == "pillar":
        return (np.abs(y) <= 0.95) & (np.abs(x) <= 0.2 + half)
    # arrow: a shaft from the left and a head pointing right
    shaft = (x >= -0.95) & (x <= 0.1) & (np.abs(y) <= half * 0.9)
    head = (x >= 0.0) & (x <= 0.95) & (np.abs(y) <= (0.95 - x) * 0.95)
    return shaft | head


def draw_shape(label: int, rng: np.random.Generator) -> np.ndarray:
    """One random instance of class ``label``: float32 (8, 8) in [0, 16], background exactly 0."""
    n = 8 * _SUPERSAMPLE
    centres = (np.arange(n, dtype=np.float64) + 0.5) / _SUPERSAMPLE  # (n,) sample points, in 8x8 pixel units
    # canonical [-1, 1] is the central 6 pixels: a shape of scale 1 leaves a 1-pixel blank border
    scale = rng.uniform(0.78, 1.0)
    aspect = np.exp(rng.uniform(-0.15, 0.15))
    sx, sy = 3.0 * scale * aspect, 3.0 * scale / aspect  # pixels per canonical unit along x and y
    angle = np.deg2rad(rng.uniform(-12.0, 12.0))
    cx, cy = 4.0 + rng.uniform(-0.3, 0.3), 4.0 + rng.uniform(-0.3, 0.3)
    stroke = rng.uniform(0.32, 0.5)
    px, py = centres[None, :] - cx, centres[:, None] - cy  # (1, n), (n, 1)
    cos, sin = np.cos(angle), np.sin(angle)
    x = (cos * px + sin * py) / sx  # (n, n) canonical coordinates: inverse rotation then scaling
    y = (-sin * px + cos * py) / sy
    cover = _inside(label, x, y, stroke).astype(np.float32)  # (n, n) in {0, 1}
    cover = cover.reshape(8, _SUPERSAMPLE, 8, _SUPERSAMPLE).mean(axis=(1, 3))  # (8, 8) area coverage in [0, 1]
    ink = rng.uniform(0.85, 1.0) * (1.0 + rng.normal(0.0, 0.06, size=(8, 8)))  # uneven ink, like pen pressure
    return np.clip(cover / max(cover.max(), 1e-6) * 16.0 * ink, 0.0, 16.0).astype(np.float32)


@lru_cache(maxsize=1)
def load_shape_images() -> tuple[np.ndarray, np.ndarray]:
    """10 x 180 drawn shapes: float32 images (n, 8, 8) in [0, 16] and int labels (n,) (classes interleaved like
    ``load_digits``: label ``i % 10``). Deterministic; read-only arrays."""
    n = len(SHAPE_WORDS) * SHAPES_PER_CLASS
    labels = np.arange(n, dtype=np.int64) % len(SHAPE_WORDS)
    images = np.stack(
        [draw_shape(int(label), np.random.default_rng(derive_seed(_SHAPES_SEED, _SHAPE_KEY, i)))
         for i, label in enumerate(labels)]
    )  # (n, 8, 8)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels
