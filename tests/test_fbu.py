"""FBU ground truth (training and evaluation recipes) and the final-mask rule."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from finecut.errors import FinecutError
from finecut.fbu import (
    CODE_BACKGROUND,
    CODE_FOREGROUND,
    CODE_UNCERTAIN,
    FBU_BACKGROUND,
    FBU_FOREGROUND,
    FBU_UNCERTAIN,
    code_map_to_labels,
    combine_probs,
    eval_fbu_map,
    eval_kernel,
    final_mask,
    labels_to_code_map,
    labels_to_one_hot,
    probs_to_labels,
    sample_train_kernel_size,
    train_fbu_map,
)


def _square_mask(size: int = 40, lo: int = 10, hi: int = 30) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[lo:hi, lo:hi] = True
    return mask


def test_eval_fbu_map_on_a_square_matches_hand_computed_bands() -> None:
    # 5x5 square kernel, 3 iterations: the uncertain band reaches 6 px out of and 6 px into the 20x20 square
    fbu = eval_fbu_map(_square_mask())
    assert fbu.dtype == np.uint8
    assert set(np.unique(fbu).tolist()) == {0, 128, 255}
    expected = np.zeros((40, 40), dtype=np.uint8)
    expected[4:36, 4:36] = 128
    expected[16:24, 16:24] = 255
    np.testing.assert_array_equal(fbu, expected)


def test_eval_fbu_map_is_the_supplementary_snippet_verbatim() -> None:
    rng = np.random.default_rng(0)
    mask = (cv2.GaussianBlur(rng.random((64, 80)).astype(np.float32), (0, 0), 4) > 0.5).astype(np.uint8) * 255
    kernel = np.ones((5, 5), np.uint8)
    dilated = cv2.dilate(mask, kernel, iterations=3)
    eroded = cv2.erode(mask, kernel, iterations=3)
    expected = np.full(mask.shape, 128, dtype=np.uint8)
    expected[eroded == 255] = 255
    expected[dilated == 0] = 0
    # bool, 0/1 and 0/255 masks all give the snippet's result
    np.testing.assert_array_equal(eval_fbu_map(mask), expected)
    np.testing.assert_array_equal(eval_fbu_map(mask > 0), expected)
    np.testing.assert_array_equal(eval_fbu_map((mask > 0).astype(np.uint8)), expected)


def test_eval_fbu_map_keeps_border_objects_foreground() -> None:
    # OpenCV's default border value does not erode at the image border
    mask = np.zeros((30, 30), dtype=bool)
    mask[:, :15] = True
    fbu = eval_fbu_map(mask)
    assert np.all(fbu[:, :9] == CODE_FOREGROUND)
    assert np.all(fbu[:, 9:21] == CODE_UNCERTAIN)
    assert np.all(fbu[:, 21:] == CODE_BACKGROUND)


def test_eval_kernel_shapes() -> None:
    np.testing.assert_array_equal(eval_kernel(5), np.ones((5, 5), np.uint8))
    ellipse = eval_kernel(5, "ellipse")
    assert ellipse.shape == (5, 5) and ellipse.sum() < 25
    with pytest.raises(FinecutError, match="kernel shape"):
        eval_kernel(5, "cross")  # type: ignore[arg-type]


def test_train_kernel_size_covers_15_to_30_inclusive() -> None:
    rng = np.random.default_rng(0)
    sizes = {sample_train_kernel_size(rng) for _ in range(2000)}
    assert sizes == set(range(15, 31))
    with pytest.raises(FinecutError, match="kernel range"):
        sample_train_kernel_size(rng, (5, 3))


def test_train_fbu_map_uses_an_elliptical_kernel_once() -> None:
    mask = np.zeros((80, 80), dtype=np.uint8)
    cv2.circle(mask, (40, 40), 20, 1, -1)
    fbu = train_fbu_map(mask, kernel_size=21)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (21, 21))
    np.testing.assert_array_equal(fbu == CODE_FOREGROUND, cv2.erode(mask, kernel) == 1)
    np.testing.assert_array_equal(fbu == CODE_BACKGROUND, cv2.dilate(mask, kernel) == 0)
    # a disk of radius 20 with an elliptical kernel of radius 10: uncertain ring between radii ~10 and ~30
    assert fbu[40, 40] == CODE_FOREGROUND
    assert fbu[40, 40 + 20] == CODE_UNCERTAIN
    assert fbu[40, 40 + 29] == CODE_UNCERTAIN
    assert fbu[40, 40 + 32] == CODE_BACKGROUND


def test_train_fbu_map_is_seeded_and_the_band_grows_with_the_kernel() -> None:
    mask = _square_mask(96, 30, 66)
    a = train_fbu_map(mask, np.random.default_rng(5))
    b = train_fbu_map(mask, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    small = np.count_nonzero(train_fbu_map(mask, kernel_size=15) == CODE_UNCERTAIN)
    large = np.count_nonzero(train_fbu_map(mask, kernel_size=30) == CODE_UNCERTAIN)
    assert 0 < small < large
    drawn = np.count_nonzero(a == CODE_UNCERTAIN)
    assert small <= drawn <= large


def test_fbu_rejects_bad_input() -> None:
    with pytest.raises(FinecutError, match="2-D"):
        eval_fbu_map(np.zeros((4, 4, 3)))
    with pytest.raises(FinecutError, match="iterations"):
        eval_fbu_map(np.zeros((4, 4)), iterations=0)
    with pytest.raises(FinecutError, match="kernel size"):
        train_fbu_map(np.zeros((4, 4)), kernel_size=0)
    with pytest.raises(FinecutError, match="other than 0, 128 and 255"):
        code_map_to_labels(np.array([[0, 7]], dtype=np.uint8))


def test_label_conversions_round_trip() -> None:
    code = np.array([[0, 128, 255], [255, 0, 128]], dtype=np.uint8)
    labels = code_map_to_labels(code)
    np.testing.assert_array_equal(labels, [[FBU_BACKGROUND, FBU_UNCERTAIN, FBU_FOREGROUND], [1, 0, 2]])
    np.testing.assert_array_equal(labels_to_code_map(labels), code)
    one_hot = labels_to_one_hot(labels)
    assert one_hot.shape == (3, 2, 3) and one_hot.dtype == np.float32
    np.testing.assert_array_equal(one_hot.sum(0), 1)
    np.testing.assert_array_equal(probs_to_labels(one_hot), labels)
    with pytest.raises(FinecutError, match="0 \\(background\\)"):
        labels_to_one_hot(np.array([[3]]))


def test_final_mask_is_foreground_or_confident_uncertain() -> None:
    labels = np.array([[FBU_FOREGROUND, FBU_FOREGROUND, FBU_BACKGROUND, FBU_BACKGROUND, FBU_UNCERTAIN, FBU_UNCERTAIN]])
    hrr = np.array([[0.0, 0.9, 0.9, 0.1, 0.51, 0.5]], dtype=np.float32)
    np.testing.assert_array_equal(final_mask(labels, hrr), [[True, True, False, False, True, False]])
    probs = combine_probs(labels, hrr)
    np.testing.assert_allclose(probs, [[1.0, 1.0, 0.0, 0.0, 0.51, 0.5]])
    np.testing.assert_array_equal(probs > 0.5, final_mask(labels, hrr))
    with pytest.raises(FinecutError, match="shape"):
        final_mask(labels, hrr[:, :3])


def test_eval_fbu_map_round_trip_through_final_mask_recovers_the_mask() -> None:
    # with a perfect HRR (probability = ground truth), the final mask equals the ground truth exactly
    mask = _square_mask(50, 12, 37)
    labels = code_map_to_labels(eval_fbu_map(mask))
    np.testing.assert_array_equal(final_mask(labels, mask.astype(np.float32)), mask)


def test_probs_to_labels_is_argmax_with_its_tie_rule() -> None:
    """The channel-comparison argmax equals ``np.argmax`` over the class axis, ties (to the lower class) included."""
    rng = np.random.default_rng(0)
    tied = rng.integers(0, 3, (3, 64, 80)).astype(np.float32)  # many exact ties
    smooth = rng.random((3, 50, 70), dtype=np.float32)
    for probs in (tied, smooth):
        labels = probs_to_labels(probs)
        assert labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, np.argmax(probs, axis=0))
