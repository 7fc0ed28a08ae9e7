"""The generic reader: a folder of images + a folder of masks with matching stems.

Covers a user's own data and the sets stored that way: DIS5K (``im`` + ``gt``), ThinObject-5K (``images`` +
``masks``), HRSOD (``HRSOD_test`` + ``HRSOD_test_mask``), WeizmannHorse (``rgb`` + ``figure_ground``), MSRA10K
(``images`` + ``gt``).
Masks are binary (max over channels >= ``threshold``; a 0/1 mask counts every non-zero) or, with
``objects="instances"``, id maps giving one sample per id.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np

from finecut.datasets import loaders
from finecut.datasets.base import Dataset, SampleRef
from finecut.datasets.cache import FileCache
from finecut.datasets.labels import gt_binary, gt_from_ids, resize_label
from finecut.datasets.matching import (
    StemRule,
    list_images,
    pair_by_stem,
    require_dir,
    same_folder_split,
)
from finecut.errors import FinecutError

IMAGE_DIR_NAMES = ("images", "image", "imgs", "img", "im", "rgb", "JPEGImages", "photos", "inputs", "input", "src")
MASK_DIR_NAMES = (
    "masks", "mask", "gt", "gts", "GT", "labels", "label", "annotations", "figure_ground", "groundtruth",
    "ground_truth", "groundTruth", "segmentations", "alpha", "mattes",
)
_MASK_HINT = re.compile(r"(mask|gt|label|annot|figure_ground|ground[_-]?truth|segment|matte|alpha)", re.IGNORECASE)


def _has_images(folder: Path) -> bool:
    try:
        return bool(list_images(folder))
    except FinecutError:
        return False


def find_folder_pair(root: Path) -> tuple[Path, Path] | None:
    """Guess (images folder, masks folder) inside ``root``; ``(root, root)`` when masks sit next to the images."""
    root = Path(root)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = {p.name: p for p in subdirs}
    for img_name in IMAGE_DIR_NAMES:
        for mask_name in MASK_DIR_NAMES:
            if img_name in names and mask_name in names and _has_images(names[mask_name]):
                if _has_images(names[img_name]):
                    return names[img_name], names[mask_name]
    with_images = [p for p in subdirs if _has_images(p)]
    masks = [p for p in with_images if _MASK_HINT.search(p.name)]
    images = [p for p in with_images if p not in masks]
    if len(images) == 1 and len(masks) == 1:
        return images[0], masks[0]
    if not subdirs and _has_images(root):
        try:
            same_folder_split(list_images(root), None)
        except FinecutError:
            return None
        return root, root
    return None


def _gt_binary_file(
    cache: FileCache,
    mask: Path,
    image: Path,
    threshold: int,
    ignore_values: tuple[int, ...],
    resize: bool,
) -> np.ndarray:
    label = loaders.label(cache, mask)
    if resize:
        label = resize_label(label, loaders.image_shape(cache, image), smooth=True)
    return gt_binary(label, threshold, ignore_values)


def _ids(cache: FileCache, mask: Path, image: Path, resize: bool) -> np.ndarray:
    """The id map of ``mask``, resized to the image when asked."""
    ids = loaders.index_label(cache, mask)
    return resize_label(ids, loaders.image_shape(cache, image), smooth=False) if resize else ids


def _gt_instance(
    cache: FileCache, mask: Path, image: Path, object_id: int, ignore_ids: tuple[int, ...], resize: bool
) -> np.ndarray:
    return gt_from_ids(_ids(cache, mask, image, resize), object_id, ignore_ids)


def _gt_union(cache: FileCache, mask: Path, image: Path, ignore_ids: tuple[int, ...], resize: bool) -> np.ndarray:
    """Every non-zero, non-ignored id is the object (ignored ids stay -1)."""
    ids = _ids(cache, mask, image, resize)
    gt = (ids != 0).astype(np.int8)
    if ignore_ids:
        gt[np.isin(ids, ignore_ids)] = -1
    return gt


def _read_label_names(path: Path) -> dict[int, str]:
    """``ID NAME`` per line (CCP's labels.txt) -> {id: name}."""
    if not path.is_file():
        raise FinecutError(f"{path}: label names file not found")
    names: dict[int, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split(maxsplit=1)
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit():
            raise FinecutError(f"{path}:{number}: expected 'ID NAME', got {line!r}")
        names[int(parts[0])] = parts[1].strip()
    return names


def _read_list_file(path: Path) -> set[str]:
    if not path.is_file():
        raise FinecutError(f"{path}: list file not found")
    return {Path(line.strip()).stem for line in path.read_text().splitlines() if line.strip()}


def read_folder(
    root: Path,
    *,
    name: str | None = None,
    images_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
    threshold: int = 128,
    ignore_values: tuple[int, ...] = (),
    mask_prefix: str | None = None,
    mask_suffix: str | None = None,
    resize_masks: bool = False,
    missing: str = "error",
    objects: str = "binary",
    ignore_ids: tuple[int, ...] = (),
    min_area: int = 1,
    list_file: str | Path | None = None,
    union_object: bool = False,
    union_only: bool = False,
    label_names: str | Path | None = None,
    cache: FileCache | None = None,
) -> Dataset:
    """A folder of images and a folder of masks paired by stem.

    ``images_dir``/``masks_dir``: sub-folders of ``root`` (or absolute); guessed when omitted (``images``/``img``/
    ``im``/``rgb``... and ``masks``/``gt``/``figure_ground``..., or any folder whose name says mask/gt/label).
    ``mask_prefix``/``mask_suffix``: mask stem = prefix + image stem + suffix (inferred when both are omitted, e.g.
    ``a.jpg`` -> ``a_mask.png``). ``resize_masks``: resize masks whose size differs from the image (WeizmannHorse's
    ``rgb`` photos are larger than their masks) instead of failing. ``missing``: ``"error"`` or ``"skip"`` images
    without a mask. ``objects``: ``"binary"`` (one sample per image; raw values in ``ignore_values`` -> ignore) or
    ``"instances"`` (masks are id maps, palette or greyscale: one sample per non-zero id of at least ``min_area``
    pixels; ``ignore_ids`` -> ignore). ``list_file``: a text file of stems to keep (a split list).
    ``union_object`` (instances only): one more sample per image, the union of all its non-zero ids (CCP's person
    as the union of its garment / hair / skin labels). ``union_only`` (instances only): that union is each image's one
    sample (an image with a single id: that id), no per-id samples (CCP's whole person). ``label_names``: a text file
    of ``ID NAME`` lines (CCP's ``labels.txt``); each instance sample's ``meta["label"]`` then names its id.
    """
    root = require_dir(Path(root), "dataset folder")
    if objects not in ("binary", "instances"):
        raise FinecutError(f"objects must be 'binary' or 'instances', got {objects!r}")
    if union_only and objects != "instances":
        raise FinecutError("union_only needs objects='instances' (the union of an id map's objects)")
    if images_dir is None and masks_dir is None:
        pair = find_folder_pair(root)
        if pair is None:
            raise FinecutError(
                f"{root}: cannot find an images folder and a masks folder (e.g. images/ + masks/); "
                "pass images_dir= and masks_dir="
            )
        img_dir, mask_dir = pair
    else:
        img_dir = require_dir(root / images_dir if images_dir is not None else root)
        mask_dir = require_dir(root / masks_dir if masks_dir is not None else root)
    if img_dir == mask_dir:
        files = list_images(img_dir)
        if not files:
            raise FinecutError(f"{img_dir}: no images found")
        images, masks, rule = same_folder_split(files, mask_suffix)
    else:
        images, masks = list_images(img_dir), list_images(mask_dir)
        if not images:
            raise FinecutError(f"{img_dir}: no images found")
        if not masks:
            raise FinecutError(f"{mask_dir}: no mask files found")
        rule = None if mask_prefix is None and mask_suffix is None else StemRule(mask_prefix or "", mask_suffix or "")
    if list_file is not None:
        keep = _read_list_file(root / list_file)
        images = [p for p in images if p.stem in keep]
        if not images:
            raise FinecutError(f"{root / list_file}: none of its names is an image in {img_dir}")
    pairs = pair_by_stem(images, masks, mask_dir, rule, missing)
    if not pairs:
        raise FinecutError(f"{mask_dir}: no mask matches an image of {img_dir}")
    name = name or root.name
    cache = cache or FileCache()
    names_by_id = _read_label_names(root / label_names) if label_names is not None else {}
    refs = []
    for img, mask in pairs:
        meta = {"dataset": name, "image_id": img.stem}
        if objects == "binary":
            gt = partial(_gt_binary_file, cache, mask, img, int(threshold), tuple(ignore_values), resize_masks)
            refs.append(SampleRef(img.stem, img, gt, meta=meta, mask_path=mask,
                                  load_image=loaders.image_loader(cache, img)))
            continue
        ids = loaders.index_label(cache, mask)
        values, counts = np.unique(ids, return_counts=True)
        kept_ids = [v for v in values.tolist() if v != 0 and v not in ignore_ids]
        per_id = not union_only or len(kept_ids) == 1  # union_only: an image with one id has that id as its object
        for value, count in zip(values.tolist(), counts.tolist()):
            if not per_id or value == 0 or value in ignore_ids or count < min_area:
                continue
            gt = partial(_gt_instance, cache, mask, img, int(value), tuple(ignore_ids), resize_masks)
            extra = {"label": names_by_id[value]} if value in names_by_id else {}
            refs.append(SampleRef(f"{img.stem}#{value}", img, gt, meta=dict(meta, object_id=value, area=count, **extra),
                                  mask_path=mask, load_image=loaders.image_loader(cache, img)))
        if (union_object or union_only) and len(kept_ids) > 1:
            gt = partial(_gt_union, cache, mask, img, tuple(ignore_ids), resize_masks)
            refs.append(SampleRef(f"{img.stem}#all", img, gt, meta=dict(meta, object_id="all"),
                                  mask_path=mask, load_image=loaders.image_loader(cache, img)))
    if not refs:
        raise FinecutError(f"{mask_dir}: the masks hold no object (all ids are 0 or ignored)")
    return Dataset(name, refs, root, cache)
