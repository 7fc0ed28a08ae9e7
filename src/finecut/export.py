"""Exports of finished annotations: PNG masks, an instance-id map, and COCO JSON (RLE or polygons).

An export folder is written whole by :func:`export_images`: complete, unambiguous and reproducible.

* Each image has its own key, its file name *with* extension (``cat.jpg`` and ``cat.png`` never share files), made
  file-name-safe; when that changes the name, a hash of the name is appended, so two images never share a key.
* The folder is built beside the target and swapped in (rename), so it never mixes files of two exports: nothing
  stale is left behind (deleted or relabelled objects, removed images). It only replaces a folder holding nothing
  but files of a finecut export; anything else in it stops the export with an error.
* Category ids are stable: ``finecut-export.json`` in the folder remembers every label's id, and a re-export keeps
  them (a new label gets a new id, never the id of a label that went away).
* The same annotations give byte-identical files (no time stamps; images, annotations and categories in a fixed
  order: annotations by object id).
* A label set (``label_ids``) fixes category ids: its classes keep their ids and are all listed in COCO
  ``categories``, used or not; other labels keep the ids of earlier exports where those are free.
* An image's ``status`` (the app's folder progress) is written into its COCO ``images`` entry as
  ``finecut_status``; ``metadata`` adds keys to the manifest (the app writes every image's status and the counts).

PNG
    ``<key>/<key>_obj<ID>_<label>.png`` — one binary mask per object (0 / 255), and ``<key>/<key>_instances.png``
    — the instance-id map (0 = background, pixel value = object id; 8-bit when every id fits, else 16-bit). Where
    objects overlap, the later object of :attr:`ExportImage.objects` (the drawing order: upper objects later) wins in
    the instance map; the per-object PNGs keep the full masks. An object with an alpha matte
    (:attr:`ExportObject.alpha`) also gets ``<key>/<key>_obj<ID>_<label>_alpha.png``, the matte as an 8-bit
    grayscale PNG (its values as given, 0–255), next to its mask. The name is its mask's with ``_alpha`` added, so it
    never equals a mask's name (object ids are unique within an image, and an object has one label: a label
    ``alpha`` gives ``..._obj001_alpha.png`` and ``..._obj001_alpha_alpha.png``); a reader tells a matte from a mask
    by its mask being there too (:func:`is_alpha_file`). The COCO files have no place for mattes and do not refer to
    them.

COCO RLE
    ``coco_rle.json``: a COCO instances file whose ``segmentation`` is a compressed RLE from pycocotools (``counts``
    as a string), exact to the pixel.

COCO polygons
    ``coco_polygons.json``: ``segmentation`` is a list of polygons ``[x0, y0, x1, y1, ...]`` from
    :func:`cv2.findContours` with ``RETR_CCOMP`` (outer boundaries and their holes). **Holes**: COCO polygons have no
    hole syntax and readers fill every polygon, so each hole is cut into its outer polygon through a zero-width
    "bridge" (the outline walks from the outer ring to the hole, around the hole in the opposite direction, and back
    along the same segment). Every connected part becomes one polygon of the list, so multiple parts are kept, and
    pycocotools (``annToMask`` / ``frPyObjects``) rasterises the polygon with the hole left empty. The same geometry
    is also given explicitly, per annotation, as ``"polygons_with_holes": [{"exterior": [...], "holes": [[...]]}]``
    (GeoJSON-like: one entry per part) for tools that want the rings separately.
    ``findContours`` traces the centres of the boundary pixels; every ring is then moved half a pixel outward from the
    object (mitred offset: exteriors grow, holes shrink) so that it runs along the pixel edges and rasterises back to
    nearly the same pixels (IoU about 0.97–0.99 on ordinary shapes, one-pixel-wide lines included). Polygons are an
    approximation all the same: use the RLE file for pixel-exact masks.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from finecut.errors import FinecutError
from finecut.io import atomic_write_bytes, encode_png

#: Export format names accepted by :func:`export_images`.
FORMATS: tuple[str, ...] = ("png", "coco_rle", "coco_polygons")

#: The manifest :func:`export_images` writes into an export folder (labels' category ids, images' keys, files).
MANIFEST = "finecut-export.json"


@dataclass(frozen=True)
class ExportObject:
    """One object to export: id (>= 1), label and bool mask (H×W); optionally a score (COCO ``score``) and an alpha
    matte ``alpha``: uint8 H×W, 0–255 (``round(alpha * 255)``), the mask's shape, written by the PNG export as
    ``<key>_obj<ID>_<label>_alpha.png`` (see the module docstring)."""

    id: int
    label: str
    mask: np.ndarray = field(compare=False)
    score: float | None = None
    alpha: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.alpha is None:
            return
        alpha = np.asarray(self.alpha)
        what = f"object {self.id} ({self.label!r})"
        if alpha.dtype != np.uint8 or alpha.ndim != 2:
            raise FinecutError(f"{what}: an alpha matte must be a 2-D uint8 array (0-255), got {alpha.dtype} "
                               f"with shape {alpha.shape}")
        if alpha.shape != np.shape(self.mask):
            raise FinecutError(f"{what}: alpha matte has shape {alpha.shape}, its mask {np.shape(self.mask)}")


@dataclass(frozen=True)
class ExportImage:
    """One image and its objects (in drawing order, bottom to top). ``file_name`` goes into COCO ``images`` and, by
    default, names the PNG files (see :func:`export_key`); ``stem``, when given, names them instead. ``status``, when
    given, is written into the COCO image entry (``finecut_status``)."""

    file_name: str
    height: int
    width: int
    objects: tuple[ExportObject, ...] = ()
    stem: str | None = None
    status: str | None = None

    @property
    def key(self) -> str:
        """The folder and file-name prefix of this image's PNGs."""
        return safe_name(self.stem) if self.stem else export_key(self.file_name)

    @property
    def name_stem(self) -> str:
        return self.key


def export_key(file_name: str) -> str:
    """An image's key in an export: its file name with extension, file-name-safe; a short hash of the name is
    appended when making it safe changed it, so different names never share a key."""
    safe = safe_name(file_name)
    if safe == file_name:
        return safe
    return f"{safe}-{hashlib.sha1(file_name.encode('utf-8')).hexdigest()[:8]}"


# --------------------------------------------------------------------------- RLE
def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a bool mask, JSON-ready: ``{"size": [h, w], "counts": "..."}``."""
    from pycocotools import mask as mask_utils

    arr = np.asfortranarray(np.asarray(mask, dtype=np.uint8))
    rle = mask_utils.encode(arr)
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (compressed string/bytes counts, or uncompressed list counts) to a bool mask."""
    from pycocotools import mask as mask_utils

    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
        if isinstance(counts, list):
            obj = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        else:
            obj = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        return mask_utils.decode(obj).astype(bool)
    except (KeyError, TypeError, ValueError, UnicodeError) as exc:
        raise FinecutError(f"invalid mask RLE: {type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------- polygons
#: Rings are moved this far from the boundary pixels' centres onto the pixel edges (see the module docstring).
HALF_PIXEL = 0.5

@dataclass(frozen=True)
class PolygonPart:
    """One connected part: its outer ring and its holes, each an (N, 2) float array of (x, y) vertices."""

    exterior: np.ndarray
    holes: tuple[np.ndarray, ...] = ()


def mask_to_parts(mask: np.ndarray, tolerance: float = 0.0, min_area: float = 0.0) -> list[PolygonPart]:
    """Outer boundaries and holes of a mask via ``cv2.findContours(RETR_CCOMP)``.

    ``tolerance`` > 0 simplifies rings with :func:`cv2.approxPolyDP` (in pixels). Parts and holes whose contour area
    is below ``min_area`` are dropped; a single-pixel part is kept as a tiny square so that nothing silently vanishes.
    """
    arr = np.asarray(mask, dtype=bool)
    if arr.ndim != 2:
        raise FinecutError(f"mask must be 2-D, got shape {arr.shape}")
    if not arr.any():
        return []
    contours, hierarchy = cv2.findContours(arr.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hier = hierarchy[0]

    def ring(idx: int, outward: float) -> np.ndarray:
        c = contours[idx]
        if tolerance > 0 and len(c) > 4:
            c = cv2.approxPolyDP(c, tolerance, True)
        pts = c.reshape(-1, 2).astype(np.float64)
        if len(pts) < 3:
            return _thicken(pts) if outward > 0 else pts
        return offset_ring(pts, outward)

    parts: list[PolygonPart] = []
    for i, (_next, _prev, child, parent) in enumerate(hier):
        if parent != -1:
            continue  # a hole: handled with its outer ring
        outer = ring(i, HALF_PIXEL)
        if min_area > 0 and abs(cv2.contourArea(outer.astype(np.float32))) < min_area:
            continue
        holes = []
        c = child
        while c != -1:
            hole = ring(c, -HALF_PIXEL)
            if len(hole) >= 3 and abs(cv2.contourArea(hole.astype(np.float32))) >= min_area:
                holes.append(hole)
            c = hier[c][0]
        parts.append(PolygonPart(outer, tuple(holes)))
    return parts


def offset_ring(points: np.ndarray, distance: float) -> np.ndarray:
    """Move every vertex of a closed ring by ``distance`` along its (mitred) outward normal (< 0 moves inward)."""
    p = np.asarray(points, dtype=np.float64)
    if len(p) < 3 or distance == 0:
        return p
    x, y = p[:, 0], p[:, 1]
    area = 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))

    def normals(edges: np.ndarray) -> np.ndarray:
        length = np.linalg.norm(edges, axis=1, keepdims=True)
        length[length == 0] = 1.0
        n = np.stack([edges[:, 1], -edges[:, 0]], axis=1) / length
        return n if area > 0 else -n

    n_in = normals(p - np.roll(p, 1, axis=0))
    n_out = normals(np.roll(p, -1, axis=0) - p)
    miter = n_in + n_out
    norm = np.linalg.norm(miter, axis=1, keepdims=True)
    flat = norm[:, 0] < 1e-6  # the ring turns back on itself (a one-pixel spur): push straight out
    miter[flat] = n_in[flat]
    norm[flat] = 1.0
    miter /= norm
    cos = np.clip(np.sum(miter * n_in, axis=1, keepdims=True), 0.5, 1.0)
    return p + miter * (distance / cos)


def _thicken(points: np.ndarray) -> np.ndarray:
    """A 1- or 2-vertex contour (a single pixel or a thin line) as a small polygon around it."""
    x0, y0 = points.min(axis=0) - 0.5
    x1, y1 = points.max(axis=0) + 0.5
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def bridge_holes(exterior: np.ndarray, holes: Sequence[np.ndarray]) -> np.ndarray:
    """Cut ``holes`` into ``exterior`` with zero-width bridges: one ring whose even-odd fill leaves the holes empty.

    For each hole, the closest (exterior vertex, hole vertex) pair is joined; the ring goes out along the bridge,
    around the hole, and back along the same bridge.
    """
    ring = np.asarray(exterior, dtype=np.float64)
    for hole in holes:
        h = np.asarray(hole, dtype=np.float64)
        d = ((ring[:, None, :] - h[None, :, :]) ** 2).sum(axis=2)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        hole_loop = np.concatenate([h[j:], h[: j + 1]])  # starts and ends at the bridge vertex
        ring = np.concatenate([ring[: i + 1], hole_loop, ring[i:]])
    return ring


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.0, min_area: float = 0.0) -> list[list[float]]:
    """COCO polygon segmentation of a mask: one flat ``[x0, y0, x1, y1, ...]`` list per part, holes bridged in."""
    polygons = []
    for part in mask_to_parts(mask, tolerance, min_area):
        ring = bridge_holes(part.exterior, part.holes)
        flat = [round(float(v), 2) for v in ring.reshape(-1)]
        if len(flat) >= 6:
            polygons.append(flat)
    return polygons


def parts_to_json(parts: Iterable[PolygonPart]) -> list[dict[str, Any]]:
    """``[{"exterior": [x0, y0, ...], "holes": [[...], ...]}, ...]``."""
    return [
        {
            "exterior": [round(float(v), 2) for v in p.exterior.reshape(-1)],
            "holes": [[round(float(v), 2) for v in h.reshape(-1)] for h in p.holes],
        }
        for p in parts
    ]


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons with pycocotools (as COCO readers do) to a bool mask."""
    from pycocotools import mask as mask_utils

    if not polygons:
        return np.zeros((height, width), dtype=bool)
    rles = mask_utils.frPyObjects([list(map(float, p)) for p in polygons], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


# -------------------------------------------------------------------------- COCO
def _bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def category_ids(labels: Iterable[str], known: Mapping[str, int] | None = None) -> dict[str, int]:
    """Category id of every label: the ``known`` ones keep theirs, new labels (sorted) get ids after the largest."""
    ids = {str(k): int(v) for k, v in (known or {}).items()}
    next_id = max(ids.values(), default=0) + 1
    for label in sorted(set(labels) - set(ids)):
        ids[label] = next_id
        next_id += 1
    return ids


def coco_dataset(
    images: Sequence[ExportImage],
    segmentation: str = "rle",
    polygon_tolerance: float = 0.0,
    categories: Mapping[str, int] | None = None,
    listed: Iterable[str] = (),
) -> dict[str, Any]:
    """A COCO instances dict. ``segmentation`` is ``"rle"`` (pycocotools compressed RLE) or ``"polygons"``.

    Category ids come from ``categories`` (label -> id) where given, else from :func:`category_ids` (sorted labels
    from 1); the file lists the categories in use and those named in ``listed`` (a label set), by id. Image ids follow
    ``images``; annotation ids run over all images from 1, each image's objects by id.
    """
    if segmentation not in ("rle", "polygons"):
        raise FinecutError(f"segmentation must be 'rle' or 'polygons', got {segmentation!r}")
    always = set(listed)
    used = {o.label for img in images for o in img.objects}
    cat_ids = category_ids(used | always, categories)
    out_images, annotations = [], []
    ann_id = 1
    for image_id, img in enumerate(images, start=1):
        entry: dict[str, Any] = {"id": image_id, "file_name": img.file_name, "height": img.height, "width": img.width}
        if img.status is not None:
            entry["finecut_status"] = img.status
        out_images.append(entry)
        for obj in sorted(img.objects, key=lambda o: o.id):
            mask = np.asarray(obj.mask, dtype=bool)
            if mask.shape != (img.height, img.width):
                raise FinecutError(
                    f"{img.file_name}: object {obj.id} mask has shape {mask.shape}, expected {(img.height, img.width)}"
                )
            if not mask.any():
                continue
            ann: dict[str, Any] = {
                "id": ann_id,
                "image_id": image_id,
                "category_id": cat_ids[obj.label],
                "area": int(mask.sum()),
                "bbox": _bbox(mask),
                "iscrowd": 0,
                "finecut_object_id": int(obj.id),
            }
            if obj.score is not None:
                ann["score"] = float(obj.score)
            if segmentation == "rle":
                ann["segmentation"] = mask_to_rle(mask)
            else:
                parts = mask_to_parts(mask, polygon_tolerance)
                ann["segmentation"] = [
                    [round(float(v), 2) for v in bridge_holes(p.exterior, p.holes).reshape(-1)] for p in parts
                ]
                ann["polygons_with_holes"] = parts_to_json(parts)
            annotations.append(ann)
            ann_id += 1
    return {
        "info": {"description": "exported by finecut", "version": "1.0"},
        "images": out_images,
        "annotations": annotations,
        "categories": [{"id": i, "name": label, "supercategory": "object"}
                       for label, i in sorted(cat_ids.items(), key=lambda item: item[1]) if label in used | always],
    }


# ------------------------------------------------------------------------- files
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """A file-name-safe version of a label or stem."""
    name = _UNSAFE.sub("_", text).strip("._")
    return name[:80] or "object"


def instance_map(img: ExportImage) -> np.ndarray:
    """Instance-id map of one image (uint8 if all ids < 256, else uint16)."""
    max_id = max((o.id for o in img.objects), default=0)
    if max_id > 65535:
        raise FinecutError(f"{img.file_name}: object id {max_id} does not fit a 16-bit instance map")
    out = np.zeros((img.height, img.width), dtype=np.uint8 if max_id < 256 else np.uint16)
    for obj in img.objects:
        out[np.asarray(obj.mask, dtype=bool)] = obj.id
    return out


def mask_file_name(key: str, obj: ExportObject) -> str:
    """The name of an object's binary mask PNG in the PNG export: ``<key>_obj<ID>_<label>.png``."""
    return f"{key}_obj{obj.id:03d}_{safe_name(obj.label)}.png"


def alpha_file_name(key: str, obj: ExportObject) -> str:
    """The name of an object's alpha matte PNG in the PNG export: its mask's name with ``_alpha`` before ``.png``."""
    return mask_file_name(key, obj)[: -len(".png")] + "_alpha.png"


def is_alpha_file(name: str, siblings: Collection[str]) -> bool:
    """Whether the file ``name`` of a PNG export's image folder (whose file names are ``siblings``) is an object's
    alpha matte rather than a mask: ``<key>_obj<ID>_<label>_alpha.png`` with its mask ``<key>_obj<ID>_<label>.png``
    beside it. (A mask whose label ends in ``_alpha`` has no such file beside it: the object with that id has one
    label.)"""
    if re.search(r"_obj\d+_.+_alpha\.png\Z", name) is None:
        return False
    return name[: -len("_alpha.png")] + ".png" in siblings


def write_png_masks(img: ExportImage, out_dir: str | Path, overwrite: bool = True) -> list[Path]:
    """Write the per-object binary PNGs, the alpha mattes of the objects that have one, and the instance-id map of
    one image into ``out_dir/<key>/`` (names in the module docstring)."""
    stem = img.key
    folder = Path(out_dir) / stem
    written = []
    for obj in img.objects:
        mask = np.asarray(obj.mask, dtype=bool)
        path = folder / mask_file_name(stem, obj)
        written.append(atomic_write_bytes(path, encode_png(mask.astype(np.uint8) * 255), overwrite=overwrite))
        if obj.alpha is not None:
            alpha = np.ascontiguousarray(obj.alpha, dtype=np.uint8)  # uint8 H×W: checked by ExportObject
            written.append(atomic_write_bytes(folder / alpha_file_name(stem, obj), encode_png(alpha),
                                              overwrite=overwrite))
    written.append(atomic_write_bytes(folder / f"{stem}_instances.png", encode_png(instance_map(img)), overwrite))
    return written


def write_coco(
    images: Sequence[ExportImage],
    path: str | Path,
    segmentation: str = "rle",
    overwrite: bool = True,
    polygon_tolerance: float = 0.0,
    categories: Mapping[str, int] | None = None,
    listed: Iterable[str] = (),
) -> Path:
    """Write a COCO JSON file (``segmentation``: ``"rle"`` or ``"polygons"``; ``categories`` and ``listed`` as in
    :func:`coco_dataset`)."""
    data = coco_dataset(images, segmentation, polygon_tolerance, categories, listed)
    return atomic_write_bytes(path, json.dumps(data).encode("utf-8"), overwrite=overwrite)


def export_images(
    images: Sequence[ExportImage],
    out_dir: str | Path,
    formats: Iterable[str] = FORMATS,
    overwrite: bool = True,
    label_ids: Mapping[str, int] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write the chosen ``formats`` (``png``, ``coco_rle``, ``coco_polygons``) for all ``images`` as the folder
    ``out_dir``, replacing a previous export there as a whole (see the module docstring); returns the files.

    ``label_ids`` (a label set: name -> category id) fixes those ids and lists every one of them in COCO
    ``categories``; other labels keep their ids from earlier exports where those are free. ``metadata`` adds keys to
    the manifest. ``overwrite=False`` refuses an existing, non-empty folder. A folder holding anything that is not
    part of a finecut export is never replaced (:class:`FinecutError` naming the files).
    """
    chosen = list(dict.fromkeys(formats))
    for fmt in chosen:
        if fmt not in FORMATS:
            raise FinecutError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    out = Path(out_dir)
    _check_replaceable(out, overwrite)
    keyed = _unique_keys(images)
    fixed = {str(k): int(v) for k, v in (label_ids or {}).items()}
    known = dict(fixed)
    for label, cat_id in _previous_categories(out).items():
        if label not in known and cat_id not in known.values():
            known[label] = cat_id
    categories = category_ids({o.label for img in keyed for o in img.objects}, known)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out)
    build = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        written: list[Path] = []
        if "png" in chosen:
            for img in keyed:
                written.extend(write_png_masks(img, build, overwrite=False))
        if "coco_rle" in chosen:
            written.append(write_coco(keyed, build / "coco_rle.json", "rle", False, categories=categories,
                                      listed=fixed))
        if "coco_polygons" in chosen:
            written.append(write_coco(keyed, build / "coco_polygons.json", "polygons", False, categories=categories,
                                      listed=fixed))
        files = [p.relative_to(build).as_posix() for p in written]
        manifest = {"format": 1, "categories": categories, "images": {i.file_name: i.key for i in keyed},
                    "files": sorted(files), **{k: v for k, v in (metadata or {}).items()
                                              if k not in ("format", "categories", "images", "files")}}
        atomic_write_bytes(build / MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"), overwrite=False)
        _swap_in(build, out)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return [out / f for f in files] + [out / MANIFEST]


def _unique_keys(images: Sequence[ExportImage]) -> list[ExportImage]:
    """``images`` with keys that differ even on a case-insensitive file system (a colliding key gets a hash)."""
    seen: dict[str, str] = {}
    out = []
    for img in images:
        key = img.key
        if key.lower() in seen:
            if seen[key.lower()] == img.file_name:
                raise FinecutError(f"{img.file_name}: the same image is exported twice")
            key = f"{key}-{hashlib.sha1(img.file_name.encode('utf-8')).hexdigest()[:8]}"
            img = ExportImage(img.file_name, img.height, img.width, img.objects, stem=key, status=img.status)
        seen[key.lower()] = img.file_name
        out.append(img)
    return out


_COCO_FILES = ("coco_rle.json", "coco_polygons.json")


def _categories_in(folder: Path) -> dict[str, int]:
    """The label -> id map of the export in ``folder``: its manifest, else (an export without one) its COCO files."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        return {str(k): int(v) for k, v in manifest["categories"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    for name in _COCO_FILES:
        try:
            cats = json.loads((folder / name).read_text(encoding="utf-8"))["categories"]
            return {str(c["name"]): int(c["id"]) for c in cats}
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return {}


def _previous_categories(out: Path) -> dict[str, int]:
    """The category ids of the previous export into ``out`` (or of its backup, after a crash between two renames)."""
    found = _categories_in(out)
    if found or out.exists():
        return found
    for backup in sorted(out.parent.glob(f".{glob.escape(out.name)}.old-*")):
        found = _categories_in(backup)
        if found:
            return found
    return {}


def _is_export_file(relative: Path) -> bool:
    """Whether a file (relative to an export folder) is one finecut exports write."""
    if len(relative.parts) == 1:
        return relative.name in (*_COCO_FILES, MANIFEST)
    if len(relative.parts) != 2 or relative.suffix != ".png":
        return False
    folder, name = relative.parts
    # the instance map, per-object masks ``_obj<ID>_<label>.png`` and their mattes ``_obj<ID>_<label>_alpha.png``
    return name == f"{folder}_instances.png" or re.fullmatch(re.escape(folder) + r"_obj\d+_.+\.png", name) is not None


def _check_replaceable(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise FinecutError(f"{out}: exists and is not a folder")
    entries = list(out.rglob("*"))
    if not entries:
        return
    if not overwrite:
        raise FinecutError(f"{out}: already exists (refusing to overwrite; pass overwrite to replace the export)")
    foreign = [p.relative_to(out).as_posix() for p in entries
               if (p.is_file() or p.is_symlink()) and not _is_export_file(p.relative_to(out))]
    foreign += [p.relative_to(out).as_posix() for p in entries if p.is_dir() and len(p.relative_to(out).parts) > 1]
    if foreign:
        shown = ", ".join(sorted(foreign)[:5]) + (" ..." if len(foreign) > 5 else "")
        raise FinecutError(f"{out}: holds files that are not part of a finecut export ({shown}); an export replaces "
                           "its folder as a whole, so move them away or export to another folder")


def _remove_leftovers(out: Path) -> None:
    """Remove build and backup folders of interrupted exports into ``out`` (exactly the names this module makes)."""
    pattern = re.compile(re.escape(f".{out.name}.") + r"(?:[a-z0-9_]{8}\.tmp|old-[a-z0-9_]{8})")
    for p in out.parent.glob(f".{glob.escape(out.name)}.*"):
        if p.is_dir() and not p.is_symlink() and pattern.fullmatch(p.name):
            shutil.rmtree(p, ignore_errors=True)


def _swap_in(build: Path, out: Path) -> None:
    """Put the finished folder ``build`` in the place of ``out`` (two renames; ``out`` is never a mix of both)."""
    if not out.exists():
        os.replace(build, out)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rmdir(backup)
    os.replace(out, backup)
    try:
        os.replace(build, out)
    except BaseException:
        os.replace(backup, out)
        raise
    shutil.rmtree(backup, ignore_errors=True)
