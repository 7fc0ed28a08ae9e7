"""Every click honoured: a positive click's pixel ends inside the mask, a negative click's pixel outside it.

Networks treat clicks as soft hints, so a returned mask can leave out the very pixel a person clicked as "object"
(or keep a pixel clicked as "background"). :func:`honour_clicks` is a post-processing rule on the final mask,
applied by the :class:`~finecut.predictor.Predictor` to every engine:

1. components of the mask that contain a negative click and no positive click are removed (a false-positive blob
   the person rejected; the component rule of FocalClick's Progressive Merge, applied to negative clicks) — unless
   the component comes within :data:`TOLERANT_REACH` pixels of a tolerant click, which says "the structure near here
   is object" as a positive click does: on a vessel tree or a crack network, where everything is one component, a
   negative click on a false branch must not erase the structure the tolerant clicks selected (the disk of step 2
   still honours it);
2. then, click by click in order (a later click wins over an earlier one where their disks overlap), a disk of
   ``radius`` pixels around each positive click is set to object and around each negative click to background;
3. last, each click's own pixel is set to its label again, in order, so a later disk never takes an earlier click's
   pixel (only two clicks of different kinds on the very same pixel leave one of them unhonoured: the later wins).

Probabilities follow the mask (1 inside forced-object pixels, 0 inside forced-background pixels), so ``probs >
threshold`` still equals the mask and the next step's previous mask agrees with what the person saw. Tolerant clicks
(NTClick) mark a structure *near* the click, not under it, and are left alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from finecut.engines.seeds import click_pixel, click_window
from finecut.prompts import Click, ClickKind, CropTransform, disks_of_kind

#: Disk radius (original-image pixels) forced to each click's label.
DEFAULT_RADIUS = 3
#: A mask component within this many pixels of a tolerant click is kept by the negative-click component rule: the
#: NTClick protocol's simulated user places a tolerant click up to 10 px from the structure it means.
TOLERANT_REACH = 10


def _pixel(click: Click, shape: tuple[int, ...]) -> tuple[int, int]:
    return click_pixel(click, CropTransform.identity(shape[0], shape[1]))


def click_violations(mask: np.ndarray, clicks: Sequence[Click]) -> int:
    """How many positive clicks lie outside ``mask`` plus negative clicks inside it (tolerant clicks not counted)."""
    count = 0
    for click in clicks:
        if click.kind is ClickKind.TOLERANT:
            continue
        inside = bool(mask[_pixel(click, mask.shape)])
        count += int(inside != (click.kind is ClickKind.POSITIVE))
    return count


def rejected_components(mask: np.ndarray, clicks: Sequence[Click], reach: int = TOLERANT_REACH) -> np.ndarray:
    """Bool mask of the 8-connected components of ``mask`` holding a negative click and no positive click, and not
    within ``reach`` pixels of a tolerant click."""
    negatives = [_pixel(c, mask.shape) for c in clicks if c.kind is ClickKind.NEGATIVE]
    if not negatives or not any(mask[p] for p in negatives):
        return np.zeros(mask.shape, dtype=bool)
    _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    rejected = {int(labels[p]) for p in negatives if labels[p]}
    rejected -= {int(labels[_pixel(c, mask.shape)]) for c in clicks if c.kind is ClickKind.POSITIVE}
    if rejected and any(c.kind is ClickKind.TOLERANT for c in clicks):
        near = disks_of_kind(clicks, ClickKind.TOLERANT, mask.shape[:2], reach)
        rejected -= {int(v) for v in np.unique(labels[near])}
    if not rejected:
        return np.zeros(mask.shape, dtype=bool)
    return np.isin(labels, sorted(rejected))


def honour_clicks(mask: np.ndarray, probs: np.ndarray, clicks: Sequence[Click],
                  radius: int = DEFAULT_RADIUS) -> tuple[np.ndarray, np.ndarray, int]:
    """Apply the rule; returns (mask, probs, number of pixels changed). Inputs are not modified."""
    if not any(c.kind is not ClickKind.TOLERANT for c in clicks) or click_violations(mask, clicks) == 0:
        return mask, probs, 0
    out_mask = mask.copy()
    out_probs = probs.copy()
    drop = rejected_components(out_mask, clicks)
    out_mask[drop] = False
    out_probs[drop] = 0.0
    precise = [c for c in clicks if c.kind is not ClickKind.TOLERANT]
    identity = CropTransform.identity(out_mask.shape[0], out_mask.shape[1])
    for click in precise:
        rows, cols, disk = click_window(click, identity, radius)
        if disk is None:  # outside the image (the Predictor refuses such clicks before)
            continue
        positive = click.kind is ClickKind.POSITIVE
        out_mask[rows, cols][disk] = positive
        out_probs[rows, cols][disk] = 1.0 if positive else 0.0
    for click in precise:  # a later disk must not take an earlier click's own pixel (clicks a few pixels apart)
        pixel = _pixel(click, out_mask.shape)
        positive = click.kind is ClickKind.POSITIVE
        out_mask[pixel] = positive
        out_probs[pixel] = 1.0 if positive else 0.0
    return out_mask, out_probs, int(np.count_nonzero(out_mask != mask))
