"""Geodesic-distance segmentation (in the spirit of Bai & Sapiro's geodesic matting and Criminisi's GeoS).

The working image becomes an 8-connected graph whose edge lengths grow with the colour change along them,
``sqrt(step² + (contrast * |ΔLab|)²)``; it is built once per image. Each step computes, with Dijkstra's algorithm,
the geodesic distance of every pixel to the foreground seeds and to the background seeds, and a pixel belongs to the
object when it is nearer the foreground: ``p = D_bg / (D_fg + D_bg)``, so 0.5 is the decision boundary.

Soft evidence enters as seeds with a head start (an edge from a virtual source node to each seed pixel): tolerant
clicks are foreground seeds ``tolerant_offset`` away; a box's interior is a foreground seed ``box_offset`` away (by
default Otsu's threshold of the interior's distances to the outside, so what is far from the outside is object);
the core of a prior mask's inside and outside are foreground and background seeds ``prior_offset`` away, leaving a
band of ``prior_band`` pixels each side of its boundary to the distances; and the image frame is a background seed
``border_offset`` away. Hard seeds (click disks, scribbles, the outside of a box) start at 0. The engine has no
memory: each step depends on the prompts alone, so ``previous`` is not needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph
from skimage.filters import threshold_otsu

from finecut.engines.base import EngineOutput, Prediction
from finecut.engines.seeds import (
    SeededEngine,
    Seeds,
    WorkingImage,
    border_mask,
    frozen,
    to_original,
)
from finecut.errors import FinecutError
from finecut.prompts import Prompts



@dataclass(frozen=True)
class GeodesicFeatures:
    """The working image and its graph: CSR arrays over ``h*w + 1`` nodes, the last (the source) without edges yet."""

    work: WorkingImage
    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray


def image_graph(lab: np.ndarray, contrast: float, smooth_sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-connected graph of a Lab image ((h, w, 3) float32) with edge lengths ``sqrt(step² + (contrast * |ΔLab|)²)``.

    Colours are blurred by ``smooth_sigma`` px first. Returns CSR ``(indptr, indices, weights)`` over ``h*w + 1``
    nodes; node ``h*w`` is a source with no edges yet.
    """
    if smooth_sigma > 0:
        lab = cv2.GaussianBlur(lab, (0, 0), smooth_sigma)
    height, width = lab.shape[:2]
    count = height * width
    index = np.arange(count, dtype=np.int32).reshape(height, width)
    src, dst, length = [], [], []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        ys0, ys1 = slice(0, height - dy), slice(dy, height)
        xs0, xs1 = (slice(0, width - dx), slice(dx, width)) if dx >= 0 else (slice(-dx, width), slice(0, width + dx))
        diff = np.linalg.norm(lab[ys1, xs1] - lab[ys0, xs0], axis=-1).ravel()
        step = float(np.hypot(dx, dy))
        src.append(index[ys0, xs0].ravel())
        dst.append(index[ys1, xs1].ravel())
        length.append(np.sqrt(step**2 + (contrast * diff) ** 2))
    a, b, w = np.concatenate(src), np.concatenate(dst), np.concatenate(length)
    graph = sp.csr_array(
        (np.concatenate([w, w]), (np.concatenate([a, b]), np.concatenate([b, a]))), shape=(count + 1, count + 1)
    )
    graph.sort_indices()
    return graph.indptr, graph.indices, graph.data.astype(np.float64)


def seeded_distance(features: GeodesicFeatures, seeds: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Geodesic distance (h*w,) to the nearest seed; each seed map (bool (h, w)) starts at its given offset."""
    count = features.indptr.size - 2
    start = np.full(count, np.inf)
    for mask, offset in seeds:
        flat = np.asarray(mask, dtype=bool).ravel()
        start[flat] = np.minimum(start[flat], float(offset))
    nodes = np.flatnonzero(np.isfinite(start)).astype(features.indices.dtype)
    if nodes.size == 0:
        return np.full(count, np.inf)
    indptr = features.indptr.copy()
    indptr[-1] += nodes.size
    graph = sp.csr_array(
        (np.concatenate([features.weights, start[nodes]]), np.concatenate([features.indices, nodes]), indptr),
        shape=(count + 1, count + 1),
    )
    return csgraph.dijkstra(graph, directed=True, indices=count)[:count]


@dataclass(frozen=True)
class GeodesicEngine(SeededEngine):
    """Nearest-seed segmentation under a colour-sensitive geodesic distance, on a working copy of the image.

    Options: ``max_side`` (working resolution), ``click_radius`` (hard-seed disk radius, working px),
    ``tolerant_radius`` (seed area of a tolerant click), ``contrast`` (path cost per Lab unit of colour change,
    relative to one pixel of travel), ``smooth_sigma`` (Gaussian blur before measuring colour change, working px),
    ``colour_gate`` (click disks keep pixels within this Lab distance of the clicked colour; None: whole disks),
    ``prior_band`` (working px either side of a prior mask's boundary left to the distances) and the head starts of
    soft seeds, in the units of the distance (one pixel of travel through a flat region is 1): ``tolerant_offset``,
    ``prior_offset``, ``box_offset`` (None: adaptive, see :func:`box_head_start`) and ``border_offset`` (the image
    frame as background; None disables it).
    """

    name: ClassVar[str] = "geodesic"
    features_type: ClassVar[type] = GeodesicFeatures

    max_side: int = 256
    click_radius: float = 3.0
    tolerant_radius: float = 8.0
    colour_gate: float | None = 25.0
    contrast: float = 8.0
    smooth_sigma: float = 1.5
    tolerant_offset: float = 10.0
    prior_offset: float = 100.0
    prior_band: float = 3.0
    box_offset: float | None = None
    border_offset: float | None = 10.0

    def __post_init__(self) -> None:
        self.check_seed_options()
        if self.contrast < 0 or self.smooth_sigma < 0:
            raise FinecutError(
                f"geodesic: contrast and smooth_sigma must be >= 0, got {self.contrast}, {self.smooth_sigma}"
            )
        offsets = (
            self.tolerant_offset,
            self.prior_offset,
            self.prior_band,
            0.0 if self.box_offset is None else self.box_offset,
            0.0 if self.border_offset is None else self.border_offset,
        )
        if min(offsets) < 0:
            raise FinecutError(f"geodesic: seed offsets must be >= 0, got {offsets}")

    def encode_image(self, image: np.ndarray) -> GeodesicFeatures:
        work = WorkingImage.build(image, self.max_side)
        indptr, indices, weights = image_graph(work.lab, self.contrast, self.smooth_sigma)
        return GeodesicFeatures(work, frozen(indptr), frozen(indices), frozen(weights))

    def seed_sets(
        self, seeds: Seeds, features: GeodesicFeatures
    ) -> tuple[list[tuple[np.ndarray, float]], list[tuple[np.ndarray, float]]]:
        """(foreground, background) seed maps with their head-start offsets."""
        fg = [(seeds.fg, 0.0)]
        bg = [(seeds.bg, 0.0)]
        if seeds.tolerant.any():
            fg.append((seeds.tolerant, self.tolerant_offset))
        if seeds.box is not None and seeds.outside_box is not None:
            interior = seeds.box_interior
            offset = self.box_offset
            if offset is None:
                offset = box_head_start(seeded_distance(features, [(seeds.outside_box, 0.0)]), interior)
            fg.append((interior, offset))
        if seeds.prior is not None:
            inside, outside = seeds.prior_cores(self.prior_band)
            fg.append((inside, self.prior_offset))
            bg.append((outside, self.prior_offset))
        if self.border_offset is not None:
            bg.append((border_mask(seeds.shape) & ~seeds.fg, self.border_offset))
        return fg, bg

    def segment(
        self, features: GeodesicFeatures, work: WorkingImage, seeds: Seeds, prompts: Prompts,
        previous: Prediction | None,
    ) -> EngineOutput:
        fg_sets, bg_sets = self.seed_sets(seeds, features)
        d_fg = seeded_distance(features, fg_sets)
        d_bg = seeded_distance(features, bg_sets)
        probs = geodesic_probs(d_fg, d_bg).reshape(work.shape)
        return EngineOutput(to_original(probs, *work.original_size))


def box_head_start(distance_outside: np.ndarray, interior: np.ndarray) -> float:
    """The head start of a box's interior: Otsu's threshold on the interior's geodesic distances to the outside.

    Pixels of the box that are geodesically far from everything outside it (beyond the threshold) are the object;
    those a cheap path joins to the outside are background.
    """
    values = np.asarray(distance_outside).reshape(interior.shape)[interior]
    values = values[np.isfinite(values)]
    if values.size == 0 or values.min() == values.max():
        return 0.0
    return float(threshold_otsu(values))


def geodesic_probs(d_fg: np.ndarray, d_bg: np.ndarray) -> np.ndarray:
    """``D_bg / (D_fg + D_bg)``: 1 on foreground seeds, 0 on background seeds, 0.5 where equidistant.

    Pixels no foreground seed reaches are 0; pixels only foreground seeds reach are 1.
    """
    d_fg = np.asarray(d_fg, dtype=np.float64)
    d_bg = np.asarray(d_bg, dtype=np.float64)
    total = d_fg + d_bg
    with np.errstate(invalid="ignore", divide="ignore"):
        probs = np.where(total > 0, d_bg / total, 0.5)
    probs = np.where(np.isinf(d_fg), 0.0, np.where(np.isinf(d_bg), 1.0, probs))
    return probs.astype(np.float32)
