"""Seeded simulators of the one-shot prompts of FocalClick-XL's protocols, as pure functions.

* :func:`gt_box` / :func:`jitter_box`: the ground truth's bounding box, and the same box with each side moved by a
  uniform offset of at most a fraction of the box's side (the box protocol).
* :func:`coarse_mask`: the ground truth perturbed step by step by small erosions, dilations (elliptic, square or cross
  kernels) and down-then-up sampling until its IoU falls in a band (the coarse-mask protocol's five levels).
* :func:`defect_mask`: DAVIS-585's initial masks: superpixel (SLIC) defects on the ground truth, each a boundary error
  (a superpixel on the object boundary added to or cut from the mask within the boundary band), an external false
  positive (a background superpixel added) or an internal false negative (an object superpixel cut out), with
  probabilities 0.65 / 0.25 / 0.10, until the IoU falls to a target drawn uniformly in [0.75, 0.85] (the
  mask-correction protocol). Coarse masks stop as soon as they enter their band.

Every step only lowers the IoU; a step that would overshoot the band is applied in part, to the changed pixels nearest
a random one of them (as many as bring the IoU to a random target inside the band). Randomness comes from
:func:`sample_rng`, which depends only on the seed, the sample's name and the protocol, so each mask is reproducible on
its own, whatever the order of the samples or ``--limit``. The IoU is the evaluator's (ignore pixels left out).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from finecut.errors import FinecutError
from finecut.evaluation.config import COARSE_LEVELS, DEFAULT_DEFECT_PROBABILITIES, DEFAULT_INIT_BAND
from finecut.evaluation.protocol import iou
from finecut.prompts import Box

if TYPE_CHECKING:
    from finecut.datasets.base import Sample

__all__ = ["COARSE_LEVELS", "CoarseMasks", "SimulatedInitMasks", "coarse_mask", "defect_mask", "gt_box",
           "jitter_box", "sample_rng"]


def sample_rng(seed: int, name: str, purpose: str) -> np.random.Generator:
    """A generator seeded by (seed, CRC-32 of the sample name, CRC-32 of the purpose): the same for a sample whatever
    else is evaluated."""
    return np.random.default_rng([int(seed) % 2**32, zlib.crc32(str(name).encode()), zlib.crc32(purpose.encode())])


# ------------------------------------------------------------------------------------------------------- boxes
def gt_box(gt: np.ndarray) -> Box:
    """The tight box ``[x0, x1) x [y0, y1)`` of the object pixels (gt == 1)."""
    obj = np.asarray(gt) == 1
    if not obj.any():
        raise FinecutError("the ground truth has no object pixel: no box to draw")
    rows = np.flatnonzero(obj.any(axis=1))
    cols = np.flatnonzero(obj.any(axis=0))
    return Box(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def jitter_box(box: Box, rng: np.random.Generator, fraction: float, height: int, width: int) -> Box:
    """``box`` with each side moved by a uniform offset in [-fraction, fraction] of the box's width (left, right) or
    height (top, bottom), rounded to whole pixels and kept inside the image (and at least one pixel wide)."""
    if fraction == 0:
        return box
    w, h = box.x1 - box.x0, box.y1 - box.y0
    dx0, dx1 = rng.uniform(-fraction, fraction, 2) * w
    dy0, dy1 = rng.uniform(-fraction, fraction, 2) * h
    x0 = int(np.clip(round(box.x0 + dx0), 0, width - 1))
    x1 = int(np.clip(round(box.x1 + dx1), x0 + 1, width))
    y0 = int(np.clip(round(box.y0 + dy0), 0, height - 1))
    y1 = int(np.clip(round(box.y1 + dy1), y0 + 1, height))
    return Box(x0, y0, x1, y1)


# ------------------------------------------------------------------------------------------------ shared steps
def _partial(mask: np.ndarray, change: np.ndarray, gt: np.ndarray, band: tuple[float, float],
             rng: np.random.Generator) -> np.ndarray | None:
    """Flip only the ``change`` pixels nearest a random one of them, as many as bring the IoU down to a random target
    in ``band`` (binary search on the count); None when no count lands in the band."""
    ys, xs = np.nonzero(change)
    if len(ys) < 2:
        return None
    k = int(rng.integers(len(ys)))
    order = np.argsort((ys - ys[k]) ** 2 + (xs - xs[k]) ** 2, kind="stable")
    ys, xs = ys[order], xs[order]
    lo, hi = band
    target = float(rng.uniform(lo, hi))

    def applied(m: int) -> np.ndarray:
        out = mask.copy()
        out[ys[:m], xs[:m]] = ~out[ys[:m], xs[:m]]
        return out

    left, right = 1, len(ys)  # the smallest count whose IoU is <= target
    while left < right:
        mid = (left + right) // 2
        if iou(gt, applied(mid)) <= target:
            right = mid
        else:
            left = mid + 1
    out = applied(left)
    return out if lo <= iou(gt, out) <= hi else None


def _walk(gt: np.ndarray, band: tuple[float, float], propose, rng: np.random.Generator,
          max_proposals: int, stop: float | None = None) -> np.ndarray:
    """Start from the ground truth and accept proposals that lower the IoU without passing below the band, until the
    IoU is at most ``stop`` (default: the band's top, i.e. as soon as it enters the band). ``propose(mask) ->
    candidate mask | None``. Returns the mask (the closest one reached when the band could not be reached in
    ``max_proposals`` proposals)."""
    lo, hi = band
    stop = hi if stop is None else stop
    mask = np.asarray(gt) == 1
    current = iou(gt, mask)
    for _ in range(max_proposals):
        if lo <= current <= stop:
            return mask
        candidate = propose(mask)
        if candidate is None:
            continue
        score = iou(gt, candidate)
        if score >= current:
            continue
        if score >= lo:
            mask, current = candidate, score
            continue
        part = _partial(mask, candidate != mask, gt, band, rng)
        if part is not None:
            return part
    return mask


# ------------------------------------------------------------------------------------------------ coarse masks
_SHAPES = (cv2.MORPH_ELLIPSE, cv2.MORPH_RECT, cv2.MORPH_CROSS)


def coarse_mask(gt: np.ndarray, band: tuple[float, float], rng: np.random.Generator,
                max_proposals: int = 400) -> np.ndarray:
    """The ground truth (int, 1 object) made coarse by seeded small erosions, dilations and down-up samplings until
    its IoU is in ``band`` (bool (H, W)). Kernel sizes and sampling factors scale with the object's size."""
    gt = np.asarray(gt)
    obj = gt == 1
    if not obj.any():
        raise FinecutError("the ground truth has no object pixel: nothing to coarsen")
    h, w = gt.shape
    side = float(np.sqrt(obj.sum()))
    kmax = max(1, int(round(0.03 * side)))
    fmax = max(2, int(round(0.08 * side)))

    def propose(mask: np.ndarray) -> np.ndarray:
        op = int(rng.integers(3))
        m = mask.astype(np.uint8)
        if op < 2:
            size = 2 * int(rng.integers(1, kmax + 1)) + 1
            kernel = cv2.getStructuringElement(_SHAPES[int(rng.integers(len(_SHAPES)))], (size, size))
            out = cv2.erode(m, kernel) if op == 0 else cv2.dilate(m, kernel)
            return out > 0
        factor = int(rng.integers(2, fmax + 1))
        small = cv2.resize(m.astype(np.float32), (max(1, w // factor), max(1, h // factor)),
                           interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5

    return _walk(gt, band, propose, rng, max_proposals)


class CoarseMasks:
    """The coarse mask of a sample for one IoU ``band``, from ``seed`` (a callable source, like an init-mask folder)."""

    def __init__(self, seed: int = 0, band: tuple[float, float] = COARSE_LEVELS[1]) -> None:
        self.seed = int(seed)
        self.band = (float(band[0]), float(band[1]))

    def __call__(self, sample: Sample) -> np.ndarray:
        rng = sample_rng(self.seed, sample.name, f"coarse {self.band[0]:g}-{self.band[1]:g}")
        return coarse_mask(sample.gt, self.band, rng)

    def __repr__(self) -> str:
        return f"CoarseMasks(seed={self.seed}, band={list(self.band)})"


# ------------------------------------------------------------------------------------------ DAVIS-585 defects
def superpixels(image: np.ndarray, object_area: int, per_object: float = 40.0, max_segments: int = 3000) -> np.ndarray:
    """SLIC superpixels (int labels from 0) sized so that about ``per_object`` of them cover the object."""
    from skimage.segmentation import slic

    h, w = image.shape[:2]
    size = max(16.0, object_area / per_object)
    n = int(np.clip(round(h * w / size), 16, max_segments))
    return slic(image, n_segments=n, compactness=10.0, start_label=0, channel_axis=-1).astype(np.int32)


def defect_mask(gt: np.ndarray, image: np.ndarray, rng: np.random.Generator,
                band: tuple[float, float] = DEFAULT_INIT_BAND,
                probabilities: Sequence[float] = DEFAULT_DEFECT_PROBABILITIES,
                max_proposals: int = 3000) -> np.ndarray:
    """A flawed initial mask for mask correction: superpixel defects on the ground truth (boundary error / external
    false positive / internal false negative, drawn with ``probabilities``) until the IoU is at most a target drawn
    uniformly in ``band`` (and within the band)."""
    gt = np.asarray(gt)
    obj = gt == 1
    if not obj.any():
        raise FinecutError("the ground truth has no object pixel: no initial mask to simulate")
    labels = superpixels(np.asarray(image), int(obj.sum()))
    count = int(labels.max()) + 1
    side = float(np.sqrt(obj.sum()))
    bw = max(2, int(round(0.03 * side)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * bw + 1, 2 * bw + 1))
    o8 = obj.astype(np.uint8)
    ring = (cv2.dilate(o8, kernel) > 0) & ~(cv2.erode(o8, kernel) > 0)
    total = np.bincount(labels.ravel(), minlength=count)
    inside = np.bincount(labels.ravel(), weights=obj.ravel(), minlength=count)
    on_ring = np.bincount(labels.ravel(), weights=ring.ravel(), minlength=count)
    frac = inside / np.maximum(total, 1)
    kinds = (
        np.flatnonzero(on_ring > 0),                       # boundary error
        np.flatnonzero((frac == 0) & (on_ring == 0)),      # external false positive
        np.flatnonzero((frac == 1) & (on_ring == 0)),      # internal false negative
    )
    p = np.asarray(probabilities, dtype=np.float64)

    def propose(mask: np.ndarray) -> np.ndarray | None:
        weights = np.array([p[i] if len(kinds[i]) else 0.0 for i in range(3)])
        if weights.sum() == 0:
            return None
        kind = int(rng.choice(3, p=weights / weights.sum()))
        sp = labels == int(kinds[kind][int(rng.integers(len(kinds[kind])))])
        out = mask.copy()
        if kind == 0:
            part = sp & ring
            can_add, can_cut = (part & ~mask).any(), (part & mask).any()
            add = bool(rng.random() < 0.5) if (can_add and can_cut) else bool(can_add)
            out[part] = add
        elif kind == 1:
            out[sp] = True
        else:
            out[sp] = False
        return out

    stop = float(rng.uniform(band[0], band[1]))  # each mask's own target: initial IoUs spread over the band
    return _walk(gt, band, propose, rng, max_proposals, stop)


class SimulatedInitMasks:
    """DAVIS-585-style initial masks from ``seed`` (a callable source for the mask-correction loop)."""

    def __init__(self, seed: int = 0, band: tuple[float, float] = DEFAULT_INIT_BAND,
                 probabilities: Sequence[float] = DEFAULT_DEFECT_PROBABILITIES) -> None:
        self.seed = int(seed)
        self.band = (float(band[0]), float(band[1]))
        self.probabilities = tuple(float(v) for v in probabilities)

    def __call__(self, sample: Sample) -> np.ndarray:
        rng = sample_rng(self.seed, sample.name, "davis585 defects")
        return defect_mask(sample.gt, sample.image, rng, self.band, self.probabilities)

    def __repr__(self) -> str:
        return (f"SimulatedInitMasks(seed={self.seed}, band={list(self.band)}, "
                f"probabilities={list(self.probabilities)})")
