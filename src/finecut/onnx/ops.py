"""NumPy forms of the tensor operations the pipelines run around the ONNX graphs (no torch import here).

RoIAlign (:func:`finecut.models.roi_align.roi_align`: torchvision's ``roi_align(aligned=True)`` sampling through
``grid_sample`` with border padding) of an axis-aligned box is separable: its samples form a grid of one row list
and one column list, so one axis at a time is enough. :func:`cell_taps` gives an axis as *taps* (for each output cell,
the pixels it reads and their weights: ``samples`` bilinear samples of two pixels each, averaged), :func:`axis_weights`
the same as a small dense matrix, and :func:`roi_align` applies two such matrices, ``rows @ window @ cols.T``, to the
window the box covers — equal to the torch version up to float32 rounding.
"""

from __future__ import annotations

import numpy as np


def cell_taps(start: float, end: float, size: int, cells: int, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """One axis of a RoIAlign between the pixel edges ``start`` and ``end`` of an axis of ``size`` pixels, as taps:
    (2 * samples, cells) pixel indices and float32 weights with output cell ``i`` = ``sum_t weights[t, i] *
    x[indices[t, i]]`` (``samples`` evenly spaced bilinear samples per cell, positions clamped to the axis as
    ``grid_sample``'s border padding does, averaged)."""
    count = cells * samples
    t = (np.arange(count, dtype=np.float64) + 0.5) / count
    pos = np.clip(start + t * (end - start) - 0.5, 0.0, size - 1)  # pixel-centre coordinates
    low = np.floor(pos).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    frac = pos - low
    index = np.concatenate([low.reshape(cells, samples).T, high.reshape(cells, samples).T])
    weight = np.concatenate([(1 - frac).reshape(cells, samples).T, frac.reshape(cells, samples).T]) / samples
    return index, weight.astype(np.float32)


def axis_weights(start: float, end: float, size: int, cells: int, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`cell_taps` as the pixels read (sorted) and the (cells, len(pixels)) float32 matrix that maps them to the
    output cells."""
    index, weight = cell_taps(start, end, size, cells, samples)
    used, inverse = np.unique(index, return_inverse=True)
    matrix = np.zeros((cells, used.size), np.float64)
    np.add.at(matrix, (np.broadcast_to(np.arange(cells), index.shape), inverse.reshape(index.shape)), weight)
    return used, matrix.astype(np.float32)


def roi_align(features: np.ndarray, box: tuple[float, float, float, float], output_size: tuple[int, int],
              spatial_scale: float = 1.0, sampling_ratio: int = 2) -> np.ndarray:
    """Crop-and-resize ``features`` (1, C, H, W) to ``box`` (x0, y0, x1, y1 in pixel edges, scaled by
    ``spatial_scale``) -> (1, C, oh, ow) float32: ``sampling_ratio`` squared bilinear samples per output cell,
    averaged. Reads only the rows and columns the samples touch."""
    if features.ndim != 4 or features.shape[0] != 1:
        raise ValueError(f"features must be (1, C, H, W), got {features.shape}")
    _, _, height, width = features.shape
    oh, ow = (int(v) for v in output_size)
    s = max(1, int(sampling_ratio))
    x0, y0, x1, y1 = (float(v) * spatial_scale for v in box)
    rows, row_matrix = axis_weights(y0, y1, height, oh, s)
    cols, col_matrix = axis_weights(x0, x1, width, ow, s)
    window = np.take(np.take(features[0], rows, axis=1), cols, axis=2).astype(np.float32)
    out = np.matmul(np.matmul(row_matrix, window), np.ascontiguousarray(col_matrix.T))
    return np.ascontiguousarray(out[None], dtype=np.float32)


__all__ = ["axis_weights", "cell_taps", "roi_align"]
