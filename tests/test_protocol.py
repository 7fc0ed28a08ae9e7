"""Pins the standard (RITM) click-simulation protocol and its metrics on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from finecut.errors import FinecutError
from finecut.evaluation import error_maps, iou, miou_curve, next_click, noc, nof
from finecut.evaluation.protocol import _padded_distance
from finecut.prompts import Click, ClickKind


def _click(x: int, y: int, positive: bool = True) -> Click:
    return Click(x, y, ClickKind.POSITIVE if positive else ClickKind.NEGATIVE)


def test_tie_between_fn_and_fp_gives_negative_click() -> None:
    gt = np.zeros((5, 10), dtype=np.int8)
    gt[2, 2] = 1  # a one-pixel object that is missed: FN distance 1
    pred = np.zeros((5, 10), dtype=bool)
    pred[2, 7] = True  # a one-pixel false positive: FP distance 1
    assert next_click(gt, pred, []) == _click(7, 2, positive=False)


def test_strictly_larger_fn_gives_positive_click() -> None:
    gt = np.zeros((7, 10), dtype=np.int8)
    gt[1:6, 1:4] = 1  # FN block: centre distance 2
    pred = np.zeros((7, 10), dtype=bool)
    pred[3, 7] = True  # FP distance 1
    click = next_click(gt, pred, [])
    assert click.kind is ClickKind.POSITIVE
    assert (click.x, click.y) == (2, 2)  # first of the distance-2 pixels (rows 2..4, col 2) in row-major order


def test_first_pixel_in_row_major_order_wins() -> None:
    gt = np.zeros((6, 8), dtype=np.int8)
    gt[3, 1] = 1  # two one-pixel misses with equal distance
    gt[1, 5] = 1
    pred = np.zeros_like(gt, dtype=bool)
    click = next_click(gt, pred, [])
    assert (click.x, click.y) == (5, 1)  # row 1 comes before row 3, although column 5 > column 1
    gt2 = np.zeros((6, 8), dtype=np.int8)
    gt2[2, 6] = 1
    gt2[2, 2] = 1  # same row: the smaller column wins
    assert next_click(gt2, pred, []) == _click(2, 2)


def test_plateau_of_maxima_picks_first_row_major_pixel() -> None:
    gt = np.zeros((9, 9), dtype=np.int8)
    gt[2:5, 1:8] = 1  # 3 x 7 block: the whole middle row (cols 2..6) has distance 2
    click = next_click(gt, np.zeros_like(gt, dtype=bool), [])
    assert (click.x, click.y, click.kind) == (2, 3, ClickKind.POSITIVE)


def test_border_pixel_of_region_touching_image_edge_has_distance_one() -> None:
    mask = np.zeros((7, 9), dtype=bool)
    mask[:, :3] = True  # touches the top, bottom and left borders
    dist = _padded_distance(mask)
    assert dist[0, 0] == pytest.approx(1.0)
    assert dist[3, 0] == pytest.approx(1.0)  # left edge: the zero pad is one pixel away
    assert dist[3, 1] == pytest.approx(2.0)
    assert dist[3, 2] == pytest.approx(1.0)
    assert dist[0, 1] == pytest.approx(1.0)  # top edge
    # Without the pad, column 0 would be 3 px from the nearest zero and would get the click.
    gt = mask.astype(np.int8)
    assert next_click(gt, np.zeros_like(mask), []) == _click(1, 1)


def test_whole_image_error_clicks_in_the_centre() -> None:
    gt = np.ones((5, 5), dtype=np.int8)
    assert next_click(gt, np.zeros((5, 5), dtype=bool), []) == _click(2, 2)


def test_ignore_pixels_are_excluded_from_both_error_maps() -> None:
    gt = np.zeros((12, 12), dtype=np.int8)
    gt[0:10, 0:10] = -1  # a large ignore area: would win if it counted as FN ...
    gt[11, 11] = 1  # ... against this one-pixel object
    pred = np.zeros_like(gt, dtype=bool)
    pred[2:8, 2:8] = True  # predicted inside the ignore area: no FP either
    fn, fp = error_maps(gt, pred)
    assert not fp.any()
    assert fn.sum() == 1
    assert next_click(gt, pred, []) == _click(11, 11)


def test_already_clicked_pixel_is_excluded_and_second_best_chosen() -> None:
    gt = np.zeros((7, 9), dtype=np.int8)
    gt[2:5, 2:7] = 1  # 3 x 5 block: distances on the middle row 1 2 2 2 1
    pred = np.zeros_like(gt, dtype=bool)
    first = next_click(gt, pred, [])
    assert first == _click(3, 3)
    second = next_click(gt, pred, [first])
    assert second == _click(4, 3)
    third = next_click(gt, pred, [first, second])
    assert third == _click(5, 3)
    # With every distance-2 pixel taken, the best left is a distance-1 pixel: the first in row-major order.
    assert next_click(gt, pred, [first, second, third]) == _click(2, 2)


def test_clicked_pixel_excluded_turns_fn_win_into_tie() -> None:
    gt = np.zeros((5, 9), dtype=np.int8)
    gt[1:4, 1:4] = 1  # FN 3x3 block: centre 2, rest 1
    pred = np.zeros_like(gt, dtype=bool)
    pred[2, 7] = True  # FP distance 1
    assert next_click(gt, pred, []).kind is ClickKind.POSITIVE
    # Once the centre holds a click, FN max = 1 = FP max: a tie, so negative.
    assert next_click(gt, pred, [_click(2, 2)]) == _click(7, 2, positive=False)


def _reference_next_click(gt: np.ndarray, pred: np.ndarray, clicks: list[Click]) -> tuple[int, int, bool]:
    """Independent re-implementation with SciPy's exact Euclidean distance transform."""
    valid = gt != -1
    fn = (gt == 1) & ~pred & valid
    fp = (gt != 1) & pred & valid

    def dist(mask: np.ndarray) -> np.ndarray:
        return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]

    allowed = np.ones(gt.shape, dtype=bool)
    for c in clicks:
        allowed[int(c.y), int(c.x)] = False
    fn_d, fp_d = dist(fn) * allowed, dist(fp) * allowed
    positive = fn_d.max() > fp_d.max()
    d = fn_d if positive else fp_d
    ys, xs = np.where(d == d.max())
    return int(xs[0]), int(ys[0]), bool(positive)


def test_next_click_agrees_with_reference_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = rng.integers(6, 30, size=2)
        gt = (ndimage.gaussian_filter(rng.random((h, w)), 2) > 0.5).astype(np.int8)
        gt[rng.random((h, w)) < 0.05] = -1
        pred = ndimage.gaussian_filter(rng.random((h, w)), 2) > 0.5
        clicks: list[Click] = []
        for _ in range(3):
            got = next_click(gt, pred, clicks)
            assert (got.x, got.y, got.is_positive) == _reference_next_click(gt, pred, clicks)
            clicks.append(got)


def test_next_click_rejects_mismatched_prediction() -> None:
    with pytest.raises(FinecutError, match="prediction has shape"):
        next_click(np.zeros((4, 4), dtype=np.int8), np.zeros((4, 5), dtype=bool), [])


def test_noc_counts_clicks_to_first_reach_and_20_when_never_reached() -> None:
    assert noc([0.80, 0.86, 0.84, 0.91], 0.85) == 2
    assert noc([0.80, 0.86, 0.84, 0.91], 0.90) == 4
    assert noc([0.85], 0.85) == 1  # reaching exactly counts
    assert noc([0.5] * 20, 0.85) == 20
    assert noc([0.5] * 20, 0.85, max_clicks=20) == 20
    assert noc([0.5] * 19 + [0.95], 0.90) == 20  # reached on the last click: also 20 (RITM)
    assert noc([0.5] * 25, 0.85, max_clicks=20) == 20


def test_nof_counts_samples_whose_noc_is_max_clicks() -> None:
    assert nof([1, 20, 5, 20, 19]) == 2
    assert nof([3, 4]) == 0
    assert nof([10, 10, 2], max_clicks=10) == 2


def test_iou_ignores_minus_one_pixels() -> None:
    gt = np.array([[1, 1, 0, -1], [0, 0, 0, -1]], dtype=np.int8)
    pred = np.array([[1, 0, 1, 1], [0, 0, 0, 1]], dtype=bool)
    # intersection 1 (pixel (0,0)); union {(0,0), (0,1), (0,2)} = 3; the -1 column is ignored
    assert iou(gt, pred) == pytest.approx(1 / 3)


def test_iou_inside_region_only() -> None:
    gt = np.zeros((4, 4), dtype=np.int8)
    gt[:, :2] = 1
    pred = np.zeros((4, 4), dtype=bool)
    pred[:2, :] = True
    assert iou(gt, pred) == pytest.approx(4 / 12)
    region = np.zeros((4, 4), dtype=bool)
    region[:2, :] = True  # top half only: gt there = 4 px, pred = 8 px
    assert iou(gt, pred, region) == pytest.approx(4 / 8)
    assert iou(gt, gt == 1, region) == 1.0


def test_iou_of_empty_union_is_one() -> None:
    gt = np.zeros((3, 3), dtype=np.int8)
    assert iou(gt, np.zeros((3, 3), dtype=bool)) == 1.0


def test_miou_curve_is_mean_over_samples_per_click() -> None:
    a = [0.1 * k for k in range(1, 21)]
    b = [0.5] * 20
    curve = miou_curve([a, b])
    assert curve.shape == (20,)
    assert curve[0] == pytest.approx((0.1 + 0.5) / 2)
    assert curve[19] == pytest.approx((2.0 + 0.5) / 2)
    assert miou_curve([[0.2, 0.4, 0.6]], max_clicks=3).tolist() == pytest.approx([0.2, 0.4, 0.6])


def test_miou_curve_refuses_runs_that_stopped_early() -> None:
    with pytest.raises(FinecutError, match="disable early stopping"):
        miou_curve([[0.9] * 20, [0.9] * 3])


def test_ntclick_protocol_gives_tolerant_clicks_inside_the_uncertain_band() -> None:
    from finecut.evaluation.protocol import next_click_tolerant, uncertain_band

    gt = np.zeros((40, 60), dtype=np.int8)
    gt[10:30, 10:50] = 1
    band = uncertain_band(gt)
    # the band of the supplementary's evaluation snippet: 3 iterations of a 5x5 kernel = 6 px either side
    assert band[10, 30] and band[4, 30] and not band[3, 30] and band[15, 30] and not band[16, 30]
    rng = np.random.default_rng(0)
    pred = np.zeros_like(gt, dtype=bool)
    pred[10:30, 10:50] = True
    pred[10:30, 45:50] = False  # a thin false-negative strip at the object's edge, inside the band
    click = next_click_tolerant(gt, pred, [], band, rng, max_offset=4)
    precise = next_click(gt, pred, [])
    assert click.kind is ClickKind.TOLERANT and band[click.pixel]
    assert (click.x - precise.x) ** 2 + (click.y - precise.y) ** 2 <= 16
    # a large error far from the boundary stays a precise click
    empty = np.zeros_like(pred)
    big = next_click_tolerant(gt, empty, [], band, rng)
    assert big == next_click(gt, empty, []) and big.kind is ClickKind.POSITIVE
    # the offset is seeded: the same seed gives the same click
    again = next_click_tolerant(gt, pred, [], band, np.random.default_rng(0), max_offset=4)
    assert again == click
