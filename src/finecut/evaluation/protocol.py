"""The standard (RITM) click-simulation protocol and its metrics, as pure functions.

These match ``isegm/inference/clicker.py`` and ``isegm/inference/utils.py`` of RITM exactly: error maps exclude
ignore pixels, are zero-padded by 1 px before an exact L2 distance transform, already clicked pixels are excluded,
the click is positive only if the false-negative maximum is strictly greater (ties go negative), and it lands on the
first pixel in row-major order that reaches the maximum.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from finecut.errors import FinecutError
from finecut.pipelines.geometry import mask_iou
from finecut.prompts import Click, ClickKind, check_mask_shape

IGNORE_LABEL = -1


def _padded_distance(mask: np.ndarray) -> np.ndarray:
    """Exact L2 distance of each pixel of ``mask`` to the nearest non-mask pixel, the image border counting as such."""
    padded = np.pad(mask.astype(np.uint8), ((1, 1), (1, 1)), mode="constant")
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 0)
    return dist[1:-1, 1:-1]


def error_maps(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False-negative and false-positive maps (bool), both excluding ignore pixels."""
    gt = np.asarray(gt)
    pred = np.asarray(pred, dtype=bool)
    check_mask_shape(pred, gt.shape, what="prediction")
    valid = gt != IGNORE_LABEL
    obj = gt == 1
    fn = obj & ~pred & valid
    fp = ~obj & pred & valid
    return fn, fp


def clicked_map(shape: tuple[int, int], clicks: Sequence[Click]) -> np.ndarray:
    """Bool map that is False at every pixel already holding a click."""
    not_clicked = np.ones(shape, dtype=bool)
    for click in clicks:
        row, col = click.pixel
        if 0 <= row < shape[0] and 0 <= col < shape[1]:
            not_clicked[row, col] = False
    return not_clicked


def next_click(gt: np.ndarray, pred: np.ndarray, clicks: Sequence[Click] = ()) -> Click:
    """The simulated user's next click under the standard protocol.

    ``gt``: int (H, W) with 1 object, 0 background, -1 ignore. ``pred``: bool (H, W). ``clicks``: the clicks so far.
    Returns a positive or negative :class:`~finecut.prompts.Click` at integer pixel coordinates.
    """
    gt = np.asarray(gt)
    if gt.ndim != 2:
        raise FinecutError(f"ground truth must be 2-D, got shape {gt.shape}")
    fn, fp = error_maps(gt, pred)
    not_clicked = clicked_map(gt.shape, clicks)
    fn_dt = _padded_distance(fn) * not_clicked
    fp_dt = _padded_distance(fp) * not_clicked
    fn_max = fn_dt.max()
    fp_max = fp_dt.max()
    is_positive = bool(fn_max > fp_max)
    dt, peak = (fn_dt, fn_max) if is_positive else (fp_dt, fp_max)
    flat = int(np.flatnonzero(dt == peak)[0])
    row, col = divmod(flat, gt.shape[1])
    return Click(x=col, y=row, kind=ClickKind.POSITIVE if is_positive else ClickKind.NEGATIVE)


def iou(gt: np.ndarray, pred: np.ndarray, region: np.ndarray | None = None) -> float:
    """IoU of ``pred`` with the object (gt == 1), ignoring -1 pixels and, if given, pixels outside ``region``.

    An empty union (no object, nothing predicted) scores 1.0.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred, dtype=bool)
    check_mask_shape(pred, gt.shape, what="prediction")
    valid = gt != IGNORE_LABEL
    if region is not None:
        check_mask_shape(region, gt.shape, what="evaluation region")
        valid &= np.asarray(region, dtype=bool)
    return mask_iou(pred & valid, (gt == 1) & valid)


def noc(ious: Sequence[float], threshold: float, max_clicks: int = 20) -> int:
    """Number of clicks to first reach ``threshold`` IoU; ``max_clicks`` if never reached (RITM's convention)."""
    arr = np.asarray(ious, dtype=np.float64)[:max_clicks]
    hits = np.flatnonzero(arr >= threshold)
    return int(hits[0]) + 1 if hits.size else max_clicks


def nof(nocs: Sequence[int], max_clicks: int = 20) -> int:
    """Number of failures: samples whose NoC equals ``max_clicks``."""
    return int(np.count_nonzero(np.asarray(nocs) == max_clicks))


def miou_curve(all_ious: Sequence[Sequence[float]], max_clicks: int = 20) -> np.ndarray:
    """Mean IoU after k = 1..max_clicks clicks, over runs that all took ``max_clicks`` clicks."""
    rows = []
    for ious in all_ious:
        arr = np.asarray(ious, dtype=np.float64)
        if arr.size < max_clicks:
            raise FinecutError(
                f"mIoU@k needs runs of {max_clicks} clicks, got one of {arr.size} (disable early stopping)"
            )
        rows.append(arr[:max_clicks])
    return np.mean(np.stack(rows), axis=0) if rows else np.zeros(max_clicks)


def uncertain_band(gt: np.ndarray) -> np.ndarray:
    """NTClick's evaluation uncertain band of the object (gt == 1): the FBU map's uncertain pixels (5x5 kernel,
    3 iterations, the supplementary's evaluation snippet), ignore pixels excluded."""
    from finecut.fbu import CODE_UNCERTAIN, eval_fbu_map

    gt = np.asarray(gt)
    return (eval_fbu_map(gt == 1) == CODE_UNCERTAIN) & (gt != IGNORE_LABEL)


def next_click_tolerant(gt: np.ndarray, pred: np.ndarray, clicks: Sequence[Click], band: np.ndarray,
                        rng: np.random.Generator, max_offset: float = 10.0) -> Click:
    """NTClick's protocol: the standard click, except that when it falls in the GT ``band`` (the uncertain band of
    fine structure) the simulated user gives a *tolerant* click at a random offset (at most ``max_offset`` px,
    drawn from ``rng``) that still lies inside the band."""
    click = next_click(gt, pred, clicks)
    row, col = click.pixel
    if not band[row, col]:
        return click
    r = int(np.ceil(max_offset))
    r0, r1 = max(0, row - r), min(band.shape[0], row + r + 1)
    c0, c1 = max(0, col - r), min(band.shape[1], col + r + 1)
    ys, xs = np.nonzero(band[r0:r1, c0:c1])
    ys, xs = ys + r0, xs + c0
    near = (ys - row) ** 2 + (xs - col) ** 2 <= max_offset**2
    ys, xs = ys[near], xs[near]
    k = int(rng.integers(len(ys)))  # the click's own pixel is always a candidate
    return Click(x=int(xs[k]), y=int(ys[k]), kind=ClickKind.TOLERANT)
