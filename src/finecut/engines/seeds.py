"""Shared helpers of the classical engines: a working resolution, and prompts rasterised there as seeds.

Classical engines (GrabCut, random walker, geodesic) work on a downscaled copy of the image (long side at most
``max_side``) and upsample their probabilities back to the original size. :func:`build_seeds` turns every prompt kind
into maps at that working resolution:

* positive / negative clicks -> hard foreground / background disks of ``click_radius`` working pixels, optionally
  limited to pixels coloured like the clicked one; where disks of opposite kinds overlap, each pixel goes to the
  nearer click centre (ties to the later click), so every click keeps its own pixel;
* tolerant clicks -> a *soft* foreground area (a disk of ``tolerant_radius``): probably object, never a constraint;
* scribbles -> hard seeds along the stroke (pixels marked by both a positive and a negative stroke stay unlabelled);
  clicks take precedence over scribbles;
* a box -> everything outside it is hard background (clicks and scribbles outside it still win);
* a prior mask -> a soft estimate (probable foreground / background), never a constraint.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from finecut.engines.base import Engine, EngineOutput, Prediction
from finecut.errors import FinecutError
# click_window / click_pixel are the shared disk geometry of finecut.prompts (also importable from here)
from finecut.prompts import (
    Click, CropTransform, Prompts, box_map, click_disks, click_pixel, click_window, scribble_maps,
)

#: Index of the tolerant channel in :func:`finecut.prompts.click_disks` output.
_TOL = 2


def check_seed_options(
    engine: str, max_side: int, click_radius: float, tolerant_radius: float, colour_gate: float | None
) -> None:
    """Validate the options every classical engine shares; raise :class:`FinecutError` naming the engine."""
    if max_side < 8:
        raise FinecutError(f"{engine}: max_side must be >= 8, got {max_side}")
    if click_radius < 0.5 or tolerant_radius < 0.5:
        raise FinecutError(
            f"{engine}: click_radius and tolerant_radius must be >= 0.5 working pixels, got {click_radius}, "
            f"{tolerant_radius}"
        )
    if colour_gate is not None and colour_gate <= 0:
        raise FinecutError(f"{engine}: colour_gate must be > 0 (Lab units) or None, got {colour_gate}")


def working_transform(height: int, width: int, max_side: int) -> CropTransform:
    """The resize that brings an image's long side down to ``max_side`` (never up), keeping its aspect ratio."""
    if height < 1 or width < 1:
        raise FinecutError(f"image is empty ({width}x{height})")
    scale = min(1.0, max_side / max(height, width))
    out = (max(1, round(height * scale)), max(1, round(width * scale)))
    return CropTransform.resize(height, width, out)


def to_working(image: np.ndarray, transform: CropTransform) -> np.ndarray:
    """Resize an (H, W[, C]) array to the working resolution (area averaging when shrinking)."""
    height, width = transform.out_size
    if image.shape[:2] == (height, width):
        return np.ascontiguousarray(image)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def mask_to_working(mask: np.ndarray, transform: CropTransform) -> np.ndarray:
    """A bool mask (or probabilities, thresholded at 0.5) at the working resolution, by area vote."""
    return to_working(np.asarray(mask, dtype=np.float32), transform) > 0.5


def to_original(probs: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinearly upsample working-resolution probabilities to (height, width); float32 clipped to [0, 1]."""
    probs = np.asarray(probs, dtype=np.float32)
    if probs.shape != (height, width):
        probs = cv2.resize(probs, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(probs, 0.0, 1.0)


@dataclass(frozen=True)
class WorkingImage:
    """The per-image features every classical engine starts from: the image at its working resolution."""

    image: np.ndarray  # RGB uint8 (h, w, 3) at working resolution, read-only
    lab: np.ndarray  # the same in CIE Lab, float32 (L in [0, 100]), read-only
    transform: CropTransform  # original -> working
    original_size: tuple[int, int]  # (H, W)

    @classmethod
    def build(cls, image: np.ndarray, max_side: int) -> "WorkingImage":
        height, width = image.shape[:2]
        transform = working_transform(height, width, max_side)
        work = to_working(image, transform).copy()
        lab = cv2.cvtColor(work.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
        return cls(frozen(work), frozen(lab), transform, (height, width))

    @property
    def shape(self) -> tuple[int, int]:
        return self.transform.out_size


def empty_probs(shape: tuple[int, int]) -> np.ndarray:
    """All-background probabilities (what an engine returns when nothing says where the object is)."""
    return np.zeros(shape, dtype=np.float32)


def frozen(array: np.ndarray) -> np.ndarray:
    """Return ``array`` marked read-only, so cached per-image features cannot be changed by accident."""
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class Seeds:
    """Prompts rasterised at the working resolution (all maps bool, shape ``shape``).

    ``fg`` / ``bg`` are hard labels (disjoint). ``tolerant`` is a soft foreground area (excluding hard seeds) and
    ``prior`` the prior mask (None when not given). ``box`` is the box in working pixels ``(x0, y0, x1, y1)``
    (end-exclusive) and ``outside_box`` the pixels it excludes (part of ``bg`` unless a seed overrides them).
    """

    fg: np.ndarray
    bg: np.ndarray
    tolerant: np.ndarray
    prior: np.ndarray | None
    box: tuple[int, int, int, int] | None
    outside_box: np.ndarray | None

    @property
    def shape(self) -> tuple[int, int]:
        return self.fg.shape  # type: ignore[return-value]

    @property
    def has_positive(self) -> bool:
        """Whether anything says where the object is (without it, engines return an empty mask)."""
        return bool(
            self.fg.any()
            or self.tolerant.any()
            or self.box is not None
            or (self.prior is not None and self.prior.any())
        )

    @property
    def box_interior(self) -> np.ndarray:
        """The inside of the box minus hard seeds (probably object); all False without a box."""
        if self.outside_box is None:
            return np.zeros(self.shape, dtype=bool)
        return ~self.outside_box & ~self.fg & ~self.bg

    def prior_cores(self, band: float) -> tuple[np.ndarray, np.ndarray]:
        """(inside, outside) of the prior mask, each shrunk by ``band`` working px and minus hard seeds.

        The ``band`` on either side of the prior's boundary is left for the engine to decide. Both maps are all
        False without a prior mask.
        """
        if self.prior is None:
            empty = np.zeros(self.shape, dtype=bool)
            return empty, empty
        free = ~self.fg & ~self.bg
        inside = self.prior.astype(np.uint8)
        outside = (~self.prior).astype(np.uint8)
        if band > 0:
            dist_in = cv2.distanceTransform(np.pad(inside, 1, constant_values=1), cv2.DIST_L2, 3)[1:-1, 1:-1]
            dist_out = cv2.distanceTransform(np.pad(outside, 1, constant_values=1), cv2.DIST_L2, 3)[1:-1, 1:-1]
            return (dist_in > band) & free, (dist_out > band) & free
        return inside.astype(bool) & free, outside.astype(bool) & free


def colour_match(
    window: np.ndarray, colours: np.ndarray, click: Click, transform: CropTransform, gate: float
) -> np.ndarray:
    """Bool map over ``window`` (a slice of ``colours``): pixels within ``gate`` of the clicked pixel's colour."""
    row, col = click_pixel(click, transform)
    return np.linalg.norm(window - colours[row, col], axis=-1) <= gate


def hard_click_maps(
    clicks: tuple[Click, ...],
    transform: CropTransform,
    radius: float,
    colours: np.ndarray | None = None,
    gate: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) hard-seed maps of the precise clicks: a disk of ``radius`` working px around each.

    Where disks of opposite kinds overlap, each pixel goes to the nearest click centre (ties to the later click), so
    every click keeps its own pixel. With ``colours`` ((h, w, C) float, e.g. Lab) and ``gate``, a disk keeps only
    pixels whose colour is within ``gate`` of the clicked pixel's, so a click on a thin or small part does not also
    seed the background beside it.
    """
    height, width = transform.out_size
    owner = np.zeros((height, width), dtype=np.int8)  # 0 none, 1 positive, -1 negative
    best = np.full((height, width), np.inf)
    for click in clicks:
        if click.is_tolerant:
            continue
        rows, cols, disk = click_window(click, transform, radius)
        if disk is None:
            continue
        if colours is not None and gate is not None:
            disk &= colour_match(colours[rows, cols], colours, click, transform, gate)
        row, col = click_pixel(click, transform)
        if rows.start <= row < rows.stop and cols.start <= col < cols.stop:
            disk[row - rows.start, col - cols.start] = True  # the clicked pixel itself, always
        cx, cy = transform.apply(np.floor(click.x), np.floor(click.y))
        ys = np.arange(rows.start, rows.stop, dtype=np.float64)[:, None]
        xs = np.arange(cols.start, cols.stop, dtype=np.float64)[None, :]
        dist = (ys - cy) ** 2 + (xs - cx) ** 2
        win_best = best[rows, cols]
        take = disk & (dist <= win_best)
        win_best[take] = dist[take]
        owner[rows, cols][take] = 1 if click.is_positive else -1
    return owner == 1, owner == -1


def build_seeds(
    prompts: Prompts,
    transform: CropTransform,
    click_radius: float,
    tolerant_radius: float,
    colours: np.ndarray | None = None,
    gate: float | None = None,
) -> Seeds:
    """Rasterise validated ``prompts`` at ``transform.out_size`` (see the module docstring for the rules).

    ``colours`` / ``gate`` restrict click disks to pixels coloured like the clicked one (see :func:`hard_click_maps`).
    """
    shape = transform.out_size
    fg = np.zeros(shape, dtype=bool)
    bg = np.zeros(shape, dtype=bool)

    box_rect: tuple[int, int, int, int] | None = None
    outside_box: np.ndarray | None = None
    if prompts.box is not None:
        inside = box_map(prompts.box, transform) > 0
        if not inside.any():  # a box thinner than one working pixel still marks the pixel it lies in
            cx, cy = transform.apply((prompts.box.x0 + prompts.box.x1) / 2, (prompts.box.y0 + prompts.box.y1) / 2)
            inside[min(max(round(cy), 0), shape[0] - 1), min(max(round(cx), 0), shape[1] - 1)] = True
        rows = np.flatnonzero(inside.any(axis=1))
        cols = np.flatnonzero(inside.any(axis=0))
        box_rect = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
        outside_box = ~inside
        bg |= outside_box

    if prompts.scribbles:
        strokes = scribble_maps(prompts.scribbles, transform) > 0
        pos_s, neg_s = strokes[0] & ~strokes[1], strokes[1] & ~strokes[0]
        fg |= pos_s
        bg &= ~pos_s
        bg |= neg_s

    pos, neg = hard_click_maps(prompts.clicks, transform, click_radius, colours, gate)
    if pos.any() or neg.any():
        fg = (fg & ~neg) | pos
        bg = (bg & ~pos) | neg

    tolerant = np.zeros(shape, dtype=bool)
    tolerant_clicks = [c for c in prompts.clicks if c.is_tolerant]
    if tolerant_clicks:
        tolerant = click_disks(tolerant_clicks, transform, radius=tolerant_radius)[_TOL] > 0
        tolerant &= ~fg & ~bg

    prior = None
    if prompts.prior_mask is not None:
        prior = mask_to_working(prompts.prior_mask, transform)

    return Seeds(fg=fg, bg=bg, tolerant=tolerant, prior=prior, box=box_rect, outside_box=outside_box)


def border_mask(shape: tuple[int, int], width: int = 1) -> np.ndarray:
    """Bool map of the ``width``-pixel frame around an image of ``shape``."""
    frame = np.zeros(shape, dtype=bool)
    w = max(1, int(width))
    frame[:w, :] = True
    frame[-w:, :] = True
    frame[:, :w] = True
    frame[:, -w:] = True
    return frame


def seed_connected(mask: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """The connected components (8-connectivity) of ``mask`` that touch ``anchors``; ``mask`` if none do."""
    mask = np.asarray(mask, dtype=bool)
    if not anchors.any() or not mask.any():
        return mask
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    keep = np.unique(labels[anchors & mask])
    keep = keep[keep > 0]
    if keep.size == 0:
        return mask
    return np.isin(labels, keep)


def signed_distance_probs(mask: np.ndarray, softness: float) -> np.ndarray:
    """Probabilities from a hard mask: sigmoid(signed distance to its boundary / ``softness``), float32.

    Every pixel keeps its label (object pixels are > 0.5, others < 0.5), so thresholding at 0.5 gives ``mask`` back
    and bilinear upsampling puts the 0.5 contour half-way between pixels of different labels. Confidence grows with
    the distance from the boundary.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.all():
        return np.ones(mask.shape, dtype=np.float32)
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.float32)
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3)
    signed = np.where(mask, inside - 0.5, 0.5 - outside)
    logits = np.clip(signed / max(softness, 1e-6), -60.0, 60.0)
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


class SeededEngine(Engine):
    """Base of the classical engines: frozen dataclasses with ``max_side``, ``click_radius``, ``tolerant_radius`` and
    ``colour_gate`` options, whose prompts become seeds on a :class:`WorkingImage`."""

    max_side: int
    click_radius: float
    tolerant_radius: float
    colour_gate: float | None

    def check_seed_options(self) -> None:
        check_seed_options(self.name, self.max_side, self.click_radius, self.tolerant_radius, self.colour_gate)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}  # type: ignore[call-overload]

    def prompt_seeds(self, prompts: Prompts, work: WorkingImage) -> Seeds:
        return build_seeds(prompts, work.transform, self.click_radius, self.tolerant_radius, work.lab, self.colour_gate)

    def predict(self, image: np.ndarray, features: Any, prompts: Prompts, previous: Prediction | None) -> EngineOutput:
        """The classical engines' opening: the features (encoded now when not given), the prompts as seeds on the
        working image, and an empty result when nothing says where the object is; then :meth:`segment`."""
        features = self.features_for(image, features)
        work = features if isinstance(features, WorkingImage) else features.work
        seeds = self.prompt_seeds(prompts, work)
        if not seeds.has_positive:
            return EngineOutput(empty_probs(work.original_size))
        return self.segment(features, work, seeds, prompts, previous)

    @abc.abstractmethod
    def segment(self, features: Any, work: WorkingImage, seeds: Seeds, prompts: Prompts,
                previous: Prediction | None) -> EngineOutput:
        """Probabilities at the original size from ``seeds`` (which hold a positive hint) on ``work``, the working
        image of ``features`` (what :meth:`encode_image` returned)."""
