"""COCO-style annotations: panoptic (PNG id maps + ``segments_info``) and instance JSON (polygons / RLE, via
pycocotools). One sample per segment / annotation, listed from the JSON alone (nothing decoded up front).
"""

from __future__ import annotations

import json
import os
import warnings
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from finecut.datasets import loaders
from finecut.datasets.base import Dataset, SampleRef
from finecut.datasets.cache import FileCache
from finecut.datasets.labels import IGNORE, read_label
from finecut.datasets.matching import require_dir
from finecut.errors import FinecutError

CROWD_MODES = ("skip", "ignore", "object")


def load_json(path: Path) -> Any:
    if not path.is_file():
        raise FinecutError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FinecutError(f"{path}: invalid JSON ({exc})") from None


def find_json(root: Path, kind: str, split: str = "all") -> list[Path]:
    """``panoptic_*.json`` or ``instances_*.json`` files in ``root``, ``root/annotations`` or
    ``root/panoptic_segmentation/annotations``; ``split`` keeps names containing it (``train``/``val``)."""
    found: list[Path] = []
    for folder in (root, root / "annotations", root / "panoptic_segmentation" / "annotations"):
        if folder.is_dir():
            found += sorted(folder.glob(f"{kind}_*.json"))
    if split != "all":
        found = [p for p in found if split in p.stem]
    return found


def _split_token(json_path: Path) -> str:
    stem = json_path.stem
    return stem.split("_", 1)[1] if "_" in stem else stem


def _find_images_dir(root: Path, json_path: Path, file_names: list[str]) -> Path:
    token = _split_token(json_path)
    candidates = [
        root / "images" / token, root / token, json_path.parent.parent / token,
        json_path.parent.parent / "images" / token, root.parent / "images" / token, root / "images", root,
    ]
    probe = file_names[:5]
    for c in candidates:
        if c.is_dir() and probe and all((c / f).is_file() for f in probe):
            return c
    raise FinecutError(
        f"{json_path}: cannot find its images (looked for {probe[0] if probe else '?'} in "
        f"{', '.join(str(c) for c in candidates[:4])}); pass images_dir="
    )


def _check_crowd(crowd: str) -> None:
    if crowd not in CROWD_MODES:
        raise FinecutError(f"crowd must be one of {', '.join(CROWD_MODES)}, got {crowd!r}")


def _images_table(data: dict, json_path: Path) -> dict[int, dict]:
    try:
        return {int(im["id"]): im for im in data["images"]}
    except (KeyError, TypeError, ValueError):
        raise FinecutError(f"{json_path}: 'images' must be a list of {{id, file_name, height, width}}") from None


# -------------------------------------------------------------------------------------------------------- panoptic

def rgb_to_id(label_bgr: np.ndarray) -> np.ndarray:
    """COCO panoptic segment ids from a PNG read in BGR order: id = R + 256 G + 256^2 B."""
    if label_bgr.ndim != 3 or label_bgr.shape[2] < 3:
        raise FinecutError(f"panoptic PNG must be RGB, got shape {label_bgr.shape}")
    lab = label_bgr.astype(np.int32)
    return lab[..., 2] + 256 * lab[..., 1] + 256 * 256 * lab[..., 0]


def _panoptic_ids(cache: FileCache, png: Path) -> np.ndarray:
    def load() -> np.ndarray:
        ids = rgb_to_id(read_label(png))
        ids.flags.writeable = False
        return ids

    try:
        return cache.get(("panoptic", png), load)
    except FinecutError as exc:
        if str(exc).startswith(str(png)):
            raise
        raise FinecutError(f"{png}: {exc}") from None


def _gt_panoptic(cache: FileCache, png: Path, segment_id: int, void_ignore: bool) -> np.ndarray:
    ids = _panoptic_ids(cache, png)
    gt = (ids == segment_id).astype(np.int8)
    if void_ignore:
        gt[ids == 0] = IGNORE
    return gt


def read_coco_panoptic(
    root: Path,
    *,
    name: str = "COCO-panoptic",
    split: str = "all",
    json_path: str | Path | None = None,
    png_dir: str | Path | None = None,
    images_dir: str | Path | None = None,
    things_only: bool = False,
    crowd: str = "skip",
    min_area: int = 1,
    min_area_frac: float = 0.0,
    void: str = "background",
    missing: str = "error",
    cache: FileCache | None = None,
) -> Dataset:
    """COCO panoptic: ``panoptic_<split>.json`` + ``panoptic_<split>/*.png`` (id = R + 256 G + 256^2 B) + images.

    One sample per segment (things and stuff; ``things_only`` keeps things). ``crowd``: ``"skip"`` crowd segments or
    make them samples too (``"object"``; segments never overlap, so ``"ignore"`` equals ``"skip"``). Segments smaller
    than ``min_area`` pixels or ``min_area_frac`` of the image are dropped. ``void``: unlabelled pixels (id 0) are
    ``"background"`` or ``"ignore"``. ``missing``: ``"error"`` or ``"skip"`` annotations whose PNG is absent.
    """
    root = require_dir(Path(root), "dataset folder")
    _check_crowd(crowd)
    if void not in ("background", "ignore"):
        raise FinecutError(f"void must be 'background' or 'ignore', got {void!r}")
    if json_path is not None:
        jsons = [root / json_path]
    else:
        jsons = find_json(root, "panoptic", split)
        if not jsons:
            raise FinecutError(f"{root}: no panoptic_*.json found (in ., annotations/); pass json_path=")
    cache = cache or FileCache()
    refs = []
    for jp in jsons:
        refs += _panoptic_refs(root, jp, name, png_dir, images_dir, things_only, crowd, min_area, min_area_frac,
                               void == "ignore", missing, cache)
    if not refs:
        raise FinecutError(f"{', '.join(str(j) for j in jsons)}: no segments found (check filters)")
    return Dataset(name, refs, root, cache)


def _panoptic_refs(root, jp, name, png_dir, images_dir, things_only, crowd, min_area, min_area_frac, void_ignore,
                   missing, cache) -> list[SampleRef]:
    data = load_json(jp)
    if not isinstance(data, dict) or "annotations" not in data:
        raise FinecutError(f"{jp}: not a COCO panoptic file (no 'annotations')")
    images = _images_table(data, jp)
    isthing = {int(c["id"]): bool(c.get("isthing", 1)) for c in data.get("categories", [])}
    pdir = require_dir(root / png_dir if png_dir is not None else jp.with_suffix(""), "panoptic PNG folder")
    anns = data["annotations"]
    file_names = [images[int(a["image_id"])]["file_name"] for a in anns if int(a["image_id"]) in images]
    idir = require_dir(root / images_dir) if images_dir is not None else _find_images_dir(root, jp, file_names)
    refs = []
    for ann in anns:
        image_id = int(ann["image_id"])
        if image_id not in images:
            raise FinecutError(f"{jp}: annotation for image id {image_id} has no entry in 'images'")
        info = images[image_id]
        img, png = idir / info["file_name"], pdir / ann["file_name"]
        if not png.is_file() or not img.is_file():
            if missing == "skip":
                continue
            raise FinecutError(f"{png if not png.is_file() else img}: file not found (listed in {jp.name})")
        total = float(info.get("height", 0) * info.get("width", 0)) or None
        for seg in ann.get("segments_info", []):
            cat = int(seg["category_id"])
            area = int(seg.get("area", 0))
            if seg.get("iscrowd", 0) and crowd != "object":
                continue
            if things_only and not isthing.get(cat, True):
                continue
            if area < min_area or (total and area / total < min_area_frac):
                continue
            sid = int(seg["id"])
            refs.append(SampleRef(
                name=f"{Path(info['file_name']).stem}#{sid}", image_path=img,
                load_gt=partial(_gt_panoptic, cache, png, sid, void_ignore),
                meta={"dataset": name, "image_id": image_id, "object_id": sid, "category_id": cat,
                      "isthing": isthing.get(cat, True), "iscrowd": bool(seg.get("iscrowd", 0)), "area": area,
                      "bbox": seg.get("bbox")},
                mask_path=png, load_image=loaders.image_loader(cache, img),
            ))
    return refs


# ------------------------------------------------------------------------------------------------------- instances

def _decode_segmentation(segm: Any, height: int, width: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    if isinstance(segm, list):  # polygons
        polys = [p for p in segm if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(segm, dict) and isinstance(segm.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segm, height, width)
    elif isinstance(segm, dict) and "counts" in segm:  # compressed RLE
        rle = dict(segm, counts=segm["counts"].encode() if isinstance(segm["counts"], str) else segm["counts"])
    else:
        raise FinecutError(f"unsupported COCO segmentation of type {type(segm).__name__}")
    with warnings.catch_warnings():  # pycocotools' decode trips a NumPy 2 copy-keyword DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def _gt_instance(segm: Any, crowd_segms: tuple, height: int, width: int, source: str) -> np.ndarray:
    try:
        obj = _decode_segmentation(segm, height, width)
        gt = obj.astype(np.int8)
        for c in crowd_segms:
            gt[_decode_segmentation(c, height, width) & ~obj] = IGNORE
    except FinecutError as exc:
        raise FinecutError(f"{source}: {exc}") from None
    except Exception as exc:  # pycocotools raises assorted errors on malformed input
        raise FinecutError(f"{source}: cannot decode segmentation ({exc})") from None
    return gt


def read_coco_instances(
    root: Path,
    *,
    name: str = "COCO",
    split: str = "all",
    json_path: str | Path | None = None,
    images_dir: str | Path | None = None,
    crowd: str = "ignore",
    min_area: float = 1.0,
    category_ids: tuple[int, ...] | None = None,
    missing: str = "error",
    cache: FileCache | None = None,
) -> Dataset:
    """COCO instance JSON (``instances_<split>.json``, polygons or RLE) + images: one sample per annotation.

    ``crowd``: ``"ignore"`` (crowd regions of the same image become ignore pixels in every other object's ground
    truth; crowd annotations are no samples), ``"skip"`` (crowd annotations are dropped) or ``"object"`` (they are
    samples too). ``min_area`` uses the annotation's ``area``; ``category_ids`` keeps only those categories.
    """
    root = Path(root)
    if root.is_file() and json_path is None:
        root, json_path = root.parent, root.name
    root = require_dir(root, "dataset folder")
    _check_crowd(crowd)
    if json_path is not None:
        jsons = [root / json_path]
    else:
        jsons = find_json(root, "instances", split)
        if not jsons:
            raise FinecutError(f"{root}: no instances_*.json found (in ., annotations/); pass json_path=")
    cache = cache or FileCache()
    refs = []
    for jp in jsons:
        data = load_json(jp)
        if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
            raise FinecutError(f"{jp}: not a COCO instances file (needs 'images' and 'annotations')")
        images = _images_table(data, jp)
        by_image: dict[int, list[dict]] = defaultdict(list)
        for ann in data["annotations"]:
            by_image[int(ann["image_id"])].append(ann)
        idir = (require_dir(root / images_dir) if images_dir is not None
                else _find_images_dir(root, jp, [images[i]["file_name"] for i in by_image if i in images]))
        for image_id in sorted(by_image, key=lambda i: images.get(i, {}).get("file_name", "")):
            if image_id not in images:
                raise FinecutError(f"{jp}: annotation for image id {image_id} has no entry in 'images'")
            info = images[image_id]
            img = idir / info["file_name"]
            if not img.is_file():
                if missing == "skip":
                    continue
                raise FinecutError(f"{img}: file not found (listed in {jp.name})")
            h, w = int(info["height"]), int(info["width"])
            anns = by_image[image_id]
            crowds = tuple(a["segmentation"] for a in anns if a.get("iscrowd", 0)) if crowd == "ignore" else ()
            for ann in anns:
                if ann.get("iscrowd", 0) and crowd != "object":
                    continue
                if category_ids is not None and int(ann["category_id"]) not in category_ids:
                    continue
                if float(ann.get("area", min_area)) < min_area:
                    continue
                aid = int(ann["id"])
                refs.append(SampleRef(
                    name=f"{Path(info['file_name']).stem}#{aid}", image_path=img,
                    load_gt=partial(_gt_instance, ann["segmentation"], crowds, h, w, f"{jp} annotation {aid}"),
                    meta={"dataset": name, "image_id": image_id, "object_id": aid,
                          "category_id": int(ann["category_id"]), "iscrowd": bool(ann.get("iscrowd", 0)),
                          "area": float(ann.get("area", 0)), "bbox": ann.get("bbox")},
                    mask_path=jp, load_image=loaders.image_loader(cache, img),
                ))
    if not refs:
        raise FinecutError(f"{', '.join(str(j) for j in jsons)}: no annotations found (check filters)")
    return Dataset(name, refs, root, cache)


def json_kind(path: str | os.PathLike) -> str:
    """``"coco_panoptic"`` or ``"coco_instances"`` for a COCO JSON file (by its name, else by its content)."""
    p = Path(path)
    if p.name.startswith("panoptic_"):
        return "coco_panoptic"
    if p.name.startswith("instances_"):
        return "coco_instances"
    data = load_json(p)
    anns = data.get("annotations") if isinstance(data, dict) else None
    if isinstance(anns, list) and anns:
        return "coco_panoptic" if "segments_info" in anns[0] else "coco_instances"
    raise FinecutError(f"{p}: not a COCO annotation file (no annotations)")
