"""FocalClick-XL's deterministic scribble simulator and the human-scribble reader, as pure functions.

The simulated user of the scribble protocol (FocalClick-XL §5.2, Fig. 5): take the largest error region (the largest
8-connected component of the false negatives or of the false positives; ties go negative, as with clicks), compute its
medial axis, turn the axis pixels into a radius-neighbour graph, cut each connected sub-graph down to a spanning tree
(no cycles), take the longest path over all trees, and draw a Bézier curve through it. The scribble is positive on a
false-negative region, negative on a false-positive one. Nothing is random: the same masks give the same scribble.

Choices the paper leaves open, made here:

* the region is padded by one background pixel first, so the image border counts as region boundary (as in the click
  protocol), and pixels already covered by earlier scribbles are not part of any error region;
* only medial-axis pixels far enough from the region's boundary for the stroke to fit (distance >= width / 2 + 1) are
  graph vertices; where none are, the stroke narrows to what the region allows (down to 1 px);
* the Bézier curve is piecewise cubic: the path is cut into pieces of about ``segment`` px, each piece's control points
  are its ends and the path points at 1/3 and 2/3 of it; the curve is sampled about every pixel;
* the stroke, rasterised as the engines rasterise it (:func:`finecut.prompts.scribble_maps`), lies inside the error
  region: curve points too close to the region's boundary are trimmed to the longest valid run, and if the stroke still
  leaves the region it narrows, down to a one-pixel dot at the region's deepest pixel.

Human scribbles (``GrabCut-scribbles/scribbles-set-{1,2}/<name>-anno.png``, palette indices 0 none / 1 object /
2 background) become :class:`~finecut.prompts.Scribble` strokes through the same graph machinery: each stroke
component's skeleton is split into its longest paths, drawn with the width that best reproduces the painted stroke.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy import sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

from finecut.errors import FinecutError
from finecut.evaluation.protocol import error_maps
from finecut.prompts import CropTransform, Scribble, scribble_maps

if TYPE_CHECKING:
    from finecut.datasets.base import Sample

#: Vertices of the skeleton graph closer than this (px) are neighbours (8-connectivity of the skeleton pixels).
GRAPH_RADIUS = 1.5
#: Path length (px) of each cubic piece of the Bézier curve.
BEZIER_SEGMENT = 16.0


# ----------------------------------------------------------------------------------------------- graph helpers
def _forest(points: np.ndarray, radius: float) -> sparse.csr_matrix:
    """The minimum spanning forest (Euclidean edge lengths) of the radius-neighbour graph of ``points`` (N, 2)."""
    n = len(points)
    if n < 2:
        return sparse.csr_matrix((n, n))
    pairs = cKDTree(points).query_pairs(r=radius, output_type="ndarray")
    if len(pairs) == 0:
        return sparse.csr_matrix((n, n))
    lengths = np.linalg.norm(points[pairs[:, 0]] - points[pairs[:, 1]], axis=1)
    graph = sparse.coo_matrix((lengths, (pairs[:, 0], pairs[:, 1])), shape=(n, n)).tocsr()
    tree = csgraph.minimum_spanning_tree(graph)
    return (tree + tree.T).tocsr()


def _tree_diameter(tree: sparse.csr_matrix, nodes: np.ndarray) -> tuple[float, list[int]]:
    """Length and node list of the longest path of the tree spanned by ``nodes`` (double sweep)."""
    if len(nodes) == 1:
        return 0.0, [int(nodes[0])]
    dist = csgraph.dijkstra(tree, directed=False, indices=int(nodes[0]))
    a = int(nodes[int(np.argmax(dist[nodes]))])
    dist, pred = csgraph.dijkstra(tree, directed=False, indices=a, return_predecessors=True)
    b = int(nodes[int(np.argmax(dist[nodes]))])
    path = [b]
    while path[-1] != a:
        path.append(int(pred[path[-1]]))
    return float(dist[b]), path[::-1]


def longest_path(points: np.ndarray, radius: float = GRAPH_RADIUS) -> np.ndarray:
    """The longest acyclic path through ``points`` ((N, 2) pixel coordinates, any order): the radius-neighbour graph,
    cut to a minimum spanning forest, and the longest of its trees' diameters (ties: the tree listed first).

    Returns the path's points in order, (M, 2) float64; empty input gives an empty array.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return pts
    tree = _forest(pts, radius)
    count, labels = csgraph.connected_components(tree, directed=False)
    best_len, best_path = -1.0, [0]
    for comp in range(count):
        nodes = np.flatnonzero(labels == comp)
        length, path = _tree_diameter(tree, nodes)
        if length > best_len:
            best_len, best_path = length, path
    return pts[best_path]


def _all_paths(points: np.ndarray, radius: float, min_length: float) -> list[np.ndarray]:
    """Split a skeleton into paths: take the longest path of the spanning forest, drop its points, repeat until the
    longest remaining path is shorter than ``min_length`` px (the first path is always returned)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    paths: list[np.ndarray] = []
    while len(pts):
        tree = _forest(pts, radius)
        count, labels = csgraph.connected_components(tree, directed=False)
        best_len, best_path = -1.0, [0]
        for comp in range(count):
            length, path = _tree_diameter(tree, np.flatnonzero(labels == comp))
            if length > best_len:
                best_len, best_path = length, path
        if paths and best_len < min_length:
            break
        paths.append(pts[best_path])
        keep = np.ones(len(pts), dtype=bool)
        keep[best_path] = False
        pts = pts[keep]
    return paths


# ---------------------------------------------------------------------------------------------------- Bézier
def _cubic(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    u = 1.0 - t
    return u**3 * p0 + 3 * u**2 * t * p1 + 3 * u * t**2 * p2 + t**3 * p3


def bezier_curve(path: np.ndarray, segment: float = BEZIER_SEGMENT) -> np.ndarray:
    """A piecewise cubic Bézier curve through an ordered path ((M, 2)), sampled about every pixel.

    The path is cut at about every ``segment`` px of its length; each piece's control points are its two ends and the
    path points at 1/3 and 2/3 of it, so the curve passes through the cut points and smooths the pixel steps between.
    """
    pts = np.asarray(path, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        return pts.copy()
    steps = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    pieces = max(1, int(round(arc[-1] / max(segment, 1.0))))
    knots = np.unique(np.searchsorted(arc, np.linspace(0.0, arc[-1], pieces + 1)).clip(0, len(pts) - 1))
    out = [pts[:1]]
    for a, b in zip(knots[:-1], knots[1:]):
        i1 = a + (b - a) / 3.0
        i2 = a + 2.0 * (b - a) / 3.0
        c1 = _interp(pts, i1)
        c2 = _interp(pts, i2)
        n = max(2, int(np.ceil(arc[b] - arc[a])) + 1)
        out.append(_cubic(pts[a], c1, c2, pts[b], n)[1:])
    return np.concatenate(out)


def _interp(pts: np.ndarray, index: float) -> np.ndarray:
    lo = int(np.floor(index))
    hi = min(lo + 1, len(pts) - 1)
    f = index - lo
    return (1.0 - f) * pts[lo] + f * pts[hi]


# ------------------------------------------------------------------------------------------------- rasterising
def scribble_pixels(scribbles: Sequence[Scribble], shape: tuple[int, int]) -> np.ndarray:
    """The pixels the engines' rasteriser marks for ``scribbles`` at original resolution (bool (H, W))."""
    if not scribbles:
        return np.zeros(shape, dtype=bool)
    maps = scribble_maps(list(scribbles), CropTransform.identity(*shape))
    return maps.max(axis=0) > 0


def _make(points: np.ndarray, positive: bool, width: float) -> Scribble:
    """A Scribble through ``points`` ((x, y) rows); a single point becomes a zero-length stroke (two equal points),
    which the rasteriser draws with the stroke's width (a lone point would be drawn as a disk of radius >= 1)."""
    pts = [(float(x), float(y)) for x, y in np.round(points, 2)]
    if len(pts) == 1:
        pts = pts * 2
    return Scribble(tuple(pts), positive=positive, width=float(width))


def _inside(scribble: Scribble, region: np.ndarray) -> bool:
    return not (scribble_pixels([scribble], region.shape) & ~region).any()


def _longest_run(valid: np.ndarray) -> tuple[int, int]:
    """Start and end (exclusive) of the longest run of True in ``valid`` (first one on ties); (0, 0) when none."""
    best = (0, 0)
    start = None
    for i, v in enumerate(list(valid) + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best


def _medial_axis(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's medial axis and distance map, with its tie-breaking order seeded (``rng`` since 0.23,
    ``random_state`` before), so the skeleton is the same on every call."""
    import inspect

    from skimage.morphology import medial_axis

    params = inspect.signature(medial_axis).parameters
    seed = {"rng": 0} if "rng" in params else {"random_state": 0} if "random_state" in params else {}
    return medial_axis(mask, return_distance=True, **seed)


def region_scribble(region: np.ndarray, positive: bool, width: float = 5.0, radius: float = GRAPH_RADIUS,
                    segment: float = BEZIER_SEGMENT) -> Scribble:
    """The simulator's scribble inside one region (bool (H, W), non-empty): medial axis, radius-neighbour graph,
    spanning forest, longest path, Bézier curve; trimmed and narrowed so that its rasterised stroke lies inside."""
    region = np.asarray(region, dtype=bool)
    if not region.any():
        raise FinecutError("cannot place a scribble in an empty region")
    skel, dist = _medial_axis(np.pad(region, 1))
    skel, dist = skel[1:-1, 1:-1] & region, dist[1:-1, 1:-1]
    if not skel.any():  # a region too small for an axis: its deepest pixel
        skel = dist == dist[region].max()
    deepest = float(dist[skel].max())
    stroke = float(width)
    need = stroke / 2.0 + 1.0
    if deepest < need:  # the region is thinner than the stroke: narrow it to fit (odd pixel widths)
        stroke = max(1.0, 2.0 * np.floor(deepest - 1.0) - 1.0) if deepest >= 2.0 else 1.0
        need = max(1.0, stroke / 2.0 + 1.0) if stroke > 1.0 else 1.0
    candidates = skel & (dist >= need - 1e-9)
    if not candidates.any():
        candidates = skel & (dist >= deepest - 1e-9)
    rows, cols = np.nonzero(candidates)
    path = longest_path(np.stack([cols, rows], axis=1), radius)
    curve = bezier_curve(path, segment)
    # Trim to the longest run of curve points whose own disk of the stroke's width fits in the region.
    ri = np.clip(np.round(curve[:, 1]).astype(int), 0, region.shape[0] - 1)
    ci = np.clip(np.round(curve[:, 0]).astype(int), 0, region.shape[1] - 1)
    valid = region[ri, ci] & (dist[ri, ci] >= need - 1e-9)
    a, b = _longest_run(valid)
    curve = curve[a:b] if b > a else path[:1]
    while True:
        scribble = _make(curve, positive, stroke)
        if _inside(scribble, region) or stroke <= 1.0:
            break
        stroke = max(1.0, stroke - 2.0)
    if not _inside(scribble, region):  # last resort: a one-pixel dot at the deepest pixel
        r, c = np.unravel_index(int(np.argmax(np.where(region, dist, -1.0))), region.shape)
        scribble = _make(np.array([[float(c), float(r)]]), positive, 1.0)
    return scribble


def largest_error_region(gt: np.ndarray, pred: np.ndarray,
                         exclude: np.ndarray | None = None) -> tuple[np.ndarray, bool] | None:
    """The largest 8-connected component of the false negatives or false positives (ignore pixels and ``exclude``d
    pixels left out) and whether it is a false-negative one; None when there is no error. Ties go negative, and
    within one map to the component met first in row-major order."""
    fn, fp = error_maps(gt, pred)
    if exclude is not None:
        fn &= ~exclude
        fp &= ~exclude
    best: tuple[int, bool, np.ndarray] | None = None
    for positive, err in ((False, fp), (True, fn)):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(err.astype(np.uint8), connectivity=8)
        if count <= 1:
            continue
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = int(stats[k, cv2.CC_STAT_AREA])
        if best is None or area > best[0]:
            best = (area, positive, labels == k)
    if best is None:
        return None
    return best[2], best[1]


def next_scribble(gt: np.ndarray, pred: np.ndarray, scribbles: Sequence[Scribble] = (), width: float = 5.0,
                  radius: float = GRAPH_RADIUS, segment: float = BEZIER_SEGMENT) -> Scribble | None:
    """The simulated user's next scribble: in the largest error region of ``pred`` against ``gt`` (int, 1 object,
    0 background, -1 ignore), positive on missed object and negative on wrongly included background. Pixels of
    earlier ``scribbles`` are not part of any error region. None when no error is left."""
    gt = np.asarray(gt)
    if gt.ndim != 2:
        raise FinecutError(f"ground truth must be 2-D, got shape {gt.shape}")
    exclude = scribble_pixels(scribbles, gt.shape) if scribbles else None
    found = largest_error_region(gt, pred, exclude)
    if found is None:
        return None
    region, positive = found
    return region_scribble(region, positive, width, radius, segment)


# ---------------------------------------------------------------------------------------------- human scribbles
def scribbles_from_map(strokes: np.ndarray, positive: bool, min_length: float = 3.0,
                       radius: float = GRAPH_RADIUS, max_width: int = 15) -> list[Scribble]:
    """Strokes painted into a bool map -> Scribbles: each 8-connected stroke's skeleton split into its longest paths
    (every path of at least ``min_length`` px, and always the longest); the stroke's width is the one (1 to
    ``max_width`` px) whose rasterised paths match the painted stroke best (IoU)."""
    from skimage.morphology import skeletonize

    strokes = np.asarray(strokes, dtype=bool)
    count, labels = cv2.connectedComponents(strokes.astype(np.uint8), connectivity=8)
    out: list[Scribble] = []
    for k in range(1, count):
        comp = labels == k
        skel = skeletonize(comp) & comp
        if not skel.any():
            skel = comp
        rows, cols = np.nonzero(skel)
        paths = _all_paths(np.stack([cols, rows], axis=1), radius, min_length)
        best_width, best_score = 1.0, -1.0
        for width in range(1, max_width + 1):
            drawn = scribble_pixels([_make(p, positive, float(width)) for p in paths], comp.shape)
            score = np.count_nonzero(drawn & comp) / max(1, np.count_nonzero(drawn | comp))
            if score > best_score:
                best_width, best_score = float(width), score
        out += [_make(p, positive, best_width) for p in paths]
    return out


def read_scribble_map(path: str | os.PathLike) -> np.ndarray:
    """A scribble annotation as stored (palette indices, or grey values): uint8 (H, W), 0 none, 1 object,
    2 background."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise FinecutError(f"{path}: scribble maps must be palette or grey images (0/1/2), got mode {im.mode}")
            arr = np.array(im)
    except OSError as exc:
        raise FinecutError(f"{path}: cannot read scribble map ({exc})") from exc
    if arr.max(initial=0) > 2:
        raise FinecutError(f"{path}: scribble map values must be 0 (none), 1 (object) or 2 (background)")
    return arr


class HumanScribbles:
    """Human scribbles of a sample: ``folder/<stem>-anno.png`` (0 none, 1 object, 2 background), found by the sample's
    name or its image's stem; ``aliases`` maps a sample name to the stem used in the folder (GrabCut's ``124080`` is
    ``124084`` in the scribble sets)."""

    DEFAULT_ALIASES = {"124080": "124084"}

    def __init__(self, folder: str | os.PathLike, aliases: dict[str, str] | None = None) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FinecutError(f"{self.folder}: scribble folder not found")
        self.aliases = dict(self.DEFAULT_ALIASES if aliases is None else aliases)
        self._by_stem = {p.name[: -len("-anno.png")]: p for p in sorted(self.folder.glob("*-anno.png"))}
        if not self._by_stem:
            raise FinecutError(f"{self.folder}: no <name>-anno.png scribble maps in this folder")

    def path_for(self, name: str, image_stem: str | None = None) -> Path:
        for stem in (name, self.aliases.get(name), image_stem, self.aliases.get(image_stem or "")):
            if stem and stem in self._by_stem:
                return self._by_stem[stem]
        raise FinecutError(f"{self.folder}: no human scribbles for sample {name!r} (expected {name}-anno.png)")

    def has(self, name: str) -> bool:
        try:
            self.path_for(name)
        except FinecutError:
            return False
        return True

    def __call__(self, sample: Sample) -> list[Scribble]:
        image_path = sample.meta.get("image_path")
        path = self.path_for(sample.name, Path(image_path).stem if image_path else None)
        labels = read_scribble_map(path)
        if labels.shape != np.asarray(sample.gt).shape:
            raise FinecutError(f"{path}: scribble map is {labels.shape[1]}x{labels.shape[0]}, but sample "
                               f"{sample.name}'s image is {sample.gt.shape[1]}x{sample.gt.shape[0]}")
        return scribbles_from_map(labels == 1, True) + scribbles_from_map(labels == 2, False)

    def __repr__(self) -> str:
        return f"HumanScribbles({str(self.folder)!r})"
