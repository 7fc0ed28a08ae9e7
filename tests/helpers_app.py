"""Test-only helpers shared by the app / session / server tests: a tiny deterministic engine and a photo-like image."""

from __future__ import annotations

import threading
import time
from typing import Any

import cv2
import numpy as np

from finecut.engines.base import Engine, EngineOutput
from finecut.prompts import Prompts


class DiskEngine(Engine):
    """Disks of ``radius`` px around positive/tolerant clicks minus disks around negative ones, plus the box's inscribed
    ellipse, positive scribbles (dilated) and the prior mask. Counts ``encode_image`` calls to check feature caching,
    and carries a step counter in its state to check that ``previous`` is fed back."""

    name = "disk"

    def __init__(self, radius: int = 20, delay: float = 0.0) -> None:
        self.radius = radius
        self.delay = delay  # seconds each predict takes (to see a busy state)
        self.encode_calls = 0
        self.predict_calls = 0
        self._lock = threading.Lock()

    def encode_image(self, image: np.ndarray) -> Any:
        with self._lock:
            self.encode_calls += 1
        return {"mean": float(image.mean())}

    def predict(self, image: np.ndarray, features: Any, prompts: Prompts, previous: Any) -> EngineOutput:
        with self._lock:
            self.predict_calls += 1
        if self.delay:
            time.sleep(self.delay)
        assert features is not None and "mean" in features
        h, w = image.shape[:2]
        pos = np.zeros((h, w), np.uint8)
        neg = np.zeros((h, w), np.uint8)
        if prompts.prior_mask is not None:
            pos[prompts.prior_mask] = 1
        if prompts.box is not None:
            b = prompts.box
            center = (int((b.x0 + b.x1) / 2), int((b.y0 + b.y1) / 2))
            axes = (max(1, int((b.x1 - b.x0) / 2)), max(1, int((b.y1 - b.y0) / 2)))
            cv2.ellipse(pos, center, axes, 0, 0, 360, 1, -1)
        for s in prompts.scribbles:
            pts = np.round(np.array(s.points)).astype(np.int32).reshape(-1, 1, 2)
            target = pos if s.positive else neg
            cv2.polylines(target, [pts], False, 1, max(1, int(s.width * 3)))
        for c in prompts.clicks:
            target = neg if c.is_negative else pos
            cv2.circle(target, (int(c.x), int(c.y)), self.radius, 1, -1)
        probs = (pos.astype(bool) & ~neg.astype(bool)).astype(np.float32) * 0.9 + 0.05
        steps = 1 + (int(previous.state.get("steps", 0)) if previous is not None else 0)
        return EngineOutput(probs=probs, state={"steps": steps})


def photo_like(height: int = 240, width: int = 320, seed: int = 0) -> np.ndarray:
    """An RGB uint8 picture with a textured background, a sky gradient and two solid objects."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    img = (np.array([90, 140, 200]) * (1 - y) + np.array([70, 110, 60]) * y) * np.ones((1, width, 1))
    img += rng.normal(0, 8, (height, width, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    cv2.circle(img, (width // 3, height // 2), min(height, width) // 5, (210, 60, 40), -1, cv2.LINE_AA)
    cv2.rectangle(img, (int(width * 0.62), int(height * 0.3)), (int(width * 0.85), int(height * 0.75)),
                  (240, 200, 40), -1)
    return img


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """Run an ASGI app with uvicorn on 127.0.0.1 in a background thread (``with LiveServer(app) as url: ...``)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        import time

        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
