"""Prompts a person gives (clicks, boxes, scribbles, prior masks) and their encoding to network input.

Public coordinates are ``(x, y)`` in original image pixels (column, row), like SAM. Encoding draws binary disks of a
fixed radius (5 px by default) at *network* resolution, one channel per click kind, so a click has the same footprint
whatever the size of the original image. :func:`click_window` is the one disk geometry; assembling the maps into a
network's input channels is :mod:`finecut.model_inputs`'.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from finecut.errors import FinecutError


def _finite(value: object) -> bool:
    """Whether ``value`` is a finite real number (not a bool or a string): what a coordinate may be."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        return False
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # not a number, or an integer too large for a float
        return False


def _shown(value: object) -> str:
    """A short rendering of a value for an error message (a huge integer is not printed digit by digit)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return "a huge integer"
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


class ClickKind(str, enum.Enum):
    """The three click types: a precise positive or negative click, and NTClick's noise-tolerant click."""

    POSITIVE = "positive"
    NEGATIVE = "negative"
    TOLERANT = "tolerant"

    @classmethod
    def parse(cls, value: "ClickKind | str | bool") -> "ClickKind":
        """Accept a ClickKind, its name, a common abbreviation (pos/neg/tol, +/-/~) or a bool (True = positive)."""
        if isinstance(value, ClickKind):
            return value
        if isinstance(value, (bool, np.bool_)):
            return cls.POSITIVE if value else cls.NEGATIVE
        key = str(value).strip().lower()
        aliases = {
            "positive": cls.POSITIVE, "pos": cls.POSITIVE, "p": cls.POSITIVE, "+": cls.POSITIVE, "fg": cls.POSITIVE,
            "negative": cls.NEGATIVE, "neg": cls.NEGATIVE, "n": cls.NEGATIVE, "-": cls.NEGATIVE, "bg": cls.NEGATIVE,
            "tolerant": cls.TOLERANT, "tol": cls.TOLERANT, "t": cls.TOLERANT, "~": cls.TOLERANT,
            "noise-tolerant": cls.TOLERANT,
        }
        if key not in aliases:
            raise FinecutError(f"unknown click kind {value!r}: use positive, negative or tolerant")
        return aliases[key]


#: Channel order of encoded click maps.
CLICK_CHANNELS: tuple[ClickKind, ...] = (ClickKind.POSITIVE, ClickKind.NEGATIVE, ClickKind.TOLERANT)


@dataclass(frozen=True)
class Click:
    """One click at ``(x, y)`` in original image pixels."""

    x: float
    y: float
    kind: ClickKind = ClickKind.POSITIVE

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ClickKind.parse(self.kind))
        for name in ("x", "y"):
            value = getattr(self, name)
            if not _finite(value):
                raise FinecutError(f"click {name}={_shown(value)} is not a finite number")

    @property
    def is_positive(self) -> bool:
        return self.kind is ClickKind.POSITIVE

    @property
    def is_negative(self) -> bool:
        return self.kind is ClickKind.NEGATIVE

    @property
    def is_tolerant(self) -> bool:
        return self.kind is ClickKind.TOLERANT

    @property
    def pixel(self) -> tuple[int, int]:
        """The (row, col) of the pixel holding the click."""
        return int(np.floor(self.y)), int(np.floor(self.x))

    def check_inside(self, height: int, width: int) -> None:
        if not (0 <= self.x < width and 0 <= self.y < height):
            raise FinecutError(
                f"click ({self.x:g}, {self.y:g}) is outside the {width}x{height} image "
                f"(x must be in [0, {width}), y in [0, {height}))"
            )


@dataclass(frozen=True)
class Box:
    """An axis-aligned box ``[x0, x1) x [y0, y1)`` in original image pixels."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        if not all(_finite(v) for v in self.as_tuple()):
            shown = ", ".join(_shown(v) for v in self.as_tuple())
            raise FinecutError(f"box ({shown}) has a coordinate that is not a finite number")
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise FinecutError(
                f"box {self.as_tuple()} is empty: it needs x0 < x1 and y0 < y1"
            )

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)

    def check_inside(self, height: int, width: int) -> None:
        if self.x0 < 0 or self.y0 < 0 or self.x1 > width or self.y1 > height:
            raise FinecutError(f"box {self.as_tuple()} extends outside the {width}x{height} image")


@dataclass(frozen=True)
class Scribble:
    """A free-hand stroke through ``points`` ((x, y) pairs), marking object (positive) or background."""

    points: tuple[tuple[float, float], ...]
    positive: bool = True
    width: float = 5.0

    def __post_init__(self) -> None:
        try:
            raw = tuple((x, y) for x, y in self.points)
        except (TypeError, ValueError):
            raise FinecutError("a scribble's points must be (x, y) pairs") from None
        if not raw:
            raise FinecutError("a scribble needs at least one point")
        if not all(_finite(v) for p in raw for v in p):
            raise FinecutError("a scribble has a point that is not a finite number")
        pts = tuple((float(x), float(y)) for x, y in raw)
        if not _finite(self.width) or not self.width > 0:
            raise FinecutError(f"scribble width must be a positive number, got {_shown(self.width)}")
        object.__setattr__(self, "points", pts)

    def check_inside(self, height: int, width: int) -> None:
        for x, y in self.points:
            if not (0 <= x < width and 0 <= y < height):
                raise FinecutError(f"scribble point ({x:g}, {y:g}) is outside the {width}x{height} image")


@dataclass(frozen=True)
class Prompts:
    """Everything the user gave for one object so far, validated against the image size."""

    clicks: tuple[Click, ...] = ()
    box: Box | None = None
    scribbles: tuple[Scribble, ...] = ()
    prior_mask: np.ndarray | None = field(default=None, compare=False)

    @property
    def is_empty(self) -> bool:
        return not self.clicks and self.box is None and not self.scribbles and self.prior_mask is None

    def validate(self, height: int, width: int) -> "Prompts":
        for click in self.clicks:
            click.check_inside(height, width)
        if self.box is not None:
            self.box.check_inside(height, width)
        for scribble in self.scribbles:
            scribble.check_inside(height, width)
        if self.prior_mask is not None:
            check_mask_shape(self.prior_mask, (height, width), what="prior mask")
        return self


def as_prompts(
    clicks: Iterable[Click] = (),
    box: Box | Sequence[float] | None = None,
    scribbles: Iterable[Scribble] = (),
    prior_mask: np.ndarray | None = None,
) -> Prompts:
    """Normalize loosely typed prompt arguments into :class:`Prompts` (boxes may be given as 4-sequences)."""
    click_tuple = tuple(clicks)
    for c in click_tuple:
        if not isinstance(c, Click):
            raise FinecutError(f"expected a Click, got {type(c).__name__}: {c!r}")
    if box is not None and not isinstance(box, Box):
        values = tuple(box)
        if len(values) != 4:
            raise FinecutError(f"a box needs 4 numbers (x0, y0, x1, y1), got {values!r}")
        box = Box(*(float(v) for v in values))
    prior = None if prior_mask is None else np.asarray(prior_mask).astype(bool)
    return Prompts(clicks=click_tuple, box=box, scribbles=tuple(scribbles), prior_mask=prior)


def check_mask_shape(mask: np.ndarray, shape: tuple[int, int], what: str = "mask") -> None:
    """Raise a clear error unless ``mask`` is a 2-D array of exactly ``shape`` (height, width)."""
    arr = np.asarray(mask)
    if arr.ndim != 2 or arr.shape != tuple(shape):
        raise FinecutError(
            f"{what} has shape {arr.shape}, but the image is {shape[1]}x{shape[0]} (expected shape {tuple(shape)})"
        )


@dataclass(frozen=True)
class CropTransform:
    """Maps original-image pixel coordinates into a network input of ``out_size`` made from a crop.

    The crop covers ``[x0, x0 + w) x [y0, y0 + h)`` in original pixels and is resized to ``out_size`` (height, width)
    with pixel-centre alignment, as :func:`cv2.resize` does.
    """

    x0: float
    y0: float
    w: float
    h: float
    out_size: tuple[int, int]

    @classmethod
    def identity(cls, height: int, width: int) -> "CropTransform":
        return cls(0.0, 0.0, float(width), float(height), (height, width))

    @classmethod
    def resize(cls, height: int, width: int, out_size: tuple[int, int]) -> "CropTransform":
        return cls(0.0, 0.0, float(width), float(height), out_size)

    @property
    def scale(self) -> tuple[float, float]:
        """(sx, sy): network pixels per original pixel."""
        return self.out_size[1] / self.w, self.out_size[0] / self.h

    def apply(self, x: float, y: float) -> tuple[float, float]:
        """Original (x, y) at a pixel's integer coordinates -> network (x, y) of the same pixel centre."""
        sx, sy = self.scale
        return (x - self.x0 + 0.5) * sx - 0.5, (y - self.y0 + 0.5) * sy - 0.5


def click_window(
    click: Click, transform: CropTransform, radius: float
) -> tuple[slice, slice, np.ndarray | None]:
    """The disk of ``radius`` network pixels around a click: ``(rows, cols, disk)``, the window of the
    network-resolution map that holds it and a bool array of the window's shape (None when the disk misses the map).

    The one click-disk geometry of finecut: the disk is centred on the network position of the clicked pixel's
    centre (:meth:`CropTransform.apply` of the floored click) and holds the pixel centres within ``radius`` of it.
    :func:`click_disks`, the classical engines' seeds, NTClick's click rules and the click-honour rule draw with it.
    """
    height, width = transform.out_size
    cx, cy = transform.apply(np.floor(click.x), np.floor(click.y))
    y_lo, y_hi = max(0, int(np.floor(cy - radius))), min(height, int(np.ceil(cy + radius)) + 1)
    x_lo, x_hi = max(0, int(np.floor(cx - radius))), min(width, int(np.ceil(cx + radius)) + 1)
    rows, cols = slice(y_lo, max(y_lo, y_hi)), slice(x_lo, max(x_lo, x_hi))
    if y_lo >= y_hi or x_lo >= x_hi:
        return rows, cols, None
    ys = np.arange(y_lo, y_hi, dtype=np.float64)[:, None]
    xs = np.arange(x_lo, x_hi, dtype=np.float64)[None, :]
    return rows, cols, (ys - cy) ** 2 + (xs - cx) ** 2 <= float(radius) ** 2


def click_pixel(click: Click, transform: CropTransform) -> tuple[int, int]:
    """The (row, col) of the network pixel holding a click (clamped into the map)."""
    height, width = transform.out_size
    cx, cy = transform.apply(np.floor(click.x), np.floor(click.y))
    return min(max(int(round(cy)), 0), height - 1), min(max(int(round(cx)), 0), width - 1)


def click_disks(
    clicks: Sequence[Click],
    transform: CropTransform,
    radius: float = 5.0,
) -> np.ndarray:
    """Encode clicks as binary disks at network resolution: float32 array (3, H, W), channels ``CLICK_CHANNELS``.

    Each disk is :func:`click_window`'s; a click whose centre falls outside the crop still marks the part of its disk
    that lies inside. Stacking these with the previous mask in a network's channel layout is
    :mod:`finecut.model_inputs`' job.
    """
    height, width = transform.out_size
    maps = np.zeros((len(CLICK_CHANNELS), height, width), dtype=np.float32)
    for click in clicks:
        rows, cols, disk = click_window(click, transform, radius)
        if disk is None:
            continue
        channel = CLICK_CHANNELS.index(click.kind)
        maps[channel, rows, cols] = np.maximum(maps[channel, rows, cols], disk)
    return maps


def disks_of_kind(clicks: Sequence[Click], kind: ClickKind, shape: tuple[int, int], radius: float) -> np.ndarray:
    """(H, W) bool: the disks of the clicks of ``kind`` at original-image resolution (none when ``radius`` <= 0),
    drawn with :func:`click_window` — one window per click, not a (3, H, W) float map."""
    out = np.zeros(shape, bool)
    if radius <= 0:
        return out
    transform = CropTransform.identity(*shape)
    for c in clicks:
        if c.kind == kind:
            rows, cols, disk = click_window(c, transform, radius)
            if disk is not None:
                out[rows, cols] |= disk
    return out


def scribble_maps(scribbles: Sequence[Scribble], transform: CropTransform) -> np.ndarray:
    """Rasterize scribbles at network resolution: float32 array (2, H, W), channels (positive, negative).

    Stroke width scales with the transform, but never drops below one network pixel.
    """
    height, width = transform.out_size
    maps = np.zeros((2, height, width), dtype=np.uint8)
    sx, sy = transform.scale
    shift = 4  # sub-pixel precision for cv2 drawing
    for scribble in scribbles:
        pts = np.array([transform.apply(x, y) for x, y in scribble.points], dtype=np.float64)
        pts_fixed = np.round(pts * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)
        thickness = max(1, int(round(scribble.width * (sx + sy) / 2)))
        canvas = maps[0 if scribble.positive else 1]
        if len(pts_fixed) == 1:
            cv2.circle(canvas, tuple(pts_fixed[0, 0]), max(1, thickness // 2) << shift, 1, -1, cv2.LINE_8, shift)
        else:
            cv2.polylines(canvas, [pts_fixed], False, 1, thickness, cv2.LINE_8, shift)
    return maps.astype(np.float32)


def box_map(box: Box | None, transform: CropTransform) -> np.ndarray:
    """Rasterize a box as a filled rectangle at network resolution: float32 array (H, W)."""
    height, width = transform.out_size
    out = np.zeros((height, width), dtype=np.float32)
    if box is None:
        return out
    x0, y0 = transform.apply(box.x0 - 0.5, box.y0 - 0.5)
    x1, y1 = transform.apply(box.x1 - 0.5, box.y1 - 0.5)
    c0, r0 = max(0, int(np.ceil(x0))), max(0, int(np.ceil(y0)))
    c1, r1 = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
    out[r0:r1, c0:c1] = 1.0
    return out
