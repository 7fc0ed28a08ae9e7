"""Test-only helpers shared by the training and NTClick tests: tiny NTClick configs and a folder of objects."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

TINY_HRR = {"embed_dim": 32, "depth": 2, "num_heads": 2, "kernel_size": 5, "low_channels": [4, 4, 8, 8],
            "fuse_channels": [16, 8, 8, 4]}
TINY_ECP = {"img_size": 64, "embed_dim": 32, "depth": 2, "num_heads": 2, "pyramid_channels": [8, 8, 16, 16],
            "head_channels": 16}


def make_object_folder(root: Path, count: int = 6, size: int = 96, min_axes: tuple[int, int] = (12, 10),
                       thin_line: bool = False) -> Path:
    """``images/`` + ``masks/``: a red ellipse (minor/major semi-axes from ``min_axes`` up to (25, 20)) on a noisy blue
    ``size × (size + 16)`` background, optionally with a 1 px line from its centre to the corner (a thin structure)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        img = np.zeros((size, size + 16, 3), np.uint8)
        img[:] = (40, 60, 200)  # blue background (RGB)
        img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
        mask = np.zeros(img.shape[:2], np.uint8)
        center = (int(rng.integers(30, size - 14)), int(rng.integers(30, size - 30)))
        axes = (int(rng.integers(min_axes[0], 25)), int(rng.integers(min_axes[1], 20)))
        cv2.ellipse(mask, center, axes, 30, 0, 360, 255, -1)
        if thin_line:
            cv2.line(mask, center, (2, 2), 255, 1)
        img[mask > 0] = (220, 40, 30)  # red object
        cv2.imwrite(str(root / "images" / f"im{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "masks" / f"im{i}.png"), mask)
    return root
