"""COCO instances JSON as input: validated reading, masks from RLE or polygons, boxes as prompts.

:func:`read_coco` checks the structure strictly (pydantic, strict types, finite numbers) and answers a one-line
:class:`FinecutError` naming the first bad fields. A COCO ``file_name`` matches an image of a folder by its exact name,
else by its last path component (``train/cat.jpg`` matches ``cat.jpg``) when that is unambiguous.

Masks are decoded as COCO readers do: compressed or uncompressed RLE with pycocotools, polygons rasterised with
pycocotools' ``frPyObjects`` (so a polygon that finecut exported comes back as the same pixels a COCO reader sees).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated, Any

import numpy as np
from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, Strict, ValidationError

from finecut.errors import FinecutError
from finecut.export import polygons_to_mask, rle_to_mask
from finecut.importers.base import ImageImport, ImportedObject, resolve_label
from finecut.prompts import Box

#: Largest COCO file read (bytes).
MAX_COCO_BYTES = 256 * 1024 * 1024

_Number = Annotated[float, Strict(), AllowInfNan(False)]
_Int = Annotated[int, Strict()]


class _Rle(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    size: Annotated[list[Annotated[int, Strict(), Field(ge=1, le=1_000_000)]], Field(min_length=2, max_length=2)]
    counts: str | list[Annotated[int, Strict(), Field(ge=0)]]


class _Annotation(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    id: _Int | None = None
    image_id: _Int
    category_id: _Int
    segmentation: _Rle | list[list[_Number]] | None = None
    bbox: Annotated[list[_Number], Field(min_length=4, max_length=4)] | None = None
    iscrowd: Annotated[int, Strict(), Field(ge=0, le=1)] = 0
    score: _Number | None = None


class _Image(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    id: _Int
    file_name: Annotated[str, Field(min_length=1, max_length=2000)]
    height: Annotated[int, Strict(), Field(ge=1)]
    width: Annotated[int, Strict(), Field(ge=1)]


class _Category(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    id: _Int
    name: Annotated[str, Field(min_length=1, max_length=200)]


class _Coco(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    images: list[_Image]
    annotations: list[_Annotation] = Field(default_factory=list)
    categories: list[_Category] = Field(default_factory=list)


@dataclass(frozen=True)
class CocoAnnotation:
    """One annotation: ``index`` (its position in the file, from 1), ``id``, ``label`` (the category name),
    ``category_id``, and its ``segmentation`` (RLE dict, polygon list, or None), ``bbox`` (x, y, w, h) and ``score``."""

    index: int
    id: int | None
    image_id: int
    category_id: int
    label: str
    segmentation: dict[str, Any] | list[list[float]] | None
    bbox: tuple[float, float, float, float] | None
    score: float | None

    @property
    def name(self) -> str:
        return f"annotation {self.id}" if self.id is not None else f"annotation #{self.index}"

    def box(self) -> Box | None:
        """The bbox as a :class:`Box` (x0, y0, x1, y1); None without one."""
        if self.bbox is None:
            return None
        x, y, w, h = self.bbox
        return Box(x, y, x + w, y + h)


@dataclass(frozen=True)
class CocoImage:
    id: int
    file_name: str
    height: int
    width: int


class CocoFile:
    """A validated COCO instances file: its images, categories (id -> name) and annotations by image."""

    def __init__(self, data: _Coco, source: str) -> None:
        self.source = source
        self.categories: dict[int, str] = {}
        for cat in data.categories:
            if cat.id in self.categories:
                raise FinecutError(f"{source}: category id {cat.id} appears twice")
            self.categories[cat.id] = cat.name.strip() or str(cat.id)
        self.images: dict[int, CocoImage] = {}
        for img in data.images:
            if img.id in self.images:
                raise FinecutError(f"{source}: image id {img.id} appears twice")
            self.images[img.id] = CocoImage(img.id, img.file_name, img.height, img.width)
        self.annotations: dict[int, list[CocoAnnotation]] = defaultdict(list)
        self.problems: list[str] = []
        for i, ann in enumerate(data.annotations, start=1):
            where = f"annotation {ann.id}" if ann.id is not None else f"annotation #{i}"
            if ann.image_id not in self.images:
                self.problems.append(f"{source}: {where} names image id {ann.image_id}, which the file does not list")
                continue
            label = self.categories.get(ann.category_id)
            if label is None:
                self.problems.append(f"{source}: {where} has category id {ann.category_id}, which the file does not "
                                     "list")
                continue
            seg = ann.segmentation.model_dump() if isinstance(ann.segmentation, _Rle) else ann.segmentation
            bbox = tuple(ann.bbox) if ann.bbox is not None else None
            self.annotations[ann.image_id].append(
                CocoAnnotation(i, ann.id, ann.image_id, ann.category_id, label, seg, bbox, ann.score))
        self._by_name: dict[str, CocoImage] = {}
        self._by_base: dict[str, list[CocoImage]] = defaultdict(list)
        for img in self.images.values():
            self._by_name.setdefault(img.file_name, img)
            self._by_base[_basename(img.file_name)].append(img)

    def image(self, name: str) -> CocoImage | None:
        """The COCO image of folder image ``name``: by exact file name, else by unambiguous base name."""
        if name in self._by_name:
            return self._by_name[name]
        found = self._by_base.get(name, [])
        if len(found) > 1:
            names = ", ".join(repr(i.file_name) for i in found[:3])
            raise FinecutError(f"{self.source}: {name!r} matches several images ({names}); give them distinct names")
        return found[0] if found else None

    def annotations_of(self, image: CocoImage) -> list[CocoAnnotation]:
        return list(self.annotations.get(image.id, []))


def _basename(file_name: str) -> str:
    return PureWindowsPath(PurePosixPath(file_name).name).name


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.get("loc", ())).lstrip(".")
        parts.append(f"{loc or 'file'}: {err.get('msg', 'invalid value')}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def parse_coco(data: bytes | str, source: str = "COCO file") -> CocoFile:
    """Validate COCO JSON text; a :class:`FinecutError` names the first bad fields."""
    if len(data) > MAX_COCO_BYTES:
        raise FinecutError(f"{source}: {len(data) / 1e6:.0f} MB, over the limit of {MAX_COCO_BYTES / 1e6:.0f} MB")
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise FinecutError(f"{source}: not valid JSON{where}") from None
    except RecursionError:
        raise FinecutError(f"{source}: JSON nested too deeply") from None
    if not isinstance(raw, dict) or "images" not in raw:
        raise FinecutError(f"{source}: not a COCO file (expected an object with \"images\", \"annotations\" and "
                           "\"categories\")")
    try:
        parsed = _Coco.model_validate(raw)
    except ValidationError as exc:
        raise FinecutError(f"{source}: invalid COCO file: {_describe(exc)}") from None
    return CocoFile(parsed, source)


def read_coco(path: str | Path) -> CocoFile:
    """Read and validate a COCO instances file."""
    p = Path(path)
    if not p.is_file():
        raise FinecutError(f"{p}: COCO file not found")
    size = p.stat().st_size
    if size > MAX_COCO_BYTES:
        raise FinecutError(f"{p}: {size / 1e6:.0f} MB, over the limit of {MAX_COCO_BYTES / 1e6:.0f} MB")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise FinecutError(f"{p}: cannot read ({exc.strerror or exc})") from None
    return parse_coco(data, str(p))


def is_coco(data: Any) -> bool:
    """Whether parsed JSON looks like a COCO instances file (rather than finecut's own prompts mapping)."""
    return isinstance(data, dict) and isinstance(data.get("images"), list) and isinstance(data.get("annotations"), list)


def annotation_mask(ann: CocoAnnotation, height: int, width: int) -> np.ndarray:
    """The annotation's mask (bool ``height`` × ``width``), as a COCO reader rasterises it."""
    seg = ann.segmentation
    if isinstance(seg, dict):
        size = tuple(int(v) for v in seg["size"])
        if size != (height, width):
            raise FinecutError(f"{ann.name}: RLE size {list(size)} differs from the image's {[height, width]}")
        return rle_to_mask(seg)
    if not seg:
        raise FinecutError(f"{ann.name} has no segmentation (only a box): turn boxes into masks with "
                           "'finecut segment --batch COCO.json', then import its result")
    polygons = [p for p in seg if len(p) >= 6 and len(p) % 2 == 0]
    if len(polygons) != len(seg):
        raise FinecutError(f"{ann.name}: a polygon needs an even number of coordinates, at least 6")
    return polygons_to_mask(polygons, height, width)


def coco_image_objects(coco: CocoFile, name: str, height: int, width: int,
                       labels: Sequence[str] | None = None) -> ImageImport | None:
    """The objects of folder image ``name`` (displayed size ``height`` × ``width``) in ``coco``; None when the file
    does not list the image. ``labels``: the label set; categories outside it are reported, not imported."""
    image = coco.image(name)
    if image is None:
        return None
    out = ImageImport(name)
    if (image.height, image.width) != (height, width):
        out.problems.append(f"{name}: {coco.source} says {image.width}x{image.height}, the image is "
                            f"{width}x{height}; nothing imported")
        return out
    for ann in coco.annotations_of(image):
        label = resolve_label(ann.label, labels)
        if label is None:
            out.problems.append(f"{name}: {ann.name}: category {ann.label!r} is not in the label set")
            continue
        try:
            mask = annotation_mask(ann, height, width)
        except FinecutError as exc:
            out.problems.append(f"{name}: {exc}")
            continue
        if not mask.any():
            out.problems.append(f"{name}: {ann.name} has an empty mask")
            continue
        out.objects.append(ImportedObject(label, mask, f"{Path(coco.source).name} {ann.name}"))
    return out
