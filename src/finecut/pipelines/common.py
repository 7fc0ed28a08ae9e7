"""Pieces shared by the learned-model pipelines: image normalization, crops, prompt maps at network resolution."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch

from finecut.pipelines.geometry import click_box, expand_box, integer_box, mask_box, union_box
from finecut.prompts import Click, ClickKind, CropTransform, Prompts, click_disks, scribble_maps
from finecut.threads import inference_threads

if TYPE_CHECKING:
    from finecut.predictor import Prediction

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255


def check_options(options: dict[str, Any], defaults: dict[str, Any], method: str) -> None:
    """Raise ``TypeError`` naming every key of ``options`` that ``defaults`` does not know."""
    unknown = set(options) - set(defaults)
    if unknown:
        raise TypeError(f"unknown {method} option(s): {', '.join(sorted(unknown))}")


def configure_torch(threads: int | None) -> None:
    """Set torch's CPU thread count (``threads``, else :func:`finecut.threads.inference_threads`: one by default) and
    flush denormals, which slow CPU convolutions several times."""
    torch.set_num_threads(inference_threads(threads))
    torch.set_flush_denormal(True)


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


def previous_probs(prompts: Prompts, previous: "Prediction | None", shape: tuple[int, int]) -> np.ndarray:
    """The probabilities the step starts from: the previous prediction's, else the prior mask, else zeros."""
    if previous is not None:
        return previous.probs.astype(np.float32, copy=False)
    if prompts.prior_mask is not None:
        return prompts.prior_mask.astype(np.float32)
    return np.zeros(shape, np.float32)


def network_clicks(prompts: Prompts, shape: tuple[int, int]) -> tuple[Click, ...]:
    """The clicks a click-trained network sees: a box without any positive click adds one at the box's centre."""
    h, w = shape
    clicks = prompts.clicks
    if prompts.box is not None and not any(c.is_positive for c in clicks):
        b = prompts.box
        center = Click(min(w - 1, (b.x0 + b.x1) / 2), min(h - 1, (b.y0 + b.y1) / 2), ClickKind.POSITIVE)
        clicks = (center, *clicks)
    return clicks


def target_box(prev_mask: np.ndarray, prompts: Prompts, click: Click | None, zoom_in: bool, expand: float,
               min_crop: float) -> tuple[int, int, int, int]:
    """Zoom-in / Target Crop: the box of the previous mask (and the user's box) with the new click, expanded by
    ``expand``; the whole image when zoom-in is off or nothing is segmented yet."""
    h, w = prev_mask.shape
    if not zoom_in:
        return 0, 0, w, h
    box = mask_box(prev_mask)
    if prompts.box is not None:
        box = union_box(box, prompts.box.as_tuple())
    if box is None:
        return 0, 0, w, h
    if click is not None:
        box = union_box(box, click_box(click))
    return integer_box(expand_box(box, expand, min_crop, h, w), h, w)
