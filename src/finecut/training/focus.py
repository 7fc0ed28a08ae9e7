"""Focus boxes for training the refiner: square windows around boundary or error pixels."""

from __future__ import annotations

import numpy as np
import torch


def sample_focus_boxes(masks: np.ndarray, preds: np.ndarray, rng: np.random.Generator,
                       side_range: tuple[float, float] = (0.2, 0.5), error_probability: float = 0.3) -> torch.Tensor:
    """One box (x0, y0, x1, y1) per sample, in network pixels, centred on a boundary or error pixel."""
    b, h, w = masks.shape
    boxes = np.zeros((b, 4), dtype=np.float32)
    for i in range(b):
        m = masks[i]
        use_error = rng.random() < error_probability
        target = (m != preds[i]) if use_error else _boundary(m)
        ys, xs = np.nonzero(target)
        if len(ys) == 0:
            ys, xs = np.nonzero(_boundary(m)) if m.any() else (np.array([h // 2]), np.array([w // 2]))
            if len(ys) == 0:
                ys, xs = np.array([h // 2]), np.array([w // 2])
        k = rng.integers(len(ys))
        side = rng.uniform(*side_range) * min(h, w)
        cx = float(np.clip(xs[k] + 0.5 + rng.uniform(-0.25, 0.25) * side, side / 2, w - side / 2))
        cy = float(np.clip(ys[k] + 0.5 + rng.uniform(-0.25, 0.25) * side, side / 2, h - side / 2))
        boxes[i] = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    return torch.from_numpy(boxes)


def _boundary(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(bool)
    edge = np.zeros_like(m)
    edge[:-1] |= m[:-1] != m[1:]
    edge[:, :-1] |= m[:, :-1] != m[:, 1:]
    return edge
