"""Thread-safe caches shared by the web app and the integration server.

:class:`ModelPool` builds each engine once by name; :class:`PredictorCache` keeps a few :class:`Predictor` objects
(one per (model, image) pair, least recently used evicted) so that an image is encoded once and re-used per click.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from finecut.engines.base import Engine
from finecut.errors import FinecutError
from finecut.predictor import Predictor
from finecut.registry import available_models, load_model

EngineFactory = Callable[[str], Engine]


class ModelPool:
    """Engines by name, each built once on first use (thread-safe). ``factory`` defaults to :func:`finecut.load_model`.

    ``names`` restricts (and orders) the choices offered; by default every name of :func:`available_models`.
    """

    def __init__(self, factory: EngineFactory | None = None, names: Sequence[str] | None = None,
                 default: str = "default") -> None:
        self._factory = factory or load_model
        self._names = list(names) if names is not None else list(available_models())
        if default not in self._names:
            self._names.insert(0, default)
        self.default = default
        self._engines: dict[str, Engine] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def describe(self) -> list[dict[str, object]]:
        descriptions = available_models() if self._factory is load_model else {}
        return [
            {"name": n, "description": descriptions.get(n, ""), "loaded": n in self._engines,
             "error": self._errors.get(n)}
            for n in self._names
        ]

    def get(self, name: str | None) -> Engine:
        key = name or self.default
        if key not in self._names:
            raise FinecutError(f"unknown model {key!r}; available: {', '.join(self._names)}")
        with self._lock:
            if key in self._engines:
                return self._engines[key]
            build_lock = self._building.setdefault(key, threading.Lock())
        with build_lock:
            with self._lock:
                if key in self._engines:
                    return self._engines[key]
            try:
                engine = self._factory(key)
            except FinecutError as exc:
                self._errors[key] = str(exc)
                raise
            except Exception as exc:  # an engine that fails to build must not take the server down
                self._errors[key] = f"{type(exc).__name__}: {exc}"
                raise FinecutError(f"model {key!r} could not be loaded: {type(exc).__name__}: {exc}") from exc
            with self._lock:
                self._engines[key] = engine
                self._errors.pop(key, None)
            return engine


@dataclass
class CachedPredictor:
    predictor: Predictor
    encode_seconds: float
    lock: threading.Lock


class PredictorCache:
    """LRU of Predictors keyed by (model name, image key); ``get`` encodes the image only on a miss."""

    def __init__(self, pool: ModelPool, size: int = 4) -> None:
        if size < 1:
            raise FinecutError(f"predictor cache size must be >= 1, got {size}")
        self.pool = pool
        self.size = size
        self._items: OrderedDict[tuple[str, Hashable], CachedPredictor] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, Hashable], threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def get(self, model: str | None, key: Hashable, load_image: Callable[[], np.ndarray]) -> tuple[CachedPredictor, bool]:
        """The predictor for ``(model, key)``; ``load_image`` is called only on a miss. Returns (entry, was_hit)."""
        name = model or self.pool.default
        ck = (name, key)
        with self._lock:
            entry = self._items.get(ck)
            if entry is not None:
                self._items.move_to_end(ck)
                self.hits += 1
                return entry, True
            key_lock = self._key_locks.setdefault(ck, threading.Lock())
        with key_lock:  # two requests for the same new image encode it once
            with self._lock:
                entry = self._items.get(ck)
                if entry is not None:
                    self._items.move_to_end(ck)
                    self.hits += 1
                    return entry, True
            engine = self.pool.get(name)
            image = load_image()
            predictor = Predictor(engine)
            start = time.perf_counter()
            predictor.set_image(image)
            entry = CachedPredictor(predictor, time.perf_counter() - start, threading.Lock())
            with self._lock:
                self._items[ck] = entry
                self._items.move_to_end(ck)
                self.misses += 1
                while len(self._items) > self.size:
                    old, _ = self._items.popitem(last=False)
                    self._key_locks.pop(old, None)
            return entry, False

    def drop(self, key: Hashable) -> None:
        """Forget every predictor of image ``key`` (e.g. the file changed)."""
        with self._lock:
            for ck in [k for k in self._items if k[1] == key]:
                del self._items[ck]

    def __len__(self) -> int:
        return len(self._items)
