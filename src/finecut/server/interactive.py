"""Stateless click requests (CVAT, Label Studio) on top of stateful Predictors.

Annotation tools send the whole prompt set of an object with every request. The image is encoded once (the
:class:`~finecut.server.cache.PredictorCache` is keyed by the image bytes' digest), and when a request adds exactly one
click to the previous request on the same image, the previous prediction is passed as ``previous`` — so learned
models refine click by click as they do in the app, and the user's click order is kept even when a tool sends
positive and negative points as two separate lists.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from finecut.errors import FinecutError
from finecut.predictor import Prediction
from finecut.prompts import Box, Click

from finecut.server.cache import PredictorCache
from finecut.server.images import DecodedImage


@dataclass(frozen=True)
class Result:
    prediction: Prediction
    clicks: tuple[Click, ...]
    reused_previous: bool
    encode_seconds: float | None
    total_seconds: float


def _key(c: Click) -> tuple[float, float, str]:
    return (float(c.x), float(c.y), c.kind.value)


def extend_order(old: Sequence[Click], new: Sequence[Click]) -> tuple[Click, ...] | None:
    """``old`` plus the one click of ``new`` that is not in it, if ``new`` is exactly that; else None."""
    if len(new) != len(old) + 1:
        return None
    remaining = Counter(_key(c) for c in new)
    remaining.subtract(_key(c) for c in old)
    if any(v < 0 for v in remaining.values()):
        return None
    extra = [k for k, v in remaining.items() if v > 0]
    if len(extra) != 1:
        return None
    added = next(c for c in new if _key(c) == extra[0])
    return tuple(old) + (added,)


class InteractiveSegmenter:
    """Segments from a full prompt set, re-using cached image features and the previous prediction when it can."""

    def __init__(self, cache: PredictorCache, threshold: float = 0.5, memo_size: int = 64) -> None:
        self.cache = cache
        self.threshold = threshold
        self._memo: OrderedDict[tuple[str, str], tuple[tuple[Click, ...], Box | None, Prediction]] = OrderedDict()
        self._memo_size = memo_size
        self._lock = threading.Lock()

    def segment(
        self,
        model: str | None,
        image: DecodedImage,
        clicks: Sequence[Click],
        box: Box | None = None,
        threshold: float | None = None,
    ) -> Result:
        start = time.perf_counter()
        if not clicks and box is None:
            raise FinecutError("give at least one point or a box")
        t = self.threshold if threshold is None else float(threshold)
        if not 0.0 <= t <= 1.0:
            raise FinecutError(f"threshold must be in [0, 1], got {threshold}")
        name = model or self.cache.pool.default
        entry, hit = self.cache.get(name, image.digest, lambda: image.rgb)
        memo_key = (name, image.digest)
        with entry.lock:
            with self._lock:
                memo = self._memo.get(memo_key)
            ordered: tuple[Click, ...] | None = None
            previous = None
            if memo is not None and memo[1] == box:
                ordered = extend_order(memo[0], clicks)
                if ordered is not None:
                    previous = memo[2]
            if ordered is None:
                ordered = tuple(clicks)
            prediction = entry.predictor.predict(clicks=ordered, box=box, previous=previous, threshold=t)
            with self._lock:
                self._memo[memo_key] = (ordered, box, prediction)
                self._memo.move_to_end(memo_key)
                while len(self._memo) > self._memo_size:
                    self._memo.popitem(last=False)
        return Result(prediction, ordered, previous is not None, None if hit else entry.encode_seconds,
                      time.perf_counter() - start)
