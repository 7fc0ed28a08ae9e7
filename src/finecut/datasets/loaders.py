"""Cached, picklable file loaders shared by the readers.

Readers bind these module-level functions with :func:`functools.partial` (not lambdas), so sample refs can be sent to
DataLoader worker processes. Images come back as fresh copies; label arrays come straight from the cache and must
not be modified (every ``gt_*`` function returns a new array).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from finecut.datasets.cache import FileCache
from finecut.datasets.labels import load_mat, read_index_label, read_label
from finecut.io import read_image


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


def image(cache: FileCache, path: Path) -> np.ndarray:
    """RGB uint8 image (a copy the caller owns)."""
    return cache.get(("image", path), lambda: _readonly(read_image(path))).copy()


def image_shape(cache: FileCache, path: Path) -> tuple[int, int]:
    """(H, W) of an image, decoding it into the cache (the sample's own image read is then a hit)."""
    return cache.get(("image", path), lambda: _readonly(read_image(path))).shape[:2]


def label(cache: FileCache, path: Path) -> np.ndarray:
    """Raw label file as stored (see :func:`finecut.datasets.labels.read_label`); read-only."""
    return cache.get(("label", path), lambda: _readonly(read_label(path)))


def index_label(cache: FileCache, path: Path) -> np.ndarray:
    """Integer id map (palette indices); read-only."""
    return cache.get(("index", path), lambda: _readonly(read_index_label(path)))


def mat(cache: FileCache, path: Path) -> dict[str, Any]:
    """Variables of a ``.mat`` file; treat as read-only."""
    return cache.get(("mat", path), lambda: load_mat(path))


def image_loader(cache: FileCache, path: Path):
    """A zero-argument function reading ``path`` through ``cache`` (for :attr:`SampleRef.load_image`)."""
    return partial(image, cache, path)
