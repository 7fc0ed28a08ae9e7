"""An area-averaged image pyramid, built once per image, so that the network view of a crop of a large photo is
resized from a smaller copy instead of from every original pixel at each click.

On a 4000x3000 photo the first click's Target Crop is the whole image: shrinking 12 megapixels to the network's
256 px with OpenCV's area interpolation costs 20-35 ms on this project's CPU, every click. The pyramid pays that once
(at ``set_image``) and a crop then costs a few ms.

Level ``L`` (1, 2, ...) is the image area-averaged over 2^L x 2^L blocks (each level halves the one before with
OpenCV's exact integer-factor area path, after repeating the last row / column when a side is odd). A crop whose box
is a multiple of 2^L in the original image is *exactly* the same pixels averaged at level L; :meth:`ImagePyramid.snap`
moves a box outward onto that grid (by fewer than 2^L pixels per side, clipped to the image) so the crop the network
sees and the crop the answer is pasted into stay the same box. A level is used only while the crop it gives is still
at least twice the network input on both sides (:meth:`ImagePyramid.level_for`), so the final resize still averages
(area interpolation) and never interpolates up.

Images whose long side is under four times the network input get no levels at all, so every benchmark image
(at most 854 px wide for a 256 px input) is cropped from the original pixels exactly as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

IntBox = tuple[int, int, int, int]  # x0, y0, x1, y1: integer pixel edges, end-exclusive

#: A level is used only when the crop at that level is at least this many times the network input on both sides.
MIN_OVERSAMPLING = 2


def _halve(image: np.ndarray) -> np.ndarray:
    """``image`` area-averaged over 2x2 blocks (an odd last row / column repeated first)."""
    h, w = image.shape[:2]
    if h % 2 or w % 2:
        image = cv2.copyMakeBorder(image, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
        h, w = image.shape[:2]
    return cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class ImagePyramid:
    """The levels of an image (``levels[L - 1]`` is level L) and the original (height, width)."""

    shape: tuple[int, int]
    levels: tuple[np.ndarray, ...] = ()

    @classmethod
    def build(cls, image: np.ndarray, network_side: int) -> ImagePyramid:
        """Levels while the whole image at that level is still ``MIN_OVERSAMPLING`` x ``network_side`` on its long
        side (a smaller level could serve no crop); none for an image under ``2 * MIN_OVERSAMPLING * network_side``."""
        h, w = image.shape[:2]
        levels: list[np.ndarray] = []
        current = image
        while max(h, w) / 2 ** (len(levels) + 1) >= MIN_OVERSAMPLING * network_side:
            current = _halve(current)
            levels.append(current)
        return cls((h, w), tuple(levels))

    def level_for(self, box: IntBox, size_hw: tuple[int, int]) -> int:
        """The coarsest level at which ``box`` is still ``MIN_OVERSAMPLING`` x ``size_hw`` (0: the original)."""
        x0, y0, x1, y1 = box
        level = 0
        while level < len(self.levels):
            g = 2 ** (level + 1)
            if (x1 - x0) / g < MIN_OVERSAMPLING * size_hw[1] or (y1 - y0) / g < MIN_OVERSAMPLING * size_hw[0]:
                break
            level += 1
        return level

    def snap(self, box: IntBox, level: int) -> IntBox:
        """``box`` moved outward onto the 2^level grid, clipped to the image."""
        if level == 0:
            return box
        g = 2 ** level
        h, w = self.shape
        x0, y0, x1, y1 = box
        return (x0 // g * g, y0 // g * g, min(w, -(-x1 // g) * g), min(h, -(-y1 // g) * g))

    def source(self, box: IntBox, level: int, image: np.ndarray) -> tuple[np.ndarray, IntBox]:
        """Where ``box`` (on the level's grid, :meth:`snap`) is read at ``level``: the array (``image`` itself at
        level 0) and the box in its pixels."""
        if level == 0:
            return image, box
        g = 2 ** level
        x0, y0, x1, y1 = box
        return self.levels[level - 1], (x0 // g, y0 // g, math.ceil(x1 / g), math.ceil(y1 / g))


__all__ = ["MIN_OVERSAMPLING", "ImagePyramid"]
