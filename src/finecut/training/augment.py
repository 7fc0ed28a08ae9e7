"""Random views of an object for training: crop (object-centric or random-scale), flip, colour jitter.

Image and mask go through the same affine warp, so they stay exactly aligned; the mask is warped as a float and
thresholded at 0.5. A view is produced at ``size * hi_factor`` (for the refiner) and at ``size`` (for the segmentor).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ViewConfig:
    size: int = 224
    hi_factor: int = 2
    object_centric: float = 0.6  # probability of an object-centred crop (like inference's Target Crop)
    expand_range: tuple[float, float] = (1.15, 2.4)  # object box side multiplier for object-centred crops
    scale_range: tuple[float, float] = (0.75, 1.4)  # zoom of random crops relative to the image's short side
    native_scale: float = 0.0  # probability of a crop at the image's own resolution (size * hi_factor source pixels)
    flip: bool = True
    brightness: float = 0.15
    contrast: float = 0.2
    saturation: float = 0.25
    min_object_pixels: int = 20


@dataclass
class View:
    image: np.ndarray  # (S, S, 3) uint8
    mask: np.ndarray  # (S, S) bool
    image_hi: np.ndarray  # (S*k, S*k, 3) uint8
    mask_hi: np.ndarray  # (S*k, S*k) bool


def _crop_square(bbox: tuple[int, int, int, int], height: int, width: int, mask: np.ndarray,
                 rng: np.random.Generator, cfg: ViewConfig) -> tuple[float, float, float]:
    x0, y0, x1, y1 = bbox
    if cfg.native_scale > 0 and rng.random() < cfg.native_scale:
        side = float(cfg.size * cfg.hi_factor)
    elif rng.random() < cfg.object_centric:
        side = max(x1 - x0, y1 - y0) * rng.uniform(*cfg.expand_range)
        side = max(side, 24.0)
        cx = (x0 + x1) / 2 + rng.uniform(-0.15, 0.15) * side
        cy = (y0 + y1) / 2 + rng.uniform(-0.15, 0.15) * side
        return cx, cy, side
    else:
        side = min(height, width) / rng.uniform(*cfg.scale_range)
    ys, xs = np.nonzero(mask)
    k = rng.integers(len(ys))
    cx = xs[k] + rng.uniform(-0.4, 0.4) * side
    cy = ys[k] + rng.uniform(-0.4, 0.4) * side
    half = side / 2
    cx = float(np.clip(cx, min(half, width - half), max(half, width - half)))
    cy = float(np.clip(cy, min(half, height - half), max(half, height - half)))
    return cx, cy, side


def _warp(image: np.ndarray, mask: np.ndarray, cx: float, cy: float, side: float, out: int,
          flip: bool) -> tuple[np.ndarray, np.ndarray]:
    s = out / side
    sx = -s if flip else s
    # maps source pixel centres to output pixel centres
    tx = out / 2 - 0.5 - sx * (cx - 0.5)
    ty = out / 2 - 0.5 - s * (cy - 0.5)
    m = np.array([[sx, 0.0, tx], [0.0, s, ty]], dtype=np.float64)
    interp = cv2.INTER_LINEAR if s >= 0.5 else cv2.INTER_AREA
    img = cv2.warpAffine(image, m, (out, out), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    msk = cv2.warpAffine(mask.astype(np.float32), m, (out, out), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0.5
    return img, msk


def color_jitter(image: np.ndarray, rng: np.random.Generator, cfg: ViewConfig) -> np.ndarray:
    img = image.astype(np.float32)
    if cfg.saturation:
        gray = img.mean(axis=2, keepdims=True)
        img = gray + (img - gray) * rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
    if cfg.contrast:
        mean = img.mean()
        img = mean + (img - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
    if cfg.brightness:
        img = img + 255.0 * rng.uniform(-cfg.brightness, cfg.brightness)
    return np.clip(img, 0, 255).astype(np.uint8)


def random_view(image: np.ndarray, mask: np.ndarray, bbox: tuple[int, int, int, int], rng: np.random.Generator,
                cfg: ViewConfig, tries: int = 6) -> View:
    """A random aligned crop of (image, mask) containing part of the object."""
    height, width = mask.shape
    hi = cfg.size * cfg.hi_factor
    for attempt in range(tries):
        cx, cy, side = _crop_square(bbox, height, width, mask, rng, cfg)
        flip = cfg.flip and rng.random() < 0.5
        img_hi, msk_hi = _warp(image, mask, cx, cy, side, hi, flip)
        if msk_hi.sum() >= cfg.min_object_pixels * cfg.hi_factor**2 or attempt == tries - 1:
            break
    img_hi = color_jitter(img_hi, rng, cfg)
    img = cv2.resize(img_hi, (cfg.size, cfg.size), interpolation=cv2.INTER_AREA)
    msk = cv2.resize(msk_hi.astype(np.float32), (cfg.size, cfg.size), interpolation=cv2.INTER_AREA) > 0.5
    return View(img, msk, img_hi, msk_hi)
