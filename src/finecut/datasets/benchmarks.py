"""Readers of the standard test sets, matching RITM's readers exactly: GrabCut, Berkeley, DAVIS(-345) / COCO-MVal,
and the thin-structure sets DRIVE (with its field of view) and CrackForest.

Each image is one sample (one object).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from finecut.datasets import loaders
from finecut.datasets.base import Dataset, SampleRef
from finecut.datasets.cache import FileCache
from finecut.datasets.labels import binary_mask, gt_davis, gt_ritm_grabcut, mat_label_map, structs_of
from finecut.datasets.matching import StemRule, list_images, pair_by_stem, require_dir
from finecut.errors import FinecutError


def _gt_grabcut(cache: FileCache, path: Path) -> np.ndarray:
    return gt_ritm_grabcut(loaders.label(cache, path))


def _gt_davis(cache: FileCache, path: Path) -> np.ndarray:
    return gt_davis(loaders.label(cache, path))


def _gt_binary_auto(cache: FileCache, path: Path) -> np.ndarray:
    return binary_mask(loaders.label(cache, path)).astype(np.int8)


def _region(cache: FileCache, path: Path) -> np.ndarray:
    return binary_mask(loaders.label(cache, path))


def _paired_dataset(
    root: Path, name: str, images_dir: str, masks_dir: str, gt_fn, cache: FileCache | None, missing: str
) -> Dataset:
    """One sample per image; masks paired by exact stem (image extensions may be mixed)."""
    root = require_dir(Path(root), "dataset folder")
    img_dir, mask_dir = require_dir(root / images_dir), require_dir(root / masks_dir)
    images = list_images(img_dir)
    if not images:
        raise FinecutError(f"{img_dir}: no images found")
    masks = list_images(mask_dir)
    if not masks:
        raise FinecutError(f"{mask_dir}: no mask files found")
    cache = cache or FileCache()
    refs = [
        SampleRef(
            name=img.stem,
            image_path=img,
            load_gt=partial(gt_fn, cache, mask),
            meta={"dataset": name, "image_id": img.stem},
            mask_path=mask,
            load_image=loaders.image_loader(cache, img),
        )
        for img, mask in pair_by_stem(images, masks, mask_dir, StemRule(), missing)
    ]
    if not refs:
        raise FinecutError(f"{mask_dir}: no mask matches an image of {img_dir}")
    return Dataset(name, refs, root, cache)


def read_grabcut(
    root: Path,
    *,
    name: str = "GrabCut",
    images_dir: str = "data_GT",
    masks_dir: str = "boundary_GT",
    missing: str = "error",
    cache: FileCache | None = None,
) -> Dataset:
    """GrabCut as packaged by RITM: ``data_GT/*`` (mixed .jpg/.bmp/.JPG) + ``boundary_GT/*.bmp``.

    Channel 0 of the mask; 128 -> ignore (the unlabelled boundary band), > 128 -> object.
    """
    return _paired_dataset(root, name, images_dir, masks_dir, _gt_grabcut, cache, missing)


def read_berkeley(
    root: Path,
    *,
    name: str = "Berkeley",
    images_dir: str = "images",
    masks_dir: str = "masks",
    missing: str = "error",
    cache: FileCache | None = None,
) -> Dataset:
    """Berkeley (RITM layout): ``images/*.jpg`` + ``masks/*.png``, read with RITM's GrabCut reader (> 128 object,
    128 ignore)."""
    return _paired_dataset(root, name, images_dir, masks_dir, _gt_grabcut, cache, missing)


def read_davis(
    root: Path,
    *,
    name: str = "DAVIS",
    images_dir: str = "img",
    masks_dir: str = "gt",
    missing: str = "error",
    cache: FileCache | None = None,
) -> Dataset:
    """DAVIS-345 / COCO-MVal (RITM layout ``img`` + ``gt``): max over channels, every non-zero id (255 too) is the
    object — all annotated objects merged, as in published NoC numbers."""
    return _paired_dataset(root, name, images_dir, masks_dir, _gt_davis, cache, missing)


DRIVE_SPLITS = ("test", "training")


def _drive_key(path: Path) -> str:
    return path.stem.split("_")[0]


def _by_key(files: list[Path]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        key = _drive_key(f)
        if key in out:
            raise FinecutError(f"{f}: ambiguous: {out[key].name} has the same number {key!r}")
        out[key] = f
    return out


def read_drive(
    root: Path,
    *,
    name: str = "DRIVE",
    split: str = "test",
    annotator: int = 1,
    fov: bool = True,
    cache: FileCache | None = None,
) -> Dataset:
    """DRIVE retinal vessels: ``{split}/images/NN_*.{png,tif}``, ``{split}/{1st,2nd}_manual/NN_manual*.gif``
    (vessel = non-zero) and ``{split}/mask/NN_*_mask.gif``, the field of view, given as ``Sample.region``.

    ``split``: ``"test"`` (evaluation), ``"training"`` or ``"all"``; ``root`` may also be one split folder.
    ``annotator``: 1 or 2 (the second manual exists for the test split only).
    """
    root = require_dir(Path(root), "dataset folder")
    if annotator not in (1, 2):
        raise FinecutError(f"DRIVE annotator must be 1 or 2, got {annotator!r}")
    split = {"train": "training", "val": "test"}.get(split, split)
    if (root / "images").is_dir():
        split_dirs = [root]
    elif split == "all":
        split_dirs = [require_dir(root / s) for s in DRIVE_SPLITS]
    elif split in DRIVE_SPLITS:
        split_dirs = [require_dir(root / split)]
    else:
        raise FinecutError(f"unknown DRIVE split {split!r}: use test, training or all")
    cache = cache or FileCache()
    manual_name = f"{'1st' if annotator == 1 else '2nd'}_manual"
    refs = []
    for sdir in split_dirs:
        img_dir = require_dir(sdir / "images")
        man_dir = require_dir(sdir / manual_name)
        images = list_images(img_dir)
        if not images:
            raise FinecutError(f"{img_dir}: no images found")
        manuals = _by_key(list_images(man_dir))
        fovs = _by_key(list_images(require_dir(sdir / "mask"))) if fov else {}
        for img in images:
            key = _drive_key(img)
            if key not in manuals:
                raise FinecutError(f"{img}: no vessel mask {key}_manual{annotator}.* in {man_dir}")
            region = None
            if fov:
                if key not in fovs:
                    raise FinecutError(f"{img}: no field-of-view mask {key}_*_mask.* in {sdir / 'mask'}")
                region = partial(_region, cache, fovs[key])
            refs.append(
                SampleRef(
                    name=img.stem,
                    image_path=img,
                    load_gt=partial(_gt_binary_auto, cache, manuals[key]),
                    load_region=region,
                    meta={"dataset": name, "image_id": img.stem, "split": sdir.name},
                    mask_path=manuals[key],
                    load_image=loaders.image_loader(cache, img),
                )
            )
    return Dataset(name, refs, root, cache)


def _gt_crackforest(cache: FileCache, path: Path, min_label: int, labels: tuple[int, ...] | None) -> np.ndarray:
    seg = mat_label_map(structs_of(loaders.mat(cache, path), "groundTruth", path)[0], "Segmentation", path)
    crack = np.isin(seg, labels) if labels is not None else seg >= min_label
    return crack.astype(np.int8)


def read_crackforest(
    root: Path,
    *,
    name: str = "CrackForest",
    images_dir: str = "image",
    gt_dir: str = "groundTruth",
    min_label: int = 2,
    labels: tuple[int, ...] | None = None,
    cache: FileCache | None = None,
) -> Dataset:
    """CrackForest: ``groundTruth/NNN.mat`` (struct ``groundTruth.Segmentation``; 1 background, >= ``min_label``
    crack) with ``image/NNN.jpg``. Only images with ground truth are samples; a ``.mat`` without its image is an error.

    ``labels`` picks exact label values instead (e.g. ``(2,)``): in a few images (093, 097, 101, ...) label 3 marks
    whole patches of alligator cracking, 15-30 % of the image, rather than crack lines.
    """
    root = require_dir(Path(root), "dataset folder")
    img_dir, gt_path = require_dir(root / images_dir), require_dir(root / gt_dir)
    mats = sorted(p for p in gt_path.iterdir() if p.suffix.lower() == ".mat" and not p.name.startswith("."))
    if not mats:
        raise FinecutError(f"{gt_path}: no .mat ground-truth files found")
    images = {p.stem: p for p in list_images(img_dir)}
    cache = cache or FileCache()
    refs = []
    for m in mats:
        img = images.get(m.stem)
        if img is None:
            raise FinecutError(f"{m}: no image named {m.stem}.* in {img_dir}")
        refs.append(
            SampleRef(
                name=m.stem,
                image_path=img,
                load_gt=partial(_gt_crackforest, cache, m, min_label, None if labels is None else tuple(labels)),
                meta={"dataset": name, "image_id": m.stem},
                mask_path=m,
                load_image=loaders.image_loader(cache, img),
            )
        )
    return Dataset(name, refs, root, cache)
