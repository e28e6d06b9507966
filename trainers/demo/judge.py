"""Judges for the demo report: does a generated clip show the prompted digit, moving the prompted way?

Pure numpy/scikit-learn. A clip is uint8 ``(T, H, W, 3)`` or float ``(3, T, H, W)`` in [-1, 1] (a leading batch
axis of 1 and torch tensors are accepted). The object is found per frame as the bright pixels of the
background-subtracted brightness (max over channels).

* ``judge_direction``: the intensity-weighted centre of mass per frame; a line fitted to its row and column tracks
  gives the displacement over the clip; the dominant axis and its sign name the direction (rows grow downward, so
  "up" is a decreasing row).
* ``DigitJudge``: an RBF SVM on 8x8 crops. Training crops come from the train half of ``load_digits`` (the same
  seeded split as the dataset), rendered into frames at random sizes, positions and colours and cropped back out
  with the very procedure used at judging time (bounding box of bright pixels -> square -> 8x8 area resize ->
  0..16), so train and test crops share one distribution. Its accuracy on the val half is ``val_accuracy``.
  ``judge_digit`` is a majority vote over the frames where an object is visible. ``DigitJudge(objects="shapes")``
  does the same for the drawn shapes of ``shapes.py`` (its class indices follow ``SHAPE_WORDS``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image

from trainers.rng import derive_seed

from .digits import (
    DIGIT_WORDS,
    DIRECTION_STEPS,
    DIRECTIONS,
    load_object_images,
    object_words,
    random_color,
    render_digit,
    split_digit_indices,
)

_JUDGE_KEY = 104_729  # derive_seed purpose tag of the judge's training renders
_INK_THRESHOLD = 0.3  # a pixel is ink above this fraction of the frame's peak brightness
_MIN_PEAK = 0.1  # frames whose peak (after background removal) is below this hold no object


def to_gray_frames(video) -> np.ndarray:
    """uint8 (T, H, W, 3) or float (3, T, H, W) in [-1, 1] -> float32 brightness (T, H, W) in [0, 1]."""
    if hasattr(video, "detach"):  # torch tensor
        video = video.detach().float().cpu().numpy()
    video = np.asarray(video)
    if video.ndim == 5 and video.shape[0] == 1:
        video = video[0]
    if video.ndim != 4:
        raise ValueError(f"expected a clip uint8 (T, H, W, 3) or float (3, T, H, W), got shape {video.shape}")
    if video.dtype == np.uint8:
        if video.shape[-1] != 3:
            raise ValueError(f"expected uint8 (T, H, W, 3), got shape {video.shape}")
        rgb = video.astype(np.float32) / 255.0  # (t, h, w, 3)
    else:
        if video.shape[0] != 3:
            raise ValueError(f"expected float (3, T, H, W) in [-1, 1], got shape {video.shape}")
        rgb = (np.moveaxis(video.astype(np.float32), 0, -1) + 1.0) / 2.0  # (t, h, w, 3)
    return np.clip(rgb, 0.0, 1.0).max(axis=-1)  # (t, h, w)


def _foreground(gray: np.ndarray) -> np.ndarray:
    """Subtract each frame's median (the background) and zero everything below the ink threshold."""
    fg = np.clip(gray - np.median(gray, axis=(1, 2), keepdims=True), 0.0, None)  # (t, h, w)
    peak = fg.max(axis=(1, 2), keepdims=True)
    return np.where((fg > _INK_THRESHOLD * peak) & (peak >= _MIN_PEAK), fg, 0.0)


def center_of_mass_track(video) -> np.ndarray:
    """(T, 2) float (row, col) of the intensity-weighted object centre per frame; NaN where no object."""
    fg = _foreground(to_gray_frames(video))  # (t, h, w)
    mass = fg.sum(axis=(1, 2))  # (t,)
    rows = np.arange(fg.shape[1], dtype=np.float32)
    cols = np.arange(fg.shape[2], dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (fg.sum(axis=2) * rows).sum(axis=1) / mass
        c = (fg.sum(axis=1) * cols).sum(axis=1) / mass
    track = np.stack([r, c], axis=1)  # (t, 2)
    track[mass <= 0] = np.nan
    return track


def judge_direction(video) -> tuple[str, float]:
    """The motion direction of the clip's object and a confidence in [0, 1].

    Confidence is 1 for motion along one axis of at least 2 pixels over the clip, falls toward 0 for diagonal or
    tiny motion, and is 0 when fewer than two frames show an object (the direction is then a fixed guess, "up").
    """
    track = center_of_mass_track(video)
    ok = ~np.isnan(track[:, 0])
    if ok.sum() < 2:
        return DIRECTIONS[0], 0.0
    t = np.flatnonzero(ok).astype(np.float64)
    slope_r, slope_c = np.polyfit(t, track[ok], 1)[0]  # pixels per frame
    span = len(track) - 1
    dr, dc = slope_r * span, slope_c * span
    major, minor = max(abs(dr), abs(dc)), min(abs(dr), abs(dc))
    if abs(dr) >= abs(dc):
        direction = "down" if dr > 0 else "up"
    else:
        direction = "right" if dc > 0 else "left"
    confidence = (major - minor) / (major + minor + 1e-6) * min(1.0, major / 2.0)
    return direction, float(confidence)


def extract_digit_crops(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: crop a square around the bright pixels' bounding box and area-resize it to 8x8, scaled to
    0..16 like ``load_digits``. Returns float32 crops (T, 64) and a bool mask (T,) of frames with an object."""
    fg = _foreground(gray)  # (t, h, w)
    t_len = fg.shape[0]
    crops = np.zeros((t_len, 64), dtype=np.float32)
    found = np.zeros(t_len, dtype=bool)
    for t in range(t_len):
        rows = np.flatnonzero(fg[t].any(axis=1))
        cols = np.flatnonzero(fg[t].any(axis=0))
        if len(rows) == 0:
            continue
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        side = max(r1 - r0, c1 - c0) * 1.1 + 1.0  # a little border, like the 8x8 images have
        cr, cc = (r0 + r1) / 2.0, (c0 + c1) / 2.0
        pad = int(np.ceil(side))
        canvas = np.pad(fg[t], pad)  # (h + 2p, w + 2p): the square may overhang the frame
        box = (cc - side / 2 + pad, cr - side / 2 + pad, cc + side / 2 + pad, cr + side / 2 + pad)
        small = np.asarray(Image.fromarray(canvas, mode="F").resize((8, 8), Image.Resampling.BOX, box=box))
        peak = small.max()
        if peak <= 0:
            continue
        crops[t] = (small / peak * 16.0).reshape(64)
        found[t] = True
    return crops, found


class DigitJudge:
    """Classifies the digit shown in a clip. Fitting takes a few seconds; build one and reuse it.

    Args:
        seed: the dataset seed, so the judge trains only on the train half of the digit images.
        val_fraction: as in ``DigitDataConfig``.
        size: frame size of the renders it trains on.
        renders_per_image: training renders per train image (random size 0.3-0.55 of the frame,
            position and brightness).
        objects: the object set it reads, as in ``DigitDataConfig``: "digits" or "shapes".
    """

    def __init__(self, seed: int = 0, val_fraction: float = 0.25, size: int = 32, renders_per_image: int = 2,
                 objects: str = "digits"):
        from sklearn.svm import SVC

        self.seed, self.size = seed, size
        self.objects, self.words = objects, object_words(objects)  # words[k]: the name of class k
        images, labels = load_object_images(objects)
        train_rows, val_rows = split_digit_indices(seed, val_fraction, objects)
        rng = np.random.default_rng(derive_seed(seed, _JUDGE_KEY))
        x_train, y_train = self._render_crops(images[train_rows], labels[train_rows], renders_per_image, rng)
        self.classifier = SVC(C=10.0, gamma="scale")
        self.classifier.fit(x_train / 16.0, y_train)
        x_val, y_val = self._render_crops(images[val_rows], labels[val_rows], 1, rng)
        self.val_accuracy = float((self.classifier.predict(x_val / 16.0) == y_val).mean())
        self.num_train, self.num_val = len(y_train), len(y_val)

    def _render_crops(self, images, labels, repeats: int, rng: np.random.Generator):
        crops, targets = [], []
        for _ in range(repeats):
            for image8, label in zip(images, labels):
                box = rng.uniform(0.3, 0.55) * self.size
                top, left = rng.uniform(-box / 8, self.size - box + box / 8, size=2)
                frame = render_digit(image8, self.size, box, top, left) * random_color(rng).max()
                crop, found = extract_digit_crops(frame[None])
                if found[0]:
                    crops.append(crop[0])
                    targets.append(int(label))
        return np.stack(crops), np.asarray(targets)

    def frame_predictions(self, video) -> np.ndarray:
        """int (T',) predicted digit for each frame that shows an object (T' may be 0)."""
        crops, found = extract_digit_crops(to_gray_frames(video))
        if not found.any():
            return np.zeros(0, dtype=np.int64)
        return self.classifier.predict(crops[found] / 16.0).astype(np.int64)

    def frame_consistent(self, video) -> bool:
        """True when every frame shows an object and the classifier reads the same digit in each of them."""
        per_frame = self.frame_predictions(video)
        return len(per_frame) == len(to_gray_frames(video)) and len(set(per_frame.tolist())) == 1

    def judge_digit(self, video) -> tuple[int, float]:
        """(digit, confidence): the majority vote over frames and the share of frames that voted for it
        (ties go to the smaller digit); (0, 0.0) when no frame shows an object."""
        votes = np.bincount(self.frame_predictions(video), minlength=10)
        if votes.sum() == 0:
            return 0, 0.0
        return int(votes.argmax()), float(votes.max() / votes.sum())


def _as_digit(target, words: tuple[str, ...] = DIGIT_WORDS) -> int:
    """A class index from an int, a numeral string or one of ``words`` (the judge's class words)."""
    if isinstance(target, str):
        if target in words:
            return words.index(target)
        if target.isdigit():
            return int(target)
        raise ValueError(f"expected a class 0-9 or one of {words}, got {target!r}")
    return int(target)


def score_prompt_following(
    results: Iterable[tuple[object, int | str, str]], judge: DigitJudge | None = None
) -> dict[str, float]:
    """Accuracy of generated clips against their prompts' digit and direction.

    ``results``: ``(video, target_digit, target_direction)`` items; digits as ints or as the judge's words
    (``DIGIT_WORDS``, or ``SHAPE_WORDS`` for a shapes judge). Returns
    ``{'digit_acc', 'direction_acc', 'joint_acc', 'n'}``. Builds a ``DigitJudge(seed=0)`` when none is given.
    """
    results = list(results)
    if not results:
        raise ValueError("expected at least one (video, digit, direction) result, got none")
    judge = judge if judge is not None else DigitJudge()
    digit_hits, direction_hits, joint_hits = 0, 0, 0
    for video, target_digit, target_direction in results:
        if target_direction not in DIRECTION_STEPS:
            raise ValueError(f"target direction must be one of {DIRECTIONS}, got {target_direction!r}")
        digit_ok = judge.judge_digit(video)[0] == _as_digit(target_digit, judge.words)
        direction_ok = judge_direction(video)[0] == target_direction
        digit_hits += digit_ok
        direction_hits += direction_ok
        joint_hits += digit_ok and direction_ok
    n = len(results)
    return {"digit_acc": digit_hits / n, "direction_acc": direction_hits / n, "joint_acc": joint_hits / n, "n": n}
