"""The test doubles every test shares: a tiny deterministic engine (``DiskEngine``) and a constant one.

``DiskEngine`` draws disks around clicks, so tests can predict its masks exactly. Two drawing rules cover what the
tests need:

* ``rule="union"`` (the default; app, session and server tests): positive / tolerant clicks, positive scribbles, the
  box's inscribed ellipse and the prior mask are foreground, minus negative clicks and scribbles; probabilities are
  0.95 / 0.05, so the threshold slider has something to move.
* ``rule="paint"`` (evaluator and CLI tests): an empty map, then the prior mask, the box rectangle and each click in
  order painting 1 (positive) or 0 (any other kind) — a later click overrides an earlier one; probabilities are 0 / 1.

It counts ``encode_image`` and ``predict`` calls (feature caching and replay checks), records each call's click count,
prior mask and previous click count, carries a step counter in its state (to check that ``previous`` is fed back), and
can be told to refuse one image (``fail_on``: the value of its top-left red pixel) or to take ``delay`` seconds.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

import cv2
import numpy as np

from finecut.engines.base import Engine, EngineOutput
from finecut.errors import FinecutError
from finecut.prompts import ClickKind, Prompts


class DiskEngine(Engine):
    """Disks of ``radius`` px around clicks (squares with ``square=True``); see the module docstring for the rules."""

    name = "disk"

    def __init__(self, radius: int = 20, rule: Literal["union", "paint"] = "union", square: bool = False,
                 fail_on: str | int | None = None, delay: float = 0.0) -> None:
        self.radius = radius
        self.rule = rule
        self.square = square
        self.fail_on = fail_on
        self.delay = delay  # seconds each predict takes (to see a busy state)
        self.encode_calls = 0
        self.predict_calls = 0
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "radius": self.radius, "rule": self.rule}

    def encode_image(self, image: np.ndarray) -> Any:
        with self._lock:
            self.encode_calls += 1
        if self.fail_on is not None and int(image[0, 0, 0]) == int(self.fail_on):
            raise FinecutError(f"test engine refuses image {self.fail_on}")
        return {"mean": float(image.mean()), "shape": image.shape[:2]}

    def predict(self, image: np.ndarray, features: Any, prompts: Prompts, previous: Any) -> EngineOutput:
        with self._lock:
            self.predict_calls += 1
            self.calls.append({
                "clicks": len(prompts.clicks),
                "prior": None if prompts.prior_mask is None else prompts.prior_mask.copy(),
                "previous_clicks": None if previous is None else len(previous.clicks),
            })
        if self.delay:
            time.sleep(self.delay)
        assert features is not None and features["shape"] == image.shape[:2], "features not from encode_image"
        probs = self._paint(image.shape[:2], prompts) if self.rule == "paint" else self._union(image.shape[:2], prompts)
        steps = 1 + (int(previous.state.get("steps", 0)) if previous is not None else 0)
        return EngineOutput(probs=probs, state={"steps": steps})

    def _disk(self, shape: tuple[int, int], x: float, y: float) -> np.ndarray:
        ys, xs = np.mgrid[:shape[0], :shape[1]]
        if self.square:
            return (np.abs(xs - x) <= self.radius) & (np.abs(ys - y) <= self.radius)
        return (xs - x) ** 2 + (ys - y) ** 2 <= self.radius**2

    def _paint(self, shape: tuple[int, int], prompts: Prompts) -> np.ndarray:
        probs = np.zeros(shape, dtype=np.float32)
        if prompts.prior_mask is not None:
            probs[prompts.prior_mask] = 1.0
        if prompts.box is not None:
            b = prompts.box
            probs[int(b.y0):int(b.y1), int(b.x0):int(b.x1)] = 1.0
        for click in prompts.clicks:
            probs[self._disk(shape, click.x, click.y)] = 1.0 if click.kind is ClickKind.POSITIVE else 0.0
        return probs

    def _union(self, shape: tuple[int, int], prompts: Prompts) -> np.ndarray:
        pos = np.zeros(shape, np.uint8)
        neg = np.zeros(shape, np.uint8)
        if prompts.prior_mask is not None:
            pos[prompts.prior_mask] = 1
        if prompts.box is not None:
            b = prompts.box
            center = (int((b.x0 + b.x1) / 2), int((b.y0 + b.y1) / 2))
            axes = (max(1, int((b.x1 - b.x0) / 2)), max(1, int((b.y1 - b.y0) / 2)))
            cv2.ellipse(pos, center, axes, 0, 0, 360, 1, -1)
        for s in prompts.scribbles:
            pts = np.round(np.array(s.points)).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(pos if s.positive else neg, [pts], False, 1, max(1, int(s.width * 3)))
        for c in prompts.clicks:
            target = neg if c.is_negative else pos
            if self.square:
                target[self._disk(shape, c.x, c.y)] = 1
            else:
                cv2.circle(target, (int(c.x), int(c.y)), self.radius, 1, -1)
        return (pos.astype(bool) & ~neg.astype(bool)).astype(np.float32) * 0.9 + 0.05


class ConstantEngine(Engine):
    """The same probability everywhere (to test the prediction threshold)."""

    name = "constant"

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, image: np.ndarray, features: Any, prompts: Prompts, previous: Any) -> EngineOutput:
        return EngineOutput(probs=np.full(image.shape[:2], self.value, dtype=np.float32))
