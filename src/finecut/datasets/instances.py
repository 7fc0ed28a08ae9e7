"""Readers that give one sample per object of an id map: SBD (``inst/*.mat``), PASCAL VOC (``SegmentationObject``)
and BSDS500 (every region of every human partition, for training).

Objects are listed from the label files only (no image is decoded up front); each sample cuts its object from the
cached label map when loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from finecut.datasets import loaders
from finecut.datasets.base import Dataset, SampleRef
from finecut.datasets.cache import FileCache
from finecut.datasets.labels import gt_from_ids, mat_label_map, structs_of
from finecut.datasets.matching import list_images, require_dir
from finecut.errors import FinecutError

VOC_IGNORE_ID = 255


def _split_names(split: str, list_dir: Path, all_names: Sequence[str]) -> list[str]:
    """Names listed in ``list_dir/{split}.txt``; every name for ``split="all"``."""
    if split == "all":
        return list(all_names)
    path = list_dir / f"{split}.txt"
    if not path.is_file():
        raise FinecutError(f"{path}: split list not found (use split='all' to read every annotation)")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise FinecutError(f"{path}: split list is empty")
    return names


def _image_for(img_dir: Path, stem: str, source: Path) -> Path:
    for suffix in (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG", ".bmp"):
        p = img_dir / f"{stem}{suffix}"
        if p.is_file():
            return p
    raise FinecutError(f"{source}: no image named {stem}.* in {img_dir}")


def _ids_with_sizes(ids: np.ndarray, skip: Iterable[int]) -> list[tuple[int, int]]:
    values, counts = np.unique(ids, return_counts=True)
    skip = set(skip)
    return [(int(v), int(c)) for v, c in zip(values, counts) if v != 0 and int(v) not in skip]


def _bbox_fill(ids: np.ndarray, value: int) -> float:
    rows, cols = np.nonzero(ids == value)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    return len(rows) / float(box)


# ----------------------------------------------------------------------------------------------------------- SBD

def _sbd_ids(cache: FileCache, path: Path) -> np.ndarray:
    return mat_label_map(structs_of(loaders.mat(cache, path), "GTinst", path)[0], "Segmentation", path)


def _gt_sbd(cache: FileCache, path: Path, object_id: int) -> np.ndarray:
    return gt_from_ids(_sbd_ids(cache, path), object_id)


def read_sbd(
    root: Path,
    *,
    name: str = "SBD",
    split: str = "val",
    images_dir: str = "img",
    inst_dir: str = "inst",
    min_area: int = 1,
    buggy_mask_thresh: float = 0.0,
    cache: FileCache | None = None,
) -> Dataset:
    """SBD: ``img/<name>.jpg`` + ``inst/<name>.mat`` (``GTinst.Segmentation``: 0 background, 1..N instances), one
    sample per instance (RITM's SBDEvaluationDataset). ``split``: names from ``<split>.txt`` (``val``/``train``) or
    ``"all"`` ``.mat`` files. ``buggy_mask_thresh`` > 0 drops instances filling less than that fraction of their
    bounding box (RITM uses 0.08 for training)."""
    root = require_dir(Path(root), "dataset folder")
    img_dir, inst_path = require_dir(root / images_dir), require_dir(root / inst_dir)
    all_names = sorted(p.stem for p in inst_path.glob("*.mat"))
    if not all_names:
        raise FinecutError(f"{inst_path}: no .mat instance files found")
    cache = cache or FileCache()
    refs = []
    for stem in _split_names(split, root, all_names):
        mat = inst_path / f"{stem}.mat"
        if not mat.is_file():
            raise FinecutError(f"{mat}: file not found (listed in {root / (split + '.txt')})")
        img = _image_for(img_dir, stem, mat)
        ids = _sbd_ids(cache, mat)
        for value, area in _ids_with_sizes(ids, ()):
            if area < min_area or (buggy_mask_thresh > 0 and _bbox_fill(ids, value) < buggy_mask_thresh):
                continue
            refs.append(SampleRef(
                name=f"{stem}#{value}", image_path=img, load_gt=partial(_gt_sbd, cache, mat, value),
                meta={"dataset": name, "image_id": stem, "object_id": value, "area": area},
                mask_path=mat, load_image=loaders.image_loader(cache, img),
            ))
    if not refs:
        raise FinecutError(f"{inst_path}: no instances found")
    return Dataset(name, refs, root, cache)


# ----------------------------------------------------------------------------------------------------- PASCAL VOC

def _gt_voc(cache: FileCache, path: Path, object_id: int) -> np.ndarray:
    return gt_from_ids(loaders.index_label(cache, path), object_id, (VOC_IGNORE_ID,))


def read_voc(
    root: Path,
    *,
    name: str = "PascalVOC",
    split: str = "val",
    min_area: int = 1,
    cache: FileCache | None = None,
) -> Dataset:
    """PASCAL VOC instances: ``JPEGImages/*.jpg`` + ``SegmentationObject/*.png`` (palette indices: 0 background,
    1..N instances, 255 the void boundary -> ignore), one sample per instance; names from
    ``ImageSets/Segmentation/<split>.txt`` or ``split="all"``. (RITM converts the palette colours to grey and
    ignores grey 220 — the colour of index 255 — which selects the same pixels.)"""
    root = require_dir(Path(root), "dataset folder")
    img_dir, obj_dir = require_dir(root / "JPEGImages"), require_dir(root / "SegmentationObject")
    all_names = sorted(p.stem for p in list_images(obj_dir))
    if not all_names:
        raise FinecutError(f"{obj_dir}: no instance masks found")
    cache = cache or FileCache()
    refs = []
    for stem in _split_names(split, root / "ImageSets" / "Segmentation", all_names):
        png = obj_dir / f"{stem}.png"
        if not png.is_file():
            raise FinecutError(f"{png}: file not found (listed in split {split!r})")
        img = _image_for(img_dir, stem, png)
        for value, area in _ids_with_sizes(loaders.index_label(cache, png), (VOC_IGNORE_ID,)):
            if area < min_area:
                continue
            refs.append(SampleRef(
                name=f"{stem}#{value}", image_path=img, load_gt=partial(_gt_voc, cache, png, value),
                meta={"dataset": name, "image_id": stem, "object_id": value, "area": area},
                mask_path=png, load_image=loaders.image_loader(cache, img),
            ))
    if not refs:
        raise FinecutError(f"{obj_dir}: no instances found")
    return Dataset(name, refs, root, cache)


# -------------------------------------------------------------------------------------------------------- BSDS500

BSDS_SPLITS = ("train", "val", "test")


def _bsds_partitions(cache: FileCache, path: Path) -> list[dict]:
    return structs_of(loaders.mat(cache, path), "groundTruth", path)


def _gt_bsds(cache: FileCache, path: Path, partition: int, region: int) -> np.ndarray:
    seg = mat_label_map(_bsds_partitions(cache, path)[partition], "Segmentation", path)
    return (seg == region).astype(np.int8)


def _bsds_regions(
    segs: list[tuple[int, np.ndarray]], min_frac: float, max_frac: float, dedupe_iou: float | None
) -> list[tuple[int, int, int]]:
    """(partition, region label, area) of the regions to keep, in partition order."""
    kept: list[tuple[int, int, int]] = []
    previous: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (subsampled seg, its counts, kept labels)
    for k, seg in segs:
        counts = np.bincount(seg.ravel())
        frac = counts / float(seg.size)
        labels = np.nonzero((frac >= min_frac) & (frac <= max_frac) & (counts > 0))[0]
        labels = labels[labels != 0]
        if dedupe_iou is not None:
            # IoU on a stride-2 grid: regions of >= 1% of the image have hundreds of samples there, plenty for a
            # threshold near 0.9, at a quarter of the cost.
            small = seg[::2, ::2].ravel().astype(np.intp)
            small_counts = np.bincount(small, minlength=len(counts))
            dup = np.zeros(len(counts), dtype=bool)
            for prev, prev_counts, prev_labels in previous:
                if not len(prev_labels) or not len(labels):
                    continue
                n = len(small_counts)
                joint = np.bincount(prev * n + small, minlength=len(prev_counts) * n).reshape(len(prev_counts), n)
                inter = joint[np.ix_(prev_labels, labels)]
                union = prev_counts[prev_labels][:, None] + small_counts[labels][None, :] - inter
                dup[labels[(inter >= dedupe_iou * union).any(axis=0)]] = True
            labels = labels[~dup[labels]]
            previous.append((small, small_counts, labels))
        kept += [(k, int(r), int(counts[r])) for r in labels]
    return kept


def _bsds_dirs(root: Path) -> tuple[Path, Path]:
    for base in (root / "data", root, root / "BSDS500" / "data"):
        if (base / "images").is_dir() and (base / "groundTruth").is_dir():
            return base / "images", base / "groundTruth"
    raise FinecutError(f"{root}: not a BSDS500 folder (expected data/images/ and data/groundTruth/)")


def read_bsds(
    root: Path,
    *,
    name: str = "BSDS500",
    split: str = "all",
    partitions: int | Sequence[int] | None = None,
    min_area_frac: float = 0.01,
    max_area_frac: float = 0.8,
    dedupe_iou: float | None = None,
    cache: FileCache | None = None,
) -> Dataset:
    """BSDS500 human region partitions as candidate objects (training): one sample per region of each chosen
    partition of ``groundTruth/<split>/<id>.mat`` (cell of structs with ``Segmentation``, labels 1..N).

    ``split``: ``train``, ``val``, ``test`` or ``all``. ``partitions``: annotator indices (0-based) to use; None =
    every one (4-9 per image; indices an image lacks are skipped). Regions covering less than ``min_area_frac`` or
    more than ``max_area_frac`` of the image are dropped (specks and whole-background regions). ``dedupe_iou``:
    drop a region whose IoU with a region already kept from another partition of the same image is at least this
    (annotators often draw the same object).
    """
    root = require_dir(Path(root), "dataset folder")
    if not 0.0 <= min_area_frac <= max_area_frac <= 1.0:
        raise FinecutError(f"need 0 <= min_area_frac <= max_area_frac <= 1, got {min_area_frac}, {max_area_frac}")
    img_root, gt_root = _bsds_dirs(root)
    if split == "all":
        splits = [s for s in BSDS_SPLITS if (gt_root / s).is_dir()] or ["."]
    elif split in BSDS_SPLITS:
        splits = [split]
    else:
        raise FinecutError(f"unknown BSDS500 split {split!r}: use train, val, test or all")
    wanted = None if partitions is None else {int(partitions)} if isinstance(partitions, int) else set(partitions)
    cache = cache or FileCache()
    refs = []
    for sp in splits:
        gt_dir, img_dir = require_dir(gt_root / sp), require_dir(img_root / sp)
        mats = sorted(p for p in gt_dir.iterdir() if p.suffix.lower() == ".mat")
        for mat in mats:
            img = _image_for(img_dir, mat.stem, mat)
            segs = [(k, mat_label_map(struct, "Segmentation", mat))
                    for k, struct in enumerate(_bsds_partitions(cache, mat)) if wanted is None or k in wanted]
            for k, region, area in _bsds_regions(segs, min_area_frac, max_area_frac, dedupe_iou):
                refs.append(SampleRef(
                    name=f"{mat.stem}/p{k}/r{region}", image_path=img,
                    load_gt=partial(_gt_bsds, cache, mat, k, region),
                    meta={"dataset": name, "image_id": mat.stem, "split": sp, "partition": k,
                          "object_id": region, "area": area},
                    mask_path=mat, load_image=loaders.image_loader(cache, img),
                ))
    if not refs:
        raise FinecutError(f"{gt_root}: no regions found (check split, partitions and area limits)")
    return Dataset(name, refs, root, cache)
