"""Training-time simulators of FocalClick-XL's other interaction forms (paper §5.1): boxes, coarse masks, scribbles.

All are random (a ``numpy.random.Generator`` drives them) and work on bool masks at whatever resolution they are
given; the evaluation protocols' deterministic simulators (:mod:`finecut.evaluation.perturb`,
:mod:`finecut.evaluation.scribbles`) are what the models are measured with, these are what they learn from.

* **Boxes** (:func:`simulate_box`): the ground truth's tightest box, each edge moved by a normal share of the box's
  side and the whole box scaled a little ("variations in box sizes and locations").
* **Coarse masks** (:func:`simulate_coarse_mask`): the ground truth through one to three random degradations —
  erosion or dilation with elliptic or square kernels, downsampling (2-16 x) and upsampling at a random threshold,
  blur and threshold, blobs added / removed (:func:`finecut.training.clicks.corrupt_mask`) — so the coarse masks
  span a wide IoU range (the coarse protocol's bands go down to 0.45).
* **Scribbles** (:func:`simulate_scribble`): one stroke of width 3-7 inside a region, of one of three kinds — a
  ``bezier`` curve through random control points of the region, an ``axial`` stroke along (part of) the region's
  medial axis (the evaluation simulator's path, :func:`finecut.evaluation.scribbles.region_scribble`, cut to a random
  stretch), or a ``boundary`` stroke following part of the region's contour a few pixels inside it.
  :func:`initial_scribbles` places the first strokes from the ground truth (positive on the object, negative on a
  band around it or anywhere in the background); :func:`correction_scribble` the next one on the largest error
  region of a prediction.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from finecut.prompts import Scribble
from finecut.training.clicks import corrupt_mask

#: The scribble simulators (paper §5.1, Fig. 4).
SCRIBBLE_KINDS: tuple[str, ...] = ("bezier", "axial", "boundary")


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The tightest box (x0, y0, x1, y1; pixel edges, exclusive end) of a bool mask, or None when it is empty."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


# ----------------------------------------------------------------------------------------------------------- boxes


def simulate_box(box: Sequence[float], shape: tuple[int, int], rng: np.random.Generator, jitter: float = 0.08,
                 scale: tuple[float, float] = (0.95, 1.1)) -> tuple[float, float, float, float]:
    """A user's box around the object box ``box`` (x0, y0, x1, y1) in an image of ``shape`` (h, w): scaled about its
    centre by a factor in ``scale``, each edge then moved by N(0, ``jitter`` x the box's side), clipped to the image;
    at least 2 px on each side."""
    h, w = shape
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    f = float(rng.uniform(*scale))
    bw, bh = max(1.0, (x1 - x0) * f), max(1.0, (y1 - y0) * f)
    sigma = float(rng.uniform(0.0, jitter))
    dx0, dx1 = rng.normal(0.0, sigma * bw, 2)
    dy0, dy1 = rng.normal(0.0, sigma * bh, 2)
    nx0 = float(np.clip(cx - bw / 2 + dx0, 0, w - 2))
    ny0 = float(np.clip(cy - bh / 2 + dy0, 0, h - 2))
    nx1 = float(np.clip(cx + bw / 2 + dx1, nx0 + 2, w))
    ny1 = float(np.clip(cy + bh / 2 + dy1, ny0 + 2, h))
    return nx0, ny0, nx1, ny1


# ---------------------------------------------------------------------------------------------------- coarse masks


def _kernel(radius: int, rng: np.random.Generator) -> np.ndarray:
    shape = cv2.MORPH_ELLIPSE if rng.random() < 0.6 else cv2.MORPH_RECT
    return cv2.getStructuringElement(shape, (2 * radius + 1, 2 * radius + 1))


def simulate_coarse_mask(mask: np.ndarray, rng: np.random.Generator, max_ops: int = 3) -> np.ndarray:
    """A coarse version of the bool ``mask``: 1..``max_ops`` random degradations (erode / dilate, down- and
    upsampling, blur + threshold, blobs). Never empty when ``mask`` is not."""
    m = mask.astype(np.uint8)
    if not m.any():
        return mask.astype(bool)
    h, w = m.shape
    side = max(4.0, float(np.sqrt(m.sum())))
    for _ in range(int(rng.integers(1, max_ops + 1))):
        op = rng.choice(("morph", "downsample", "blur", "blobs"), p=(0.4, 0.3, 0.15, 0.15))
        if op == "morph":
            radius = int(rng.integers(1, max(2, int(side * rng.uniform(0.02, 0.12))) + 1))
            m = cv2.dilate(m, _kernel(radius, rng)) if rng.random() < 0.5 else cv2.erode(m, _kernel(radius, rng))
        elif op == "downsample":
            factor = float(rng.uniform(2.0, 16.0))
            sh, sw = max(2, round(h / factor)), max(2, round(w / factor))
            small = cv2.resize(m.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA)
            interp = cv2.INTER_LINEAR if rng.random() < 0.7 else cv2.INTER_NEAREST
            m = (cv2.resize(small, (w, h), interpolation=interp) > rng.uniform(0.3, 0.7)).astype(np.uint8)
        elif op == "blur":
            sigma = float(side * rng.uniform(0.01, 0.06)) + 0.5
            soft = cv2.GaussianBlur(m.astype(np.float32), (0, 0), sigma)
            m = (soft > rng.uniform(0.3, 0.7)).astype(np.uint8)
        else:
            m = corrupt_mask(m.astype(bool), rng).astype(np.uint8)
        if not m.any():  # too strong: start again from a slight dilation of the ground truth
            m = cv2.dilate(mask.astype(np.uint8), _kernel(1, rng))
    return m.astype(bool)


# ------------------------------------------------------------------------------------------------------- scribbles


def _cubic_bezier(control: np.ndarray, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2, p3 = control
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3


def _longest_inside_run(points: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The longest run of consecutive (x, y) ``points`` whose pixels are ``allowed``."""
    h, w = allowed.shape
    cols = np.clip(np.round(points[:, 0]).astype(int), 0, w - 1)
    rows = np.clip(np.round(points[:, 1]).astype(int), 0, h - 1)
    ok = allowed[rows, cols]
    best, start, best_range = 0, None, (0, 0)
    for i, v in enumerate(list(ok) + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            if i - start > best:
                best, best_range = i - start, (start, i)
            start = None
    return points[best_range[0]:best_range[1]]


def _core(region: np.ndarray, width: float) -> np.ndarray:
    """The pixels of ``region`` a stroke of ``width`` can be centred on (eroded by its half-width); the region's
    deepest pixels when it is too thin."""
    padded = np.pad(region.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]
    core = dist >= width / 2.0 + 0.5
    return core if core.any() else dist >= dist.max() - 1e-6


def bezier_scribble(region: np.ndarray, positive: bool, width: float, rng: np.random.Generator) -> Scribble | None:
    """A cubic Bézier curve through four random pixels of the region's core, cut to its longest run inside it."""
    core = _core(region, width)
    ys, xs = np.nonzero(core)
    if len(ys) == 0:
        return None
    idx = rng.choice(len(ys), size=4, replace=len(ys) < 4)
    control = np.stack([xs[idx], ys[idx]], axis=1).astype(np.float64)
    # order the control points along their main direction, so the curve does not fold back on itself
    centred = control - control.mean(0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0] if np.abs(centred).sum() > 0 else np.array([1.0, 0])
    control = control[np.argsort(centred @ direction)]
    length = float(np.linalg.norm(np.diff(control, axis=0), axis=1).sum())
    curve = _longest_inside_run(_cubic_bezier(control, max(8, int(length))), core)
    if len(curve) == 0:
        return None
    return _stroke(curve, positive, width)


def axial_scribble(region: np.ndarray, positive: bool, width: float, rng: np.random.Generator) -> Scribble | None:
    """A stretch (40-100 %) of the evaluation simulator's medial-axis stroke of the region."""
    from finecut.evaluation.scribbles import region_scribble

    full = region_scribble(region, positive, width)
    pts = np.asarray(full.points, dtype=np.float64)
    if len(pts) > 4:
        keep = max(2, int(len(pts) * rng.uniform(0.4, 1.0)))
        start = int(rng.integers(0, len(pts) - keep + 1))
        pts = pts[start:start + keep]
    return _stroke(pts, positive, full.width)


def boundary_scribble(region: np.ndarray, positive: bool, width: float, rng: np.random.Generator
                      ) -> Scribble | None:
    """A stroke along 15-60 % of the contour of the region eroded by the stroke's half-width plus 1-4 px."""
    inset = round(width / 2.0 + rng.uniform(1.0, 4.0))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * inset + 1, 2 * inset + 1))
    inner = cv2.erode(np.pad(region.astype(np.uint8), 1), kernel)[1:-1, 1:-1]
    if not inner.any():
        return None
    contours, _ = cv2.findContours(inner, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=len).reshape(-1, 2).astype(np.float64)
    if len(contour) < 4:
        return None
    keep = max(2, int(len(contour) * rng.uniform(0.15, 0.6)))
    start = int(rng.integers(0, len(contour)))
    pts = np.roll(contour, -start, axis=0)[:keep:2]
    return _stroke(pts, positive, width)


def _stroke(points: np.ndarray, positive: bool, width: float) -> Scribble:
    pts = [(float(x), float(y)) for x, y in points]
    if len(pts) == 1:
        pts = pts * 2
    return Scribble(tuple(pts), positive=positive, width=float(width))


_SIMULATORS = {"bezier": bezier_scribble, "axial": axial_scribble, "boundary": boundary_scribble}


def simulate_scribble(region: np.ndarray, positive: bool, rng: np.random.Generator,
                      width: tuple[int, int] = (3, 7), kinds: Sequence[str] = SCRIBBLE_KINDS) -> Scribble | None:
    """One stroke inside the bool ``region`` of a random kind in ``kinds`` and a random width in ``width`` (px);
    falls back to the other kinds when one cannot place a stroke; None for an empty region."""
    region = np.asarray(region, dtype=bool)
    if not region.any():
        return None
    stroke_width = float(rng.integers(int(width[0]), int(width[1]) + 1))
    order = list(rng.permutation(list(kinds)))
    for kind in order + [k for k in SCRIBBLE_KINDS if k not in order]:
        scribble = _SIMULATORS[str(kind)](region, positive, stroke_width, rng)
        if scribble is not None:
            return scribble
    return None


def initial_scribbles(mask: np.ndarray, rng: np.random.Generator, width: tuple[int, int] = (3, 7),
                      max_positive: int = 2, max_negative: int = 2) -> list[Scribble]:
    """The first strokes for an object: 1..``max_positive`` positive ones on it and 0..``max_negative`` negative ones
    on a 5-40 px band around it (70 %) or anywhere in the background."""
    out: list[Scribble] = []
    for _ in range(int(rng.integers(1, max_positive + 1))):
        s = simulate_scribble(mask, True, rng, width)
        if s is not None:
            out.append(s)
    background = ~mask
    for _ in range(int(rng.integers(0, max_negative + 1))):
        region = background
        if rng.random() < 0.7:
            r = int(rng.integers(5, 41))
            band = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))
            if (band.astype(bool) & background).any():
                region = band.astype(bool) & background
        s = simulate_scribble(region, False, rng, width)
        if s is not None:
            out.append(s)
    return out


def largest_error(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """The largest 8-connected false-negative or false-positive region of ``pred`` (bool maps) and whether it is a
    false-negative one; None when ``pred`` is exact."""
    best: tuple[int, np.ndarray, bool] | None = None
    for positive, err in ((True, gt & ~pred), (False, ~gt & pred)):
        if not err.any():
            continue
        _, labels, stats, _ = cv2.connectedComponentsWithStats(err.astype(np.uint8), connectivity=8)
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = int(stats[k, cv2.CC_STAT_AREA])
        if best is None or area > best[0]:
            best = (area, labels == k, positive)
    return None if best is None else (best[1], best[2])


def correction_scribble(gt: np.ndarray, pred: np.ndarray, rng: np.random.Generator,
                        width: tuple[int, int] = (3, 7)) -> Scribble | None:
    """A stroke on the largest error region of ``pred``: positive on missed object, negative on false object."""
    found = largest_error(gt, pred)
    if found is None:
        return None
    region, positive = found
    return simulate_scribble(region, positive, rng, width)


__all__ = [
    "SCRIBBLE_KINDS", "axial_scribble", "bezier_scribble", "boundary_scribble", "correction_scribble",
    "initial_scribbles", "largest_error", "mask_box", "simulate_box", "simulate_coarse_mask", "simulate_scribble",
]
