"""Test-only helpers shared by the app / session / server tests: a photo-like image and a live uvicorn server (the
test engines are in ``doubles``)."""

from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np


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
