"""Progressive Merge (FocalClick §3.1) as the evaluator applies it, the same for every engine.

After an interaction, the new mask replaces the previous one only in the connected region(s) of their difference that
touch the interaction (the new click's pixel, or the new scribble's pixels); everywhere else the previous mask is kept,
so correct parts of an initial mask survive. The mask-correction protocol reports NoC with and without it.
"""

from __future__ import annotations

import cv2
import numpy as np

from finecut.prompts import check_mask_shape


def merge_region(previous: np.ndarray, new: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The pixels to take from ``new``: the 8-connected components of ``previous != new`` that contain a ``seeds``
    pixel (bool (H, W); all False when the interaction changed nothing where it was made)."""
    previous = np.asarray(previous, dtype=bool)
    new = np.asarray(new, dtype=bool)
    seeds = np.asarray(seeds, dtype=bool)
    check_mask_shape(new, previous.shape, what="new mask")
    check_mask_shape(seeds, previous.shape, what="interaction pixels")
    diff = previous != new
    hit = diff & seeds
    if not hit.any():
        return np.zeros(previous.shape, dtype=bool)
    _, labels = cv2.connectedComponents(diff.astype(np.uint8), connectivity=8)
    ids = np.unique(labels[hit])
    return np.isin(labels, ids[ids > 0])


def progressive_merge(previous: np.ndarray, new: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """``new`` inside :func:`merge_region`, ``previous`` elsewhere (bool (H, W))."""
    region = merge_region(previous, new, seeds)
    return np.where(region, np.asarray(new, dtype=bool), np.asarray(previous, dtype=bool))
