"""The pipelines' composable transforms, after RITM's inference transforms (``ZoomIn``, ``AddHorizontalFlip``): each
changes what the network sees and undoes that change on what it returns.

* :class:`ZoomIn` — Target Crop: the box of the previous mask (and the user's box) with the new click, expanded; it
  yields a :class:`Crop`, which cuts the network's view out of the image and pastes the answer back
  (``Crop.paste``), leaving everything outside as it was.
* :class:`FlipTTA` — horizontal-flip test-time augmentation around one network call: the call on the flipped inputs,
  flipped back and averaged with the plain call.
* :class:`ProgressiveMerge` — FocalClick's rule on the result: only the connected change under the new click is kept.

Each is built from the engine's options at every step (``from_options``), so options changed on a live engine apply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from finecut.pipelines.geometry import click_box, component_at, expand_box, integer_box, mask_box, union_box
from finecut.prompts import Click, Prompts

IntBox = tuple[int, int, int, int]  # x0, y0, x1, y1: integer pixel edges, end-exclusive


@dataclass(frozen=True)
class Crop:
    """A box of the original image (``box``: x0, y0, x1, y1) and the size (``size_hw``) the network sees it at;
    ``level``: the :class:`~finecut.pipelines.pyramid.ImagePyramid` level its pixels are read from (0: the image)."""

    box: IntBox
    size_hw: tuple[int, int]
    level: int = 0

    @property
    def scale(self) -> float:
        """Original pixels per network pixel (the smaller of the two sides' ratios)."""
        h, w = self.shape
        return min(h / self.size_hw[0], w / self.size_hw[1])

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the box in original pixels."""
        x0, y0, x1, y1 = self.box
        return y1 - y0, x1 - x0

    @property
    def slices(self) -> tuple[slice, slice]:
        x0, y0, x1, y1 = self.box
        return slice(y0, y1), slice(x0, x1)

    def covers(self, height: int, width: int) -> bool:
        """Whether the box is the whole (height, width) image."""
        return self.box == (0, 0, width, height)

    def cut(self, array: np.ndarray) -> np.ndarray:
        """The box's part of a full-size (H, W, ...) array (a view)."""
        return array[self.slices]

    def paste(self, canvas: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Write ``values`` (the box's shape) into ``canvas`` (full size) in place; returns ``canvas``."""
        canvas[self.slices] = values
        return canvas

    def frame(self, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A new full-size array holding ``background`` outside the box (``background`` is not modified), and the
        view of its box, left for the caller to fill (each pixel of the result is written once)."""
        out = np.empty_like(background)
        x0, y0, x1, y1 = self.box
        out[:y0] = background[:y0]
        out[y1:] = background[y1:]
        out[y0:y1, :x0] = background[y0:y1, :x0]
        out[y0:y1, x1:] = background[y0:y1, x1:]
        return out, out[y0:y1, x0:x1]

    def compose(self, background: np.ndarray, values: np.ndarray) -> np.ndarray:
        """A new full-size array: ``values`` (the box's shape) inside the box, ``background`` outside (neither is
        modified; each pixel is written once, which on a large photo halves the work of copy-then-paste)."""
        out, inside = self.frame(background)
        inside[...] = values
        return out


@dataclass(frozen=True)
class ZoomIn:
    """Target Crop / zoom-in (RITM's ``ZoomIn``, FocalClick's Target Crop): the network sees the box of the previous
    mask (and of the user's box) with the new click, expanded by ``expand`` (sides at least ``min_crop``); the whole
    image when ``enabled`` is off or nothing is segmented yet."""

    enabled: bool = True
    expand: float = 1.4
    min_crop: float = 48

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ZoomIn:
        return cls(options["zoom_in"], options["expand"], options["min_crop"])

    def box(self, prev_mask: np.ndarray, prompts: Prompts, click: Click | None) -> IntBox:
        h, w = prev_mask.shape
        if not self.enabled:
            return 0, 0, w, h
        box = mask_box(prev_mask)
        if prompts.box is not None:
            box = union_box(box, prompts.box.as_tuple())
        if box is None:
            return 0, 0, w, h
        if click is not None:
            box = union_box(box, click_box(click))
        return integer_box(expand_box(box, self.expand, self.min_crop, h, w), h, w)

    def crop(self, prev_mask: np.ndarray, prompts: Prompts, click: Click | None,
             input_size: Callable[[int, int], tuple[int, int]]) -> Crop:
        """The :class:`Crop` of :meth:`box`, seen at ``input_size(box_width, box_height)``."""
        x0, y0, x1, y1 = box = self.box(prev_mask, prompts, click)
        return Crop(box, input_size(x1 - x0, y1 - y0))


#: A network's forward call on (image, prompt maps, ...) tensors, returning named (N, C, h, w) outputs.
Forward = Callable[..., dict[str, torch.Tensor]]


@dataclass(frozen=True)
class FlipTTA:
    """Horizontal-flip test-time augmentation (RITM's ``AddHorizontalFlip``): every output of ``forward`` is the mean
    of the plain call and the call on horizontally flipped inputs, flipped back. Off: the plain call."""

    enabled: bool = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> FlipTTA:
        return cls(bool(options.get("flip_tta", False)))

    def __call__(self, forward: Forward, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        out = forward(*inputs)
        if not self.enabled:
            return out
        flipped = forward(*(x.flip(-1) for x in inputs))
        return {k: (v + flipped[k].flip(-1)) / 2 for k, v in out.items()}


@dataclass(frozen=True)
class ProgressiveMerge:
    """FocalClick's Progressive Merge: with a prior mask, or after ``after`` clicks from scratch, only the connected
    component of (new mask XOR previous mask) under the new click changes the result."""

    enabled: bool = True
    after: int = 10

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ProgressiveMerge:
        return cls(options["progressive_merge"], options["merge_after"])

    def applies(self, prompts: Prompts, click: Click | None) -> bool:
        return bool(self.enabled and click is not None
                    and (prompts.prior_mask is not None or len(prompts.clicks) > self.after))

    def __call__(self, probs: np.ndarray, prev: np.ndarray, prev_mask: np.ndarray, click: Click,
                 threshold: float = 0.5) -> np.ndarray:
        """In place: ``probs`` takes ``prev`` back everywhere but the changed component (``probs > threshold``
        against ``prev_mask``) under ``click``. Returns the kept pixels."""
        diff = (probs > threshold) != prev_mask
        comp = component_at(diff, *click.pixel)
        keep = np.ones(probs.shape, bool) if comp is None else ~comp
        probs[keep] = prev[keep]
        return keep


__all__ = ["Crop", "FlipTTA", "Forward", "IntBox", "ProgressiveMerge", "ZoomIn"]
