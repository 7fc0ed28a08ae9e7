"""Pieces shared by the learned-model pipelines: image normalization, crops, prompt maps at network resolution."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from finecut.prompts import Click, CropTransform, Prompts, click_disks, scribble_maps

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255


def normalize(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> (1, 3, H, W) float32 ImageNet-normalized."""
    x = (image.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(x).permute(2, 0, 1)[None].contiguous()


def resize(array: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize an image or float map to (height, width): area for shrinking, bilinear for growing."""
    h, w = array.shape[:2]
    th, tw = size_hw
    if (h, w) == (th, tw):
        return array
    interp = cv2.INTER_AREA if th < h and tw < w else cv2.INTER_LINEAR
    return cv2.resize(array, (tw, th), interpolation=interp)


def crop_prompt_maps(prompts: Prompts, clicks: tuple[Click, ...], previous: np.ndarray,
                     box: tuple[int, int, int, int], size_hw: tuple[int, int], radius: float,
                     channels: int) -> torch.Tensor:
    """(1, channels, h, w) maps [previous, positive, negative, tolerant] for the crop ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    transform = CropTransform(float(x0), float(y0), float(x1 - x0), float(y1 - y0), size_hw)
    disks = click_disks(clicks, transform, radius)
    if prompts.scribbles:
        strokes = scribble_maps(prompts.scribbles, transform)
        disks[0] = np.maximum(disks[0], strokes[0])
        disks[1] = np.maximum(disks[1], strokes[1])
    prev = resize(np.ascontiguousarray(previous[y0:y1, x0:x1], dtype=np.float32), size_hw)
    maps = np.concatenate([prev[None], disks], axis=0)[:channels]
    return torch.from_numpy(np.ascontiguousarray(maps))[None]
