"""Pure geometry helpers for the pipelines: boxes, expansion, clamping, connected components."""

from __future__ import annotations

import cv2
import numpy as np

from finecut.prompts import Click

BoxF = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixel-edge coordinates


def mask_box(mask: np.ndarray) -> BoxF | None:
    """Tight box of the True pixels (pixel-edge coords), or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def union_box(a: BoxF | None, b: BoxF | None) -> BoxF | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def intersect_box(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    """The overlap of two integer boxes (x0, y0, x1, y1), or None when they do not overlap."""
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def click_box(click: Click) -> BoxF:
    r, c = click.pixel
    return float(c), float(r), float(c + 1), float(r + 1)


def expand_box(box: BoxF, ratio: float, min_size: float, height: int, width: int) -> BoxF:
    """Grow ``box`` about its centre by ``ratio`` (at least ``min_size`` per side), shifted/clamped into the image."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w = min(width, max((x1 - x0) * ratio, min_size))
    h = min(height, max((y1 - y0) * ratio, min_size))
    nx0 = float(np.clip(cx - w / 2, 0, width - w))
    ny0 = float(np.clip(cy - h / 2, 0, height - h))
    return nx0, ny0, nx0 + w, ny0 + h


def integer_box(box: BoxF, height: int, width: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    ix0, iy0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    ix1, iy1 = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
    return ix0, iy0, max(ix1, ix0 + 1), max(iy1, iy0 + 1)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks of one shape (1.0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def component_at(mask: np.ndarray, row: int, col: int) -> np.ndarray | None:
    """The 8-connected component of ``mask`` that contains (row, col), or None if that pixel is not set."""
    if not mask[row, col]:
        return None
    _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return labels == labels[row, col]


def components_touching(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """(H, W) bool: the 8-connected components of ``mask`` that touch a ``seeds`` pixel or its 8 neighbours."""
    if not mask.any() or not seeds.any():
        return np.zeros(mask.shape, bool)
    _, components = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    near = cv2.dilate(seeds.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    ids = np.unique(components[near & mask])
    return np.isin(components, ids[ids > 0])


def net_size(box_w: float, box_h: float, long_side: int, multiple: int = 16) -> tuple[int, int]:
    """(height, width) of a network input for a crop: long side ``long_side``, aspect kept, multiples of ``multiple``."""
    scale = long_side / max(box_w, box_h)
    h = max(multiple, int(round(box_h * scale / multiple)) * multiple)
    w = max(multiple, int(round(box_w * scale / multiple)) * multiple)
    return h, w
