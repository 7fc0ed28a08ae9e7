"""NTClick's FBU map (foreground / background / uncertain): ground truth from masks, and the final-mask rule.

Two encodings are used:

- the *code map* of the NTClick supplementary: ``uint8`` (H, W) with ``255`` foreground, ``0`` background and
  ``128`` uncertain (what :func:`train_fbu_map` and :func:`eval_fbu_map` return);
- *labels*: ``int64`` (H, W) class indices :data:`FBU_BACKGROUND` (0), :data:`FBU_FOREGROUND` (1) and
  :data:`FBU_UNCERTAIN` (2) — the ECP network's classes, in this channel order for one-hot / probability maps.

Training ground truth (supplementary §1.3): a random elliptical OpenCV kernel of size 15–30 (inclusive), one
erosion (-> foreground) and one dilation (complement -> background) of the 0/1 mask; the rest is uncertain.
Evaluation ground truth is the supplementary's evaluation snippet verbatim: a fixed 5×5 kernel, 3 dilation and
3 erosion iterations on the 0/255 mask. The snippet does not show how ``kernel`` is built; we use the square
``np.ones((5, 5), np.uint8)`` (the supplementary stresses that evaluation deliberately uses *different* operators from
the elliptical training kernel); ``kernel_shape="ellipse"`` is available for the other reading.

The final NTClick mask is ``FBU foreground ∪ (FBU uncertain ∧ HRR > 0.5)`` (:func:`final_mask`).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from finecut.errors import FinecutError

FBU_BACKGROUND = 0
FBU_FOREGROUND = 1
FBU_UNCERTAIN = 2
#: Class names in label / channel order.
FBU_CLASSES: tuple[str, ...] = ("background", "foreground", "uncertain")

#: Code-map values of the supplementary's code.
CODE_BACKGROUND = 0
CODE_UNCERTAIN = 128
CODE_FOREGROUND = 255

#: Inclusive range of the random elliptical kernel size used for training ground truth.
TRAIN_KERNEL_RANGE: tuple[int, int] = (15, 30)
#: Fixed kernel size and iteration count of the evaluation snippet.
EVAL_KERNEL_SIZE = 5
EVAL_ITERATIONS = 3


def _binary_mask(mask: np.ndarray, what: str = "mask") -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise FinecutError(f"{what} must be 2-D (H, W), got shape {arr.shape}")
    if arr.size == 0:
        raise FinecutError(f"{what} is empty (shape {arr.shape})")
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.number):
        raise FinecutError(f"{what} must be bool or numeric, got dtype {arr.dtype}")
    return arr > 0


def sample_train_kernel_size(rng: np.random.Generator, kernel_range: tuple[int, int] = TRAIN_KERNEL_RANGE) -> int:
    """Draw the training kernel size uniformly from the inclusive ``kernel_range``."""
    lo, hi = int(kernel_range[0]), int(kernel_range[1])
    if not 1 <= lo <= hi:
        raise FinecutError(f"kernel range must satisfy 1 <= low <= high, got {kernel_range}")
    return int(rng.integers(lo, hi + 1))


def train_fbu_map(
    mask: np.ndarray,
    rng: np.random.Generator | None = None,
    kernel_size: int | None = None,
    kernel_range: tuple[int, int] = TRAIN_KERNEL_RANGE,
) -> np.ndarray:
    """Training FBU ground truth as a code map (uint8 0 / 128 / 255), per the supplementary's training code.

    ``kernel = cv2.getStructuringElement(MORPH_ELLIPSE, (s, s))`` with ``s`` drawn from ``kernel_range`` (or given as
    ``kernel_size``); ``fg_mask = erode(mask01, kernel)``, ``bg_mask = 1 - dilate(mask01, kernel)``; then
    ``fbumap[fg_mask == 1] = 255`` and ``fbumap[bg_mask == 1] = 0`` over a map filled with 128.
    """
    binary = _binary_mask(mask)
    if kernel_size is None:
        size = sample_train_kernel_size(rng if rng is not None else np.random.default_rng(), kernel_range)
    else:
        size = int(kernel_size)
        if size < 1:
            raise FinecutError(f"kernel size must be >= 1, got {kernel_size}")
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    mask01 = binary.astype(np.uint8)
    fg_mask = cv2.erode(mask01, kernel)
    bg_mask = 1 - cv2.dilate(mask01, kernel)
    fbumap = np.full(mask01.shape, CODE_UNCERTAIN, dtype=np.uint8)
    fbumap[fg_mask == 1] = CODE_FOREGROUND
    fbumap[bg_mask == 1] = CODE_BACKGROUND
    return fbumap


def eval_kernel(kernel_size: int = EVAL_KERNEL_SIZE, kernel_shape: Literal["rect", "ellipse"] = "rect") -> np.ndarray:
    """The evaluation structuring element: ``np.ones((k, k), np.uint8)`` (default) or an OpenCV ellipse."""
    if kernel_size < 1:
        raise FinecutError(f"kernel size must be >= 1, got {kernel_size}")
    if kernel_shape == "rect":
        return np.ones((kernel_size, kernel_size), np.uint8)
    if kernel_shape == "ellipse":
        return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_size, kernel_size))
    raise FinecutError(f"unknown kernel shape {kernel_shape!r}: use 'rect' or 'ellipse'")


def eval_fbu_map(
    mask: np.ndarray,
    kernel_size: int = EVAL_KERNEL_SIZE,
    iterations: int = EVAL_ITERATIONS,
    kernel_shape: Literal["rect", "ellipse"] = "rect",
) -> np.ndarray:
    """Evaluation FBU map as a code map (uint8 0 / 128 / 255): the supplementary's evaluation snippet.

    ``mask`` (bool or 0/1 or 0/255) is first brought to the snippet's 0/255 uint8 form.
    """
    if iterations < 1:
        raise FinecutError(f"iterations must be >= 1, got {iterations}")
    mask = _binary_mask(mask).astype(np.uint8) * 255
    kernel = eval_kernel(kernel_size, kernel_shape)
    dilation_iter = erosion_iter = iterations
    # --- the supplementary's evaluation snippet ---
    dilated = cv2.dilate(mask, kernel, iterations=dilation_iter)
    eroded = cv2.erode(mask, kernel, iterations=erosion_iter)
    fbumap = np.full(mask.shape, 128, dtype=np.uint8)
    fbumap[eroded == 255] = 255
    fbumap[dilated == 0] = 0
    return fbumap


def code_map_to_labels(fbumap: np.ndarray) -> np.ndarray:
    """Code map (0 / 128 / 255) -> labels (int64, 0 background / 1 foreground / 2 uncertain)."""
    arr = np.asarray(fbumap)
    if arr.ndim != 2:
        raise FinecutError(f"FBU code map must be 2-D (H, W), got shape {arr.shape}")
    bad = ~np.isin(arr, (CODE_BACKGROUND, CODE_UNCERTAIN, CODE_FOREGROUND))
    if bad.any():
        values = np.unique(arr[bad])[:5].tolist()
        raise FinecutError(f"FBU code map holds values {values} other than 0, 128 and 255")
    labels = np.full(arr.shape, FBU_UNCERTAIN, dtype=np.int64)
    labels[arr == CODE_BACKGROUND] = FBU_BACKGROUND
    labels[arr == CODE_FOREGROUND] = FBU_FOREGROUND
    return labels


def labels_to_code_map(labels: np.ndarray) -> np.ndarray:
    """Labels (0 / 1 / 2) -> code map (uint8 0 / 255 / 128)."""
    arr = _check_labels(labels)
    lut = np.array([CODE_BACKGROUND, CODE_FOREGROUND, CODE_UNCERTAIN], dtype=np.uint8)
    return lut[arr]


def _check_labels(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise FinecutError(f"FBU labels must be 2-D (H, W), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise FinecutError(f"FBU labels must be integers 0/1/2, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > 2):
        values = np.unique(arr)[:5].tolist()
        raise FinecutError(f"FBU labels must be 0 (background), 1 (foreground) or 2 (uncertain), got {values}")
    return arr


def labels_to_one_hot(labels: np.ndarray) -> np.ndarray:
    """Labels (H, W) -> float32 one-hot (3, H, W) in :data:`FBU_CLASSES` channel order (the HRR's FBU input)."""
    arr = _check_labels(labels)
    return (arr[None] == np.arange(3)[:, None, None]).astype(np.float32)


def probs_to_labels(probs: np.ndarray) -> np.ndarray:
    """Per-pixel argmax of a (3, H, W) probability / logit map -> uint8 labels (H, W), ties to the lower class as
    ``np.argmax``'s; by channel comparisons, several times faster than an argmax over the leading axis on a
    4096² map."""
    arr = np.asarray(probs)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise FinecutError(f"FBU probabilities must have shape (3, H, W), got {arr.shape}")
    bg, fg, unc = arr
    labels = np.zeros(bg.shape, np.uint8)
    labels[(fg > bg) & (fg >= unc)] = FBU_FOREGROUND
    labels[(unc > bg) & (unc > fg)] = FBU_UNCERTAIN
    return labels


def combine_probs(fbu_labels: np.ndarray, hrr_probs: np.ndarray) -> np.ndarray:
    """Final NTClick probabilities: 1 on FBU foreground, 0 on background, the HRR's probability where uncertain."""
    labels = _check_labels(fbu_labels)
    probs = np.asarray(hrr_probs, dtype=np.float32)
    if probs.shape != labels.shape:
        raise FinecutError(f"HRR probabilities have shape {probs.shape}, but the FBU map has shape {labels.shape}")
    out = np.where(labels == FBU_UNCERTAIN, probs, np.float32(0.0))
    out[labels == FBU_FOREGROUND] = 1.0
    return out.astype(np.float32, copy=False)


def final_mask(fbu_labels: np.ndarray, hrr_probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``FBU foreground ∪ (FBU uncertain ∧ HRR > threshold)`` as a bool (H, W) mask."""
    labels = _check_labels(fbu_labels)
    probs = np.asarray(hrr_probs)
    if probs.shape != labels.shape:
        raise FinecutError(f"HRR probabilities have shape {probs.shape}, but the FBU map has shape {labels.shape}")
    return (labels == FBU_FOREGROUND) | ((labels == FBU_UNCERTAIN) & (probs > threshold))
