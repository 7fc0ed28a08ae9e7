"""Click simulation for training: random initial clicks (RITM's multi-point sampler) and iterative next clicks.

All coordinates here are (row, col) at network resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from finecut.prompts import Click, ClickKind


@dataclass(frozen=True)
class ClickSimConfig:
    max_positive: int = 24
    max_negative: int = 24
    decay: float = 0.8  # P(n clicks) ~ decay**n
    first_click_center: float = 0.5  # probability that the first positive click sits near the object's centre
    negative_band: tuple[int, int] = (5, 40)  # px around the object where "border" negatives are drawn
    tolerant_probability: float = 0.15  # chance of adding 1-2 tolerant clicks on the object's boundary band
    tolerant_band: int = 6


def geometric_count(rng: np.random.Generator, low: int, high: int, decay: float) -> int:
    """A count in ``low..high`` with P(n) ~ ``decay ** (n - low)``."""
    counts = np.arange(low, high + 1)
    probs = decay ** (counts - low)
    return int(rng.choice(counts, p=probs / probs.sum()))


def distance_inside(mask: np.ndarray) -> np.ndarray:
    """Distance (L2, 3x3 mask) of each pixel of ``mask`` to the nearest pixel outside it, the border counting as
    outside."""
    padded = np.pad(mask.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]


def pick_pixels(rng: np.random.Generator, candidates: np.ndarray, k: int) -> list[tuple[int, int]]:
    """Up to ``k`` distinct random (row, col) pixels of the bool map ``candidates``."""
    ys, xs = np.nonzero(candidates)
    if len(ys) == 0 or k <= 0:
        return []
    idx = rng.choice(len(ys), size=min(k, len(ys)), replace=False)
    return [(int(ys[i]), int(xs[i])) for i in idx]


def sample_initial_clicks(mask: np.ndarray, rng: np.random.Generator, cfg: ClickSimConfig) -> list[Click]:
    """Random positive clicks inside the object and negative clicks near it / elsewhere in the background."""
    clicks: list[Click] = []
    if not mask.any():
        return clicks
    dist = distance_inside(mask)
    n_pos = geometric_count(rng, 1, cfg.max_positive, cfg.decay)
    n_neg = geometric_count(rng, 0, cfg.max_negative, cfg.decay)
    inner = dist >= min(3.0, dist.max())
    positives: list[tuple[int, int]] = []
    if rng.random() < cfg.first_click_center:
        positives += pick_pixels(rng, dist >= 0.6 * dist.max(), 1)
    positives += pick_pixels(rng, inner, n_pos - len(positives))
    clicks += [Click(x, y, ClickKind.POSITIVE) for y, x in positives]
    background = ~mask
    if n_neg and background.any():
        band_px = int(rng.integers(cfg.negative_band[0], cfg.negative_band[1] + 1))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band_px + 1, 2 * band_px + 1))
        band = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool) & background
        n_band = int(rng.binomial(n_neg, 0.6)) if band.any() else 0
        negatives = pick_pixels(rng, band, n_band) + pick_pixels(rng, background, n_neg - n_band)
        clicks += [Click(x, y, ClickKind.NEGATIVE) for y, x in negatives]
    if cfg.tolerant_probability and rng.random() < cfg.tolerant_probability:
        clicks += tolerant_clicks(mask, rng, int(rng.integers(1, 3)), cfg.tolerant_band)
    order = rng.permutation(len(clicks) - 1) + 1 if len(clicks) > 1 else np.zeros(0, int)
    return [clicks[0]] + [clicks[i] for i in order]


def tolerant_clicks(mask: np.ndarray, rng: np.random.Generator, count: int, band: int) -> list[Click]:
    """Clicks placed loosely on the object's boundary band (NTClick's noise-tolerant click)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    m = mask.astype(np.uint8)
    ring = (cv2.dilate(m, kernel) - cv2.erode(m, kernel)).astype(bool)
    return [Click(x, y, ClickKind.TOLERANT) for y, x in pick_pixels(rng, ring, count)]


def next_training_click(gt: np.ndarray, pred: np.ndarray, clicks: list[Click],
                        rng: np.random.Generator) -> Click | None:
    """RITM's iterative-training click: a random pixel in the inner third of the largest error region.

    ``gt`` and ``pred`` are bool (H, W). Returns None when the prediction is already perfect.
    """
    fn = gt & ~pred
    fp = ~gt & pred
    for click in clicks:
        r, c = click.pixel
        fn[r, c] = fp[r, c] = False
    fn_dt = distance_inside(fn)
    fp_dt = distance_inside(fp)
    fn_max, fp_max = fn_dt.max(), fp_dt.max()
    if max(fn_max, fp_max) <= 0:
        return None
    positive = fn_max > fp_max
    dt, peak = (fn_dt, fn_max) if positive else (fp_dt, fp_max)
    choice = pick_pixels(rng, dt > peak / 3, 1)
    y, x = choice[0]
    return Click(x, y, ClickKind.POSITIVE if positive else ClickKind.NEGATIVE)


def corrupt_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible imperfect prior mask: morphological shift of the boundary plus added/removed blobs."""
    out = mask.astype(np.uint8)
    h, w = mask.shape
    r = int(rng.integers(2, max(3, min(h, w) // 20)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    out = cv2.dilate(out, kernel) if rng.random() < 0.5 else cv2.erode(out, kernel)
    for _ in range(int(rng.integers(0, 4))):
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        axes = (int(rng.integers(3, max(4, w // 6))), int(rng.integers(3, max(4, h // 6))))
        cv2.ellipse(out, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, int(rng.random() < 0.5), -1)
    return out.astype(bool)
