"""Synthetic training views: procedural thin structures and real-object cutouts composited onto bank photos.

Thin structures (wires, kite strings, vessel/crack trees, fences/meshes, hair strands, surface cracks) are drawn at
``SUPERSAMPLE`` times the hi-res view size and area-downsampled to an alpha matte; the hi-res mask is
``alpha >= 0.5``, and the image is ``background * (1 - alpha) + foreground * alpha``, so image and mask agree to the
pixel. The background is a random crop of a random bank photo; the foreground is a noisy solid colour or a texture
cut from another photo. Surface cracks (``crack``) are their own scene, as in pavement and wall inspection: a dark,
jagged, branching crack 1-5 px wide on an asphalt / concrete / plaster-like surface (grain, blotches and aggregate
speckles, or a desaturated photo texture), the crack's colour the surface's own, darkened.
Cutouts paste a bank object (its pixels through its mask) onto another bank photo, optionally occluded by a wire,
whose pixels are then removed from the mask.

:func:`synthetic_view` returns the same :class:`~finecut.training.augment.View` as
:func:`~finecut.training.augment.random_view`, and is deterministic given the ``np.random.Generator``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from math import comb

import cv2
import numpy as np

from finecut.errors import FinecutError
from finecut.training.augment import View, ViewConfig, color_jitter
from finecut.training.objects import ObjectBank

SUPERSAMPLE = 4
SHIFT = 4  # fixed-point bits for cv2 drawing (sub-pixel coordinates on the supersampled canvas)
SYNTHETIC_OBJECT_ID = -1  # marker used in Batch.object_ids for synthetic samples
KINDS = ("wires", "string", "vessels", "fence", "hair", "crack", "cutout")


@dataclass(frozen=True)
class SyntheticConfig:
    kind_weights: dict[str, float] = field(default_factory=lambda: {
        "wires": 0.22, "string": 0.09, "vessels": 0.17, "fence": 0.13, "hair": 0.09, "crack": 0.12, "cutout": 0.18})
    wire_width: tuple[float, float] = (1.0, 6.0)  # hi-res px
    string_width: tuple[float, float] = (1.0, 2.0)
    crack_width: tuple[float, float] = (1.0, 5.0)  # hi-res px at the crack's mouth; branches narrow to 1 px
    min_contrast: float = 35.0  # mean |fg - bg| per channel under the mask, enforced by shifting the fg colour
    blur_probability: float = 0.3
    occluder_probability: float = 0.3  # cutouts: a wire drawn over the pasted object (holes in its mask)
    cutout_scale: tuple[float, float] = (0.25, 0.85)  # object long side / view side
    tries: int = 8

    def __post_init__(self) -> None:
        unknown = set(self.kind_weights) - set(KINDS)
        if unknown or not any(w > 0 for w in self.kind_weights.values()):
            raise FinecutError(f"synthetic kind_weights {self.kind_weights}: kinds must be among {KINDS}, "
                               "with at least one positive weight")


# ------------------------------------------------------------------------------------------------ drawing helpers
def _canvas(size: int) -> np.ndarray:
    return np.zeros((size * SUPERSAMPLE, size * SUPERSAMPLE), np.uint8)


def _pts(points: np.ndarray) -> np.ndarray:
    """Hi-res (x, y) float points -> fixed-point int32 points on the supersampled canvas."""
    scaled = (points + 0.5) * SUPERSAMPLE - 0.5
    return np.round(scaled * (1 << SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def _polyline(canvas: np.ndarray, points: np.ndarray, width: float) -> None:
    thickness = max(1, round(float(width) * SUPERSAMPLE))
    cv2.polylines(canvas, [_pts(points)], False, 255, thickness, cv2.LINE_8, SHIFT)


def _tapered(canvas: np.ndarray, points: np.ndarray, widths: np.ndarray) -> None:
    """A polyline whose width varies per segment (round joints from OpenCV's thick-line caps)."""
    fixed = _pts(points).reshape(-1, 2)
    for i in range(len(fixed) - 1):
        thickness = max(1, round(float(widths[i]) * SUPERSAMPLE))
        cv2.line(canvas, tuple(map(int, fixed[i])), tuple(map(int, fixed[i + 1])), 255, thickness, cv2.LINE_8, SHIFT)


def _alpha(canvas: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _bezier(control: np.ndarray, n: int = 160) -> np.ndarray:
    """Points of a Bezier curve of any degree (control: (k, 2))."""
    t = np.linspace(0.0, 1.0, n)
    k = len(control) - 1
    coeffs = np.stack([comb(k, i) * t**i * (1 - t) ** (k - i) for i in range(k + 1)], axis=1)
    return coeffs @ control.astype(np.float64)


def _edge_point(rng: np.random.Generator, size: int, margin: float = 0.1) -> np.ndarray:
    """A random point on (or slightly outside) the square's border."""
    side = rng.integers(4)
    u = rng.uniform(0, size)
    out = rng.uniform(0, margin * size)
    return np.array([[u, -out], [size + out, u], [u, size + out], [-out, u]][side])


# ------------------------------------------------------------------------------------------------ structures
def draw_wires(rng: np.random.Generator, size: int, cfg: SyntheticConfig) -> np.ndarray:
    """1-3 smooth cables (random cubic Bezier curves entering and leaving the frame), 1-6 px wide."""
    canvas = _canvas(size)
    for _ in range(int(rng.choice([1, 1, 1, 2, 2, 3]))):
        a, b = _edge_point(rng, size), _edge_point(rng, size)
        c1 = rng.uniform(-0.1, 1.1, 2) * size
        c2 = rng.uniform(-0.1, 1.1, 2) * size
        curve = _bezier(np.stack([a, c1, c2, b]), 200)
        _polyline(canvas, curve, rng.uniform(*cfg.wire_width))
    return _alpha(canvas, size)


def draw_string(rng: np.random.Generator, size: int, cfg: SyntheticConfig) -> np.ndarray:
    """A long, nearly straight, very thin line (kite / fishing string) with a slight sag."""
    canvas = _canvas(size)
    angle = rng.uniform(0, np.pi)
    centre = rng.uniform(0.25, 0.75, 2) * size
    d = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-d[1], d[0]])
    half = size * 0.8
    a, b = centre - d * half, centre + d * half
    mid = centre + normal * rng.uniform(-0.04, 0.04) * size
    _polyline(canvas, _bezier(np.stack([a, mid, b]), 120), rng.uniform(*cfg.string_width))
    return _alpha(canvas, size)


def draw_vessels(rng: np.random.Generator, size: int, cfg: SyntheticConfig) -> np.ndarray:
    """A branching tree from a random walk with decreasing width (retinal vessels, cracks, twigs)."""
    canvas = _canvas(size)
    crack = rng.random() < 0.4  # cracks: jagged, narrow; vessels: smooth, wider trunk
    start = _edge_point(rng, size, margin=0.0) if rng.random() < 0.7 else rng.uniform(0.2, 0.8, 2) * size
    heading = float(np.arctan2(size / 2 - start[1], size / 2 - start[0]) + rng.uniform(-0.5, 0.5))
    width0 = rng.uniform(2.0, 4.0) if crack else rng.uniform(3.0, 7.0)
    stack = [(start, heading, width0, 0)]
    step = size / 90
    turn = 0.35 if crack else 0.12
    branches = 0
    while stack and branches < 48:
        pos, heading, width, depth = stack.pop()
        branches += 1
        points, widths = [pos.copy()], []
        aim = heading  # the walk wanders but is pulled back to its initial direction (no curling up)
        for _ in range(int(rng.integers(40, 120)) if depth == 0 else int(rng.integers(15, 80))):
            heading += rng.normal(0, turn) + 0.15 * (aim - heading)
            pos = pos + step * np.array([np.cos(heading), np.sin(heading)])
            width *= rng.uniform(0.985, 0.998)
            points.append(pos.copy())
            widths.append(max(width, 1.0))
            if not (-0.1 * size < pos[0] < 1.1 * size and -0.1 * size < pos[1] < 1.1 * size):
                break
            if depth < 5 and width > 1.3 and rng.random() < 0.05:
                side = rng.choice([-1.0, 1.0])
                stack.append((pos.copy(), heading + side * rng.uniform(0.4, 1.1), width * rng.uniform(0.55, 0.8),
                              depth + 1))
        if len(points) > 1:
            _tapered(canvas, np.asarray(points), np.asarray(widths))
    return _alpha(canvas, size)


def draw_fence(rng: np.random.Generator, size: int, cfg: SyntheticConfig) -> np.ndarray:
    """Two families of parallel lines (fence, grid, chain-link mesh, window screen), optionally in perspective."""
    big = size * SUPERSAMPLE
    pad = big // 2
    canvas = np.zeros((big + 2 * pad, big + 2 * pad), np.uint8)  # drawn larger, then warped into the frame
    spacing = rng.uniform(14, 45) * SUPERSAMPLE
    width = rng.uniform(1.0, 4.0)
    thickness = max(1, round(float(width) * SUPERSAMPLE))
    base = rng.uniform(0, np.pi)
    angles = [base, base + rng.uniform(np.pi / 3, 2 * np.pi / 3)] if rng.random() < 0.85 else [base]
    n = canvas.shape[0]
    centre = np.array([n / 2, n / 2])
    for k, angle in enumerate(angles):
        d = np.array([np.cos(angle), np.sin(angle)])
        normal = np.array([-d[1], d[0]])
        sp = spacing * (rng.uniform(0.6, 1.6) if k else 1.0)
        offset = rng.uniform(0, sp)
        for t in np.arange(-n, n, sp) + offset:
            p0 = centre + normal * t - d * n
            p1 = centre + normal * t + d * n
            q0, q1 = np.round(np.stack([p0, p1]) * (1 << SHIFT)).astype(int)
            cv2.line(canvas, (int(q0[0]), int(q0[1])), (int(q1[0]), int(q1[1])), 255, thickness, cv2.LINE_8, SHIFT)
    src = np.float32([[pad, pad], [pad + big, pad], [pad + big, pad + big], [pad, pad + big]])
    jitter = rng.uniform(-0.15, 0.15, (4, 2)) * big if rng.random() < 0.6 else np.zeros((4, 2))
    dst = np.float32([[0, 0], [big, 0], [big, big], [0, big]] + jitter)
    warp = cv2.getPerspectiveTransform(src, dst)
    canvas = cv2.warpPerspective(canvas, warp, (big, big), flags=cv2.INTER_LINEAR)
    if rng.random() < 0.5:  # a fence panel covering only part of the frame
        region = np.zeros_like(canvas)
        x0, y0 = (rng.uniform(-0.2, 0.4, 2) * big).astype(int)
        x1, y1 = (rng.uniform(0.6, 1.2, 2) * big).astype(int)
        cv2.rectangle(region, (int(x0), int(y0)), (int(x1), int(y1)), 255, -1)
        canvas = np.minimum(canvas, region)
    return _alpha(canvas, size)


def draw_hair(rng: np.random.Generator, size: int, cfg: SyntheticConfig) -> np.ndarray:
    """A bundle of thin strands that share a base curve and fan out towards their tips."""
    canvas = _canvas(size)
    a = rng.uniform(0.1, 0.9, 2) * size
    b = _edge_point(rng, size, margin=0.05)
    bend = rng.uniform(-0.2, 0.2, (2, 2)) * size  # gently curved base (no loops)
    control = np.stack([a, a + (b - a) / 3 + bend[0], a + 2 * (b - a) / 3 + bend[1], b])
    base = _bezier(control, 120)
    tangent = np.gradient(base, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-9
    t = np.linspace(0, 1, len(base))[:, None]
    strands = int(rng.integers(8, 40))
    spread = rng.uniform(0.05, 0.25) * size
    for _ in range(strands):
        off = rng.normal(0, 1)
        wave = rng.uniform(0, 0.03) * size * np.sin(t * rng.uniform(2, 10) + rng.uniform(0, 6.3))
        root = rng.uniform(-0.02, 0.02) * size
        pts = base + normal * (root + off * spread * t ** 1.5 + wave)
        end = int(len(pts) * rng.uniform(0.5, 1.0))
        widths = np.linspace(rng.uniform(1.2, 2.5), 1.0, end)
        _tapered(canvas, pts[:end], widths)
    return _alpha(canvas, size)


def draw_crack(rng: np.random.Generator, size: int, cfg: SyntheticConfig) -> np.ndarray:
    """A surface crack: a jagged random walk from outside the frame with forks, 1-5 px at its widest, its branches
    narrowing to hairline (1 px) cracks."""
    canvas = _canvas(size)
    start = _edge_point(rng, size, margin=0.0)
    heading = float(np.arctan2(size / 2 - start[1], size / 2 - start[0]) + rng.uniform(-0.6, 0.6))
    stack = [(start, heading, float(rng.uniform(*cfg.crack_width)), 0)]
    step = size / 120
    branches = 0
    while stack and branches < 24:
        pos, heading, width, depth = stack.pop()
        branches += 1
        points, widths = [pos.copy()], []
        aim = heading
        for _ in range(int(rng.integers(60, 160)) if depth == 0 else int(rng.integers(15, 70))):
            heading += rng.normal(0, 0.45) + 0.2 * (aim - heading)  # jagged, but keeps its course
            pos = pos + step * rng.uniform(0.6, 1.4) * np.array([np.cos(heading), np.sin(heading)])
            width = max(1.0, width * rng.uniform(0.97, 1.01))
            points.append(pos.copy())
            widths.append(width)
            if not (-0.1 * size < pos[0] < 1.1 * size and -0.1 * size < pos[1] < 1.1 * size):
                break
            if depth < 3 and rng.random() < 0.04:
                side = rng.choice([-1.0, 1.0])
                stack.append((pos.copy(), heading + side * rng.uniform(0.5, 1.3), max(1.0, width * 0.6), depth + 1))
        if len(points) > 1:
            _tapered(canvas, np.asarray(points), np.asarray(widths))
    return _alpha(canvas, size)


STRUCTURES: dict[str, Callable[[np.random.Generator, int, SyntheticConfig], np.ndarray]] = {
    "wires": draw_wires, "string": draw_string, "vessels": draw_vessels, "fence": draw_fence, "hair": draw_hair,
    "crack": draw_crack}


# ------------------------------------------------------------------------------------------------ compositing
def random_crop(image: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop (40-100% of the short side), resized to ``size``, randomly flipped."""
    h, w = image.shape[:2]
    side = max(8, int(min(h, w) * rng.uniform(0.4, 1.0)))
    side = min(side, h, w)
    y0 = int(rng.integers(0, h - side + 1))
    x0 = int(rng.integers(0, w - side + 1))
    crop = image[y0:y0 + side, x0:x0 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    crop = cv2.resize(crop, (size, size), interpolation=interp)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


@dataclass(frozen=True, eq=False)
class SyntheticPool:
    """The bank objects (and their images) a synthetic view may use, e.g. the training split only."""
    objects: np.ndarray
    images: np.ndarray

    @classmethod
    def of(cls, bank: ObjectBank, objects: np.ndarray | None) -> SyntheticPool:
        obj = np.arange(len(bank)) if objects is None else np.asarray(objects, dtype=np.int64)
        if obj.size == 0:
            raise FinecutError("object bank has no objects for synthetic samples")
        return cls(obj, np.unique([bank.objects[int(i)].image_index for i in obj]))


def _random_image(pool: SyntheticPool, rng: np.random.Generator, exclude: int = -1) -> int:
    n = len(pool.images)
    k = int(rng.integers(n))
    if pool.images[k] == exclude and n > 1:
        k = (k + 1 + int(rng.integers(n - 1))) % n
    return int(pool.images[k])


def _foreground(bank: ObjectBank, pool: SyntheticPool, rng: np.random.Generator, size: int, background: np.ndarray,
                alpha: np.ndarray, cfg: SyntheticConfig) -> np.ndarray:
    """Foreground colour layer (float32): noisy solid colour or another photo's texture, shaded, contrasted."""
    if rng.random() < 0.6:
        colour = rng.uniform(0, 255, 3) if rng.random() < 0.5 else np.full(3, rng.uniform(0, 255))
        fg = np.broadcast_to(colour, (size, size, 3)).astype(np.float32)
        fg = fg + rng.normal(0, rng.uniform(2, 12), (size, size, 1)).astype(np.float32)
    else:
        fg = random_crop(bank.images[_random_image(pool, rng)], rng, size).astype(np.float32)
    if rng.random() < 0.5:  # linear shading across the frame
        gy, gx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        shade = 1.0 + rng.uniform(-0.35, 0.35) * (gx - 0.5) + rng.uniform(-0.35, 0.35) * (gy - 0.5)
        fg = fg * shade[..., None]
    weight = alpha >= 0.5
    if weight.any():
        bg_mean = background[weight].astype(np.float32).mean(axis=0)
        if np.abs(fg[weight].mean(axis=0) - bg_mean).mean() < cfg.min_contrast:
            # move the foreground's mean away from the background it covers (keeps its texture)
            direction = 1.0 if bg_mean.mean() < 128 else -1.0
            target = bg_mean + direction * (cfg.min_contrast + rng.uniform(0, 30))
            fg = fg - fg[weight].mean(axis=0) + target
    return np.clip(fg, 0, 255)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) float32 noise of about unit amplitude varying over ``cells`` cells across the frame."""
    small = rng.normal(0, 1, (cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def surface_texture(bank: ObjectBank, pool: SyntheticPool, rng: np.random.Generator, size: int) -> np.ndarray:
    """An asphalt / concrete / plaster-like surface (uint8 RGB): a grey-ish base with blotches, grain and aggregate
    speckles, over a desaturated, flattened photo texture half of the time."""
    grey = rng.uniform(70, 190)
    tint = rng.normal(0, 6, 3).astype(np.float32)
    out = np.full((size, size, 3), grey, np.float32) + tint
    if rng.random() < 0.5:  # real texture, desaturated and low in contrast
        photo = cv2.cvtColor(random_crop(bank.images[_random_image(pool, rng)], rng, size), cv2.COLOR_RGB2GRAY)
        photo = photo.astype(np.float32)
        out += (photo - photo.mean())[..., None] * rng.uniform(0.1, 0.35)
    out += (_smooth_noise(rng, size, int(rng.integers(3, 10))) * rng.uniform(4, 20))[..., None]  # blotches
    grain = rng.normal(0, rng.uniform(4, 14), (size, size)).astype(np.float32)
    out += cv2.GaussianBlur(grain, (0, 0), rng.uniform(0.5, 1.2))[..., None]
    speckles = rng.random((size, size)) < rng.uniform(0.002, 0.02)  # aggregate stones, light or dark
    out[speckles] += rng.choice([-1.0, 1.0]) * rng.uniform(20, 60)
    return np.clip(out, 0, 255).astype(np.uint8)


def _composite(background: np.ndarray, fg: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    out = background.astype(np.float32) * (1 - a) + fg * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _thin_structure(bank: ObjectBank, pool: SyntheticPool, rng: np.random.Generator, size: int, kind: str,
                    cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    if kind == "crack":  # its own scene: a dark crack in a surface, coloured like the surface it splits
        background = surface_texture(bank, pool, rng, size)
        alpha = STRUCTURES[kind](rng, size, cfg)
        fg = background.astype(np.float32) * rng.uniform(0.15, 0.5) + rng.normal(0, 3, (size, size, 1))
        fg = np.clip(fg, 0, 255).astype(np.float32)
    else:
        background = random_crop(bank.images[_random_image(pool, rng)], rng, size)
        alpha = STRUCTURES[kind](rng, size, cfg)
        fg = _foreground(bank, pool, rng, size, background, alpha, cfg)
    soft = alpha
    if rng.random() < cfg.blur_probability:  # slight defocus of the structure only (mask stays the sharp one)
        soft = cv2.GaussianBlur(alpha, (0, 0), rng.uniform(0.3, 0.7))
    return _composite(background, fg, soft), alpha >= 0.5


def _cutout(bank: ObjectBank, pool: SyntheticPool, rng: np.random.Generator, size: int,
            cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """Paste a random bank object onto a crop of another bank photo; a wire may occlude it."""
    index = int(pool.objects[rng.integers(len(pool.objects))])
    obj = bank.objects[index]
    background = random_crop(bank.images[_random_image(pool, rng, exclude=obj.image_index)], rng, size)
    x0, y0, x1, y1 = obj.bbox
    image = bank.image(index)[y0:y1, x0:x1]
    mask = bank.mask(index)[y0:y1, x0:x1].astype(np.float32)
    scale = rng.uniform(*cfg.cutout_scale) * size / max(x1 - x0, y1 - y0)
    w, h = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    if max(w, h) > size:
        f = size / max(w, h)
        w, h, scale = max(1, int(w * f)), max(1, int(h * f)), scale * f
    flip = rng.random() < 0.5
    px = int(rng.integers(-w // 4, size - w + w // 4 + 1))
    py = int(rng.integers(-h // 4, size - h + h // 4 + 1))
    sx = -scale if flip else scale  # maps source pixel centres to destination pixel centres
    m = np.array([[sx, 0.0, px + (w if flip else 0) - 0.5 + 0.5 * sx],
                  [0.0, scale, py - 0.5 + 0.5 * scale]], dtype=np.float64)
    interp = cv2.INTER_LINEAR if scale >= 0.5 else cv2.INTER_AREA
    fg = cv2.warpAffine(image, m, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    alpha = cv2.warpAffine(mask, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=0)
    out_mask = alpha >= 0.5
    soft = cv2.GaussianBlur(alpha, (0, 0), 0.6)  # a slightly feathered edge hides the paste seam
    composite = _composite(background, fg, soft)
    if rng.random() < cfg.occluder_probability:
        occ = draw_wires(rng, size, cfg)
        occ_fg = _foreground(bank, pool, rng, size, composite, occ, cfg)
        composite = _composite(composite, occ_fg, occ)
        out_mask &= ~(occ >= 0.5)
    return composite, out_mask


def synthetic_view(bank: ObjectBank, rng: np.random.Generator, view: ViewConfig,
                   cfg: SyntheticConfig | None = None, kind: str | None = None,
                   pool: SyntheticPool | None = None) -> View:
    """One synthetic training view (same layout as :func:`finecut.training.augment.random_view`).

    ``kind`` forces one of :data:`KINDS`; by default it is drawn from ``cfg.kind_weights``. Draws are retried until
    the low-resolution mask has at least ``view.min_object_pixels`` pixels (thin structures may vanish there).
    ``pool`` restricts the bank objects used (cutouts) and the photos used (backgrounds, textures), e.g. to the
    training split (``SyntheticPool.of(bank, train_indices)``); default: the whole bank.
    """
    cfg = cfg or SyntheticConfig()
    pool = pool or SyntheticPool.of(bank, None)
    if kind is not None and kind not in KINDS:
        raise FinecutError(f"unknown synthetic kind {kind!r} (expected one of {KINDS})")
    names = [k for k in KINDS if cfg.kind_weights.get(k, 0) > 0]
    probs = np.array([cfg.kind_weights[k] for k in names], dtype=np.float64)
    probs /= probs.sum()
    hi = view.size * view.hi_factor
    for attempt in range(cfg.tries):
        chosen = kind or names[int(rng.choice(len(names), p=probs))]
        if chosen == "cutout":
            image_hi, mask_hi = _cutout(bank, pool, rng, hi, cfg)
        else:
            image_hi, mask_hi = _thin_structure(bank, pool, rng, hi, chosen, cfg)
        mask = cv2.resize(mask_hi.astype(np.float32), (view.size, view.size), interpolation=cv2.INTER_AREA) > 0.5
        if mask.sum() >= view.min_object_pixels:
            break
        if attempt == cfg.tries - 2:  # last try: a plain, clearly visible cable always succeeds
            kind = "wires"
            cfg = SyntheticConfig(kind_weights={"wires": 1.0}, wire_width=(4.0, 6.0))
    image_hi = color_jitter(image_hi, rng, view)
    image = cv2.resize(image_hi, (view.size, view.size), interpolation=cv2.INTER_AREA)
    return View(image, mask, image_hi, mask_hi)
