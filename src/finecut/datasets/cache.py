"""A small thread-safe LRU of decoded files (images, label maps, ``.mat`` contents), bounded in bytes.

Readers share one cache between all samples of a dataset, so the many objects of one image decode the image and its
label file once. Cached values are never handed out for modification: readers copy images and derive new ground-truth
arrays from cached label maps.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

#: Default budget: enough to keep the current image and label file while iterating over its objects.
DEFAULT_MAX_BYTES = 64 << 20


def nbytes(value: Any) -> int:
    """Approximate memory held by ``value`` (arrays, and containers of arrays)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values()) + 64
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value) + 64
    return 64


class FileCache:
    """Least-recently-used cache of decoded values keyed by e.g. ``("image", path)``, bounded by ``max_bytes``."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        """The cached value for ``key``, computing it with ``load()`` on a miss."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[0]
        value = load()  # outside the lock: decoding may take a while; a duplicate decode is harmless
        size = nbytes(value)
        with self._lock:
            self.misses += 1
            if key not in self._entries and size <= self.max_bytes:
                self._entries[key] = (value, size)
                self._bytes += size
                while self._bytes > self.max_bytes and self._entries:
                    _, (_, old) = self._entries.popitem(last=False)
                    self._bytes -= old
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    # A cache travels to DataLoader worker processes empty (locks cannot be pickled, and copying the data is waste).
    def __getstate__(self) -> dict:
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_bytes"])
