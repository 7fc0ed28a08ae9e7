"""Synthetic alpha-matte composites with exact fractional alpha, for FocalClick-XL's Detail-Net.

No matting dataset exists offline, so alpha ground truth is rendered: a foreground — a body (a procedural blob or a
real object cut-out given as image + mask) with procedural hair, fur or wires, or wires alone — is drawn at
``supersample`` (4) times the output resolution as binary coverage layers (OpenCV, no anti-aliasing, sub-pixel
coordinates), each layer with its colours and an opacity, composited with the "over" operator at that resolution,
and area-downsampled. The alpha is the exact mean coverage (times opacity) of each output pixel, and the image is
composited with exactly that alpha from the premultiplied colour::

    image = premultiplied_foreground + (1 - alpha) * background

so image and alpha agree to the uint8 rounding of the image. Strands are 0.25-1.5 output pixels wide, so hair, fur
and wires carry fractional alpha; the binary ground truth is ``alpha > 0.5``.

:func:`render_alpha_composite` is deterministic: everything random comes from ``numpy.random.default_rng(seed)``.
The renders are synthetic; model cards must say that the Detail-Net's alpha supervision comes from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from finecut.errors import FinecutError

#: Foreground kinds: a body with long hair, a body with short fur all round, wires alone, a plain cut-out body.
KINDS: tuple[str, ...] = ("hair", "fur", "wires", "cutout")
_SHIFT = 4  # fixed-point bits of cv2 drawing coordinates

#: Hair colours (RGB): black, dark brown, brown, auburn, blond, grey.
_HAIR_COLOURS = np.array([[25, 20, 18], [60, 40, 28], [110, 75, 45], [140, 60, 30], [215, 185, 120], [170, 170, 165]],
                         np.float32)


@dataclass(frozen=True)
class AlphaSynthConfig:
    """Sizes and counts of the procedural foregrounds (lengths and widths in output pixels)."""

    object_scale: tuple[float, float] = (0.35, 0.75)  # foreground box side / min(image side)
    hair_strands: tuple[int, int] = (120, 360)
    hair_length: tuple[float, float] = (0.15, 0.45)  # times the body's size
    hair_width: tuple[float, float] = (0.25, 1.25)
    fur_density: tuple[float, float] = (0.8, 2.0)  # strands per boundary pixel
    fur_length: tuple[float, float] = (2.0, 8.0)
    fur_width: tuple[float, float] = (0.25, 0.75)
    wires: tuple[int, int] = (1, 5)
    wire_width: tuple[float, float] = (0.3, 3.0)
    layers: int = 4  # strand layers of different opacity
    opacity: tuple[float, float] = (0.55, 1.0)
    min_contrast: float = 30.0


@dataclass(frozen=True)
class AlphaComposite:
    """One render: ``image`` uint8 (H, W, 3), ``alpha`` float32 (H, W) in [0, 1], ``gt`` bool (``alpha > 0.5``),
    ``foreground`` float32 (H, W, 3) the foreground colour (0..255; zero where alpha is 0), ``background`` uint8,
    ``kind`` and ``box`` (x0, y0, x1, y1) the region drawn into."""

    image: np.ndarray
    alpha: np.ndarray
    gt: np.ndarray
    foreground: np.ndarray
    background: np.ndarray
    kind: str
    box: tuple[int, int, int, int]


class _Canvas:
    """Premultiplied colour and alpha at the supersampled resolution, composited layer by layer ("over")."""

    def __init__(self, height: int, width: int, ss: int) -> None:
        self.ss = ss
        self.shape = (height * ss, width * ss)
        self.alpha = np.zeros(self.shape, np.float32)
        self.premult = np.zeros(self.shape + (3,), np.float32)

    def layer(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(self.shape, np.uint8), np.zeros(self.shape + (3,), np.uint8)

    def over(self, coverage: np.ndarray, colour: np.ndarray, opacity: float = 1.0) -> None:
        a = coverage.astype(np.float32) * np.float32(opacity)
        inv = 1.0 - a
        self.premult *= inv[..., None]
        self.premult += a[..., None] * colour.astype(np.float32)
        self.alpha *= inv
        self.alpha += a

    def points(self, xy: np.ndarray) -> np.ndarray:
        """Output-pixel (x, y) points (pixel centres at integers) -> cv2 fixed-point points on this canvas."""
        scaled = (np.asarray(xy, np.float64) + 0.5) * self.ss - 0.5
        return np.round(scaled * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)

    def downsample(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        alpha = cv2.resize(self.alpha, (width, height), interpolation=cv2.INTER_AREA)
        premult = cv2.resize(self.premult, (width, height), interpolation=cv2.INTER_AREA)
        return np.clip(alpha, 0.0, 1.0), np.maximum(premult, 0.0)


def _thickness(width: float, ss: int) -> int:
    return max(1, round(width * ss))


def _blob_mask(rng: np.random.Generator, height: int, width: int, ss: int) -> np.ndarray:
    """A smooth random star-shaped blob filling most of an (height, width) box, binary at the supersampled size."""
    n = 256
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    radius = np.ones(n)
    for k in range(2, 7):
        radius += rng.uniform(0, 0.22 / (k - 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    radius /= radius.max()
    cx, cy = (width - 1) / 2, (height - 1) / 2
    xy = np.stack([cx + radius * np.cos(theta) * (width / 2 - 1), cy + radius * np.sin(theta) * (height / 2 - 1)], 1)
    mask = np.zeros((height * ss, width * ss), np.uint8)
    scaled = np.round(((xy + 0.5) * ss - 0.5) * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(mask, [scaled], 1, cv2.LINE_8, _SHIFT)
    return mask


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int = 6) -> np.ndarray:
    """Low-frequency noise in [-1, 1] of shape (height, width)."""
    coarse = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(-1, 1)


def _body_colour(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    base = rng.uniform(20, 235, 3).astype(np.float32)
    shade = _smooth_noise(rng, *shape)[..., None] * rng.uniform(10, 45)
    grain = rng.normal(0, rng.uniform(2, 9), shape + (3,)).astype(np.float32)
    return np.clip(base + shade + grain, 0, 255).astype(np.uint8)


def _boundary(mask: np.ndarray, ss: int) -> tuple[np.ndarray, np.ndarray]:
    """Points (output pixels) along a supersampled body mask's outer boundary and their outward unit normals."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return np.zeros((0, 2)), np.zeros((0, 2))
    contour = max(contours, key=len).reshape(-1, 2).astype(np.float64)
    step = max(1, ss // 2)
    contour = contour[::step]
    tangent = np.roll(contour, -2, 0) - np.roll(contour, 2, 0)
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], 1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True).clip(1e-6)
    # orient outwards: a step along the normal must leave the mask
    probe = np.round(contour + normal * 2 * ss).astype(int)
    h, w = mask.shape
    inside = mask[probe[:, 1].clip(0, h - 1), probe[:, 0].clip(0, w - 1)] > 0
    normal[inside] *= -1
    points = (contour + 0.5) / ss - 0.5
    return points, normal


def _strands(rng: np.random.Generator, roots: np.ndarray, directions: np.ndarray, lengths: np.ndarray,
             curl: float, gravity: float, steps: int = 12) -> np.ndarray:
    """Curved polylines (N, steps + 1, 2) from ``roots`` along ``directions``, each about ``lengths`` output pixels
    long, turning randomly (``curl`` radians per step) and bending downwards (``gravity``)."""
    n = len(roots)
    angle = np.arctan2(directions[:, 1], directions[:, 0])
    pos = roots.astype(np.float64)
    seg = (lengths / steps)[:, None]
    pts = [pos]
    turns = rng.normal(0.0, curl, (steps, n))
    for step in range(steps):
        angle = angle + turns[step]
        d = np.stack([np.cos(angle), np.sin(angle) + gravity], 1)
        d /= np.linalg.norm(d, axis=1, keepdims=True).clip(1e-6)
        angle = np.arctan2(d[:, 1], d[:, 0])
        pos = pos + d * seg
        pts.append(pos)
    return np.stack(pts, 1)


def _strand_colours(rng: np.random.Generator, body: np.ndarray | None, count: int) -> np.ndarray:
    if body is not None and rng.random() < 0.5:
        base = body.reshape(-1, 3).mean(0)
    else:
        base = _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))]
    return np.clip(base[None] + rng.normal(0, 14, (count, 3)), 0, 255)


def _draw_strands(canvas: _Canvas, rng: np.random.Generator, strands: list[np.ndarray], widths: np.ndarray,
                  colours: np.ndarray, layers: int, opacity: tuple[float, float]) -> None:
    """Draw strands into ``layers`` coverage layers (each with its own opacity), composited over the canvas."""
    order = rng.permutation(len(strands))
    for group in np.array_split(order, max(1, layers)):
        if not len(group):
            continue
        coverage, colour = canvas.layer()
        for i in group:
            pts = canvas.points(strands[i])
            c = tuple(int(v) for v in colours[i])
            thickness = _thickness(float(widths[i]), canvas.ss)
            cv2.polylines(coverage, [pts], False, 1, thickness, cv2.LINE_8, _SHIFT)
            cv2.polylines(colour, [pts], False, c, thickness, cv2.LINE_8, _SHIFT)
        canvas.over(coverage, colour, float(rng.uniform(*opacity)))


def _bezier(control: np.ndarray, n: int = 64) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    a, b, c, d = control
    return (1 - t) ** 3 * a + 3 * (1 - t) ** 2 * t * b + 3 * (1 - t) * t ** 2 * c + t ** 3 * d


def _wires(canvas: _Canvas, rng: np.random.Generator, height: int, width: int, cfg: AlphaSynthConfig) -> None:
    count = int(rng.integers(cfg.wires[0], cfg.wires[1] + 1))
    strands, widths = [], []
    for _ in range(count):
        side = rng.integers(2)
        if side == 0:  # left to right
            ends = [[-2, rng.uniform(0, height)], [width + 1, rng.uniform(0, height)]]
        else:  # top to bottom
            ends = [[rng.uniform(0, width), -2], [rng.uniform(0, width), height + 1]]
        a, d = np.array(ends, np.float64)
        b = a + (d - a) / 3 + rng.normal(0, 0.2 * min(height, width), 2)
        c = a + 2 * (d - a) / 3 + rng.normal(0, 0.2 * min(height, width), 2)
        strands.append(_bezier(np.stack([a, b, c, d]), 96))
        widths.append(rng.uniform(*cfg.wire_width))
    colours = _strand_colours(rng, None, count) if rng.random() < 0.5 else rng.uniform(0, 255, (count, 3))
    _draw_strands(canvas, rng, strands, np.array(widths), colours, 1, (1.0, 1.0))


def _fit_object(obj: tuple[np.ndarray, np.ndarray], height: int, width: int, ss: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """A real cut-out (rgb, mask) resized into the inner box, supersampled: (binary mask, colours)."""
    rgb, mask = obj
    if rgb.shape[:2] != mask.shape[:2] or not mask.any():
        raise FinecutError("an object cut-out is an (H, W, 3) image and a non-empty (H, W) mask")
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    rgb, m = rgb[y0:y1, x0:x1], mask[y0:y1, x0:x1].astype(np.float32)
    scale = min(height / m.shape[0], width / m.shape[1])
    oh, ow = max(1, int(m.shape[0] * scale)), max(1, int(m.shape[1] * scale))
    big_m = cv2.resize(m, (ow * ss, oh * ss), interpolation=cv2.INTER_LINEAR)
    big_rgb = cv2.resize(rgb, (ow * ss, oh * ss), interpolation=cv2.INTER_LINEAR)
    out_m = np.zeros((height * ss, width * ss), np.uint8)
    out_rgb = np.zeros((height * ss, width * ss, 3), np.uint8)
    oy, ox = (height - oh) // 2 * ss, (width - ow) // 2 * ss
    out_m[oy:oy + oh * ss, ox:ox + ow * ss] = big_m >= 0.5
    out_rgb[oy:oy + oh * ss, ox:ox + ow * ss] = big_rgb
    return out_m, out_rgb


def _contrast(colour_mean: np.ndarray, background: np.ndarray, min_contrast: float) -> np.ndarray:
    """A shift of the foreground colours that keeps their mean at least ``min_contrast`` from the background's."""
    diff = colour_mean - background.reshape(-1, 3).mean(0)
    gap = np.abs(diff).mean()
    if gap >= min_contrast:
        return np.zeros(3, np.float32)
    sign = np.where(background.reshape(-1, 3).mean(0) > 127, -1.0, 1.0)
    return (sign * (min_contrast - gap) * 1.5).astype(np.float32)


def render_alpha_composite(background: np.ndarray, seed: int, kind: str | None = None,
                           obj: tuple[np.ndarray, np.ndarray] | None = None, supersample: int = 4,
                           config: AlphaSynthConfig | None = None) -> AlphaComposite:
    """Render a foreground of ``kind`` (random among :data:`KINDS` when None) onto ``background`` (uint8 RGB photo;
    the composite has its size) with exact fractional alpha. ``obj`` = (rgb, mask) uses a real object cut-out as
    the body (kinds ``hair``, ``fur``, ``cutout``) instead of a procedural blob. Deterministic in ``seed``."""
    cfg = config or AlphaSynthConfig()
    if background.ndim != 3 or background.shape[2] != 3 or background.dtype != np.uint8:
        raise FinecutError(f"background must be a uint8 (H, W, 3) image, got {background.dtype} {background.shape}")
    if supersample < 1:
        raise FinecutError(f"supersample must be >= 1, got {supersample}")
    rng = np.random.default_rng(seed)
    kind = str(rng.choice(KINDS)) if kind is None else kind
    if kind not in KINDS:
        raise FinecutError(f"unknown alpha-composite kind {kind!r}; known: {', '.join(KINDS)}")
    height, width = background.shape[:2]
    ss = int(supersample)

    if kind == "wires":
        box = (0, 0, width, height)
    else:
        side = int(min(height, width) * rng.uniform(*cfg.object_scale))
        bh = max(8, min(height, int(side * rng.uniform(0.8, 1.25))))
        bw = max(8, min(width, int(side * rng.uniform(0.8, 1.25))))
        y0, x0 = int(rng.integers(0, height - bh + 1)), int(rng.integers(0, width - bw + 1))
        box = (x0, y0, x0 + bw, y0 + bh)
    x0, y0, x1, y1 = box
    bh, bw = y1 - y0, x1 - x0
    canvas = _Canvas(bh, bw, ss)
    region = background[y0:y1, x0:x1]

    body_mask = body_rgb = None
    if kind == "wires":
        _wires(canvas, rng, bh, bw, cfg)
    else:
        # the body sits in the middle of the box, leaving room for strands
        margin = 0.0 if kind == "cutout" else (0.3 if kind == "hair" else 0.12)
        ih, iw = max(4, int(bh * (1 - margin))), max(4, int(bw * (1 - margin)))
        if obj is not None:
            inner_mask, inner_rgb = _fit_object(obj, ih, iw, ss)
        else:
            inner_mask = _blob_mask(rng, ih, iw, ss)
            inner_rgb = _body_colour(rng, inner_mask.shape)
        oy, ox = (bh - ih) // 2 * ss, (bw - iw) // 2 * ss
        body_mask = np.zeros(canvas.shape, np.uint8)
        body_rgb = np.zeros(canvas.shape + (3,), np.uint8)
        body_mask[oy:oy + ih * ss, ox:ox + iw * ss] = inner_mask
        body_rgb[oy:oy + ih * ss, ox:ox + iw * ss] = inner_rgb
        inside = body_mask > 0
        if inside.any():
            shift = _contrast(body_rgb[inside].astype(np.float32).mean(0), region, cfg.min_contrast)
            body_rgb = np.clip(body_rgb.astype(np.float32) + shift, 0, 255).astype(np.uint8)
        canvas.over(body_mask, body_rgb)
        points, normals = _boundary(body_mask, ss)
        if kind in ("hair", "fur") and len(points):
            size = float(max(ih, iw))
            if kind == "hair":
                count = int(rng.integers(cfg.hair_strands[0], cfg.hair_strands[1] + 1))
                # roots on the upper part of the boundary, a little inside the body
                upper = normals[:, 1] < rng.uniform(-0.2, 0.4)
                pool = np.flatnonzero(upper) if upper.any() else np.arange(len(points))
                roots = pool[rng.integers(0, len(pool), count)]
                lengths = rng.uniform(*cfg.hair_length, count) * size
                widths = rng.uniform(*cfg.hair_width, count)
                curl, gravity = rng.uniform(0.03, 0.15), rng.uniform(0.05, 0.6)
            else:
                perimeter = len(points) * max(1, ss // 2) / ss  # output pixels (boundary points are every ss//2 px)
                count = int(perimeter * rng.uniform(*cfg.fur_density))
                roots = rng.integers(0, len(points), count)
                lengths = rng.uniform(*cfg.fur_length, count)
                widths = rng.uniform(*cfg.fur_width, count)
                curl, gravity = rng.uniform(0.05, 0.25), rng.uniform(0.0, 0.2)
            directions = normals[roots] + rng.normal(0, 0.35, (len(roots), 2))
            starts = points[roots] - normals[roots] * rng.uniform(0.5, 2.5, (len(roots), 1))
            strands = list(_strands(rng, starts, directions, lengths, curl, gravity, 12 if kind == "hair" else 4))
            colours = _strand_colours(rng, body_rgb[inside] if inside.any() else None, len(strands))
            shift = _contrast(colours.mean(0), region, cfg.min_contrast)
            _draw_strands(canvas, rng, strands, widths, np.clip(colours + shift, 0, 255), cfg.layers, cfg.opacity)
        if rng.random() < 0.3:  # a few stray wires / strands across the object (thin occluders of the same fg)
            _wires(canvas, rng, bh, bw, AlphaSynthConfig(wires=(1, 2), wire_width=(0.3, 1.0)))

    alpha_box, premult_box = canvas.downsample(bh, bw)
    alpha = np.zeros((height, width), np.float32)
    premult = np.zeros((height, width, 3), np.float32)
    alpha[y0:y1, x0:x1] = alpha_box
    premult[y0:y1, x0:x1] = premult_box
    image = premult + (1.0 - alpha[..., None]) * background.astype(np.float32)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    foreground = np.where(alpha[..., None] > 0, premult / np.maximum(alpha[..., None], 1e-6), 0.0)
    foreground = np.clip(foreground, 0, 255).astype(np.float32)
    return AlphaComposite(image=image, alpha=alpha, gt=alpha > 0.5, foreground=foreground,
                          background=background, kind=kind, box=box)


__all__ = ["KINDS", "AlphaComposite", "AlphaSynthConfig", "render_alpha_composite"]
