"""``open_dataset``: a known set by name (resolved under a data root) or any folder, its layout auto-detected.

Names: the benchmarks GrabCut, Berkeley, DAVIS (DAVIS345), DRIVE, CrackForest, COCO-MVal, SBD, PascalVOC; the training
sets COCO128, BSDS500, WeizmannHorse, MSRA10K; and the ``im`` + ``gt`` style sets DIS5K, ThinObject5K, HRSOD. A path
gets its layout from :func:`detect_kind` unless ``kind=`` says it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from finecut.datasets.base import Dataset
from finecut.datasets.benchmarks import read_berkeley, read_crackforest, read_davis, read_drive, read_grabcut
from finecut.datasets.coco import find_json, json_kind, read_coco_instances, read_coco_panoptic
from finecut.datasets.folders import find_folder_pair, read_folder
from finecut.datasets.instances import read_bsds, read_sbd, read_voc
from finecut.errors import FinecutError
from finecut.registration import Registry

DATA_ENV = "FINECUT_DATA"


#: The dataset layouts a folder can have: name -> reader ``read(path, name=..., **options) -> Dataset``.
KINDS = Registry("dataset kind")
KINDS.add("grabcut", read_grabcut, "data_GT/ + boundary_GT/ (128 = ignore, > 128 = object; RITM)")
KINDS.add("berkeley", read_berkeley, "images/ + masks/ read like GrabCut (RITM)")
KINDS.add("davis", read_davis, "img/ + gt/, every non-zero id = object (RITM DAVIS, COCO-MVal)")
KINDS.add("drive", read_drive, "DRIVE {test,training}/images + 1st_manual + mask (FOV region)")
KINDS.add("crackforest", read_crackforest, "image/ + groundTruth/*.mat (Segmentation >= 2 = crack)")
KINDS.add("bsds", read_bsds, "BSDS500 data/images + data/groundTruth/*.mat: one sample per human region")
KINDS.add("sbd", read_sbd, "SBD img/ + inst/*.mat: one sample per instance")
KINDS.add("voc", read_voc, "PASCAL VOC JPEGImages/ + SegmentationObject/ (255 = ignore): one per instance")
KINDS.add("coco_panoptic", read_coco_panoptic, "COCO panoptic JSON + PNGs: one sample per segment")
KINDS.add("coco_instances", read_coco_instances, "COCO instance JSON (polygons/RLE): one per annotation")
KINDS.add("folder", read_folder, "a folder of images + a folder of masks with matching stems")


@dataclass(frozen=True)
class KnownDataset:
    name: str
    kind: str | None  # None: detect the layout (also finds a folder of sub-sets, like DIS5K's DIS-TE1..4)
    paths: tuple[str, ...]  # candidate folders, relative to the data root
    description: str
    options: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    role: str = "benchmark"  # "benchmark" (never train on it) or "train"


#: CCP's folder layout: label maps (an id per garment / hair / skin label) named in labels.txt.
_CCP_LAYOUT: dict[str, Any] = {"images_dir": "images", "masks_dir": "masks", "objects": "instances",
                               "label_names": "labels.txt", "min_area": 64}

KNOWN: tuple[KnownDataset, ...] = (
    KnownDataset("GrabCut", "grabcut", ("benchmarks/GrabCut", "GrabCut"), "50 images, 128 = ignore band"),
    KnownDataset("Berkeley", "berkeley", ("benchmarks/Berkeley", "Berkeley"), "100 objects on 96 images"),
    KnownDataset("DAVIS", "davis", ("benchmarks/DAVIS345", "benchmarks/DAVIS", "DAVIS345", "DAVIS"),
                 "DAVIS-345, all objects of a frame merged", aliases=("DAVIS345", "DAVIS-345")),
    KnownDataset("DRIVE", "drive", ("benchmarks/DRIVE", "DRIVE"), "retinal vessels (thin), FOV region; split=test",
                 options={"split": "test"}),
    KnownDataset("CrackForest", "crackforest", ("benchmarks/CrackForest", "CrackForest"), "118 road cracks (thin)",
                 aliases=("CFD",)),
    KnownDataset("COCO-MVal", "davis", ("benchmarks/COCO_MVal", "benchmarks/COCO-MVal", "COCO_MVal", "COCO-MVal"),
                 "800 COCO objects (RITM img/ + gt/ layout)", aliases=("COCO_MVal", "COCOMVal")),
    KnownDataset("SBD", "sbd", ("benchmarks/SBD", "train/SBD", "SBD"), "SBD instances (img/ + inst/*.mat)"),
    KnownDataset("PascalVOC", "voc", ("benchmarks/PascalVOC", "train/PascalVOC", "PascalVOC", "VOC2012",
                                      "VOCdevkit/VOC2012"), "PASCAL VOC SegmentationObject instances",
                 aliases=("VOC", "PASCAL", "PascalVOC2012")),
    KnownDataset("DIS5K", None, ("benchmarks/DIS5K", "DIS5K"), "DIS5K im/ + gt/ (threshold 128)",
                 aliases=("DIS",)),
    KnownDataset("ThinObject5K", None, ("benchmarks/ThinObject5K", "ThinObject5K", "thin_object_detection/"
                                            "ThinObject5K"), "ThinObject-5K images/ + masks/",
                 aliases=("ThinObject", "ThinObject-5K")),
    KnownDataset("HRSOD", None, ("benchmarks/HRSOD", "HRSOD"), "HRSOD images + masks (threshold 128)"),
    KnownDataset("COCO128", "coco_panoptic", ("train/COCO128", "COCO128"),
                 "256 COCO photos, one sample per panoptic segment", role="train"),
    KnownDataset("BSDS500", "bsds", ("train/BSDS500", "BSDS500"), "human region partitions as candidate objects",
                 aliases=("BSDS",), role="train"),
    KnownDataset("WeizmannHorse", "folder", ("train/WeizmannHorse", "WeizmannHorse"), "328 horses (masks resized)",
                 options={"images_dir": "rgb", "masks_dir": "figure_ground", "resize_masks": True},
                 aliases=("Weizmann", "Horse"), role="train"),
    KnownDataset("MSRA10K", "folder", ("train/MSRA10K-168", "train/MSRA10K", "MSRA10K-168", "MSRA10K"),
                 "salient objects, images/ + gt/", options={"images_dir": "images", "masks_dir": "gt"},
                 aliases=("MSRA10K-168", "MSRA"), role="train"),
    KnownDataset("ECSSD", "folder", ("train/ECSSD", "ECSSD"), "948 salient-object photos of complex scenes",
                 options={"images_dir": "images", "masks_dir": "masks"}, role="train"),
    KnownDataset("CCP", "folder", ("train/CCP", "CCP"),
                 "1,004 street-fashion photos: one sample per garment / hair / skin label, plus the person",
                 options={**_CCP_LAYOUT, "union_object": True}, aliases=("ClothingCoParsing",), role="train"),
    KnownDataset("CCP-person", "folder", ("train/CCP", "CCP"),
                 "CCP's 1,004 photos, one sample each: the whole person (the union of its labels)",
                 options={**_CCP_LAYOUT, "union_only": True}, aliases=("CCP-whole",), role="train"),
)


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_KEY: dict[str, KnownDataset] = {_key(a): d for d in KNOWN for a in (d.name, *d.aliases)}


def list_datasets() -> dict[str, str]:
    """Every known dataset name ``open_dataset`` accepts, with a one-line description."""
    return {d.name: f"[{d.role}] {d.description}" for d in KNOWN}


def list_kinds() -> dict[str, str]:
    """Every layout (``kind=``) ``open_dataset`` can read, with a one-line description."""
    return {k: r.description for k, r in KINDS.items()}


def default_data_root() -> Path:
    """The data root: ``$FINECUT_DATA``, else ``../shared/data`` from the current directory (or from the source
    checkout), else a :class:`FinecutError` saying how to set it."""
    env = os.environ.get(DATA_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FinecutError(f"{path}: data root from ${DATA_ENV} not found")
        return path
    candidates = _root_candidates()
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    raise FinecutError(
        f"no data root: set ${DATA_ENV} to the folder holding the datasets, or pass root= "
        f"(looked in {candidates[0]})"
    )


def _root_candidates() -> list[Path]:
    """Where a data root is looked for without ``$FINECUT_DATA``: ``../shared/data`` from the current directory, then
    from the source checkout (``src/finecut/datasets`` -> repository root -> ``../shared/data``)."""
    return [Path.cwd() / ".." / "shared" / "data", Path(__file__).resolve().parents[4] / "shared" / "data"]


def known_dataset(name: str) -> KnownDataset | None:
    return _BY_KEY.get(_key(name))


def detect_kind(path: str | os.PathLike) -> str:
    """The layout of a dataset folder (or COCO JSON file), for :data:`KINDS`."""
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() == ".json":
            return json_kind(p)
        raise FinecutError(f"{p}: a dataset is a folder (or a COCO .json file)")

    def has(*names: str) -> bool:
        return all((p / n).is_dir() for n in names)

    if has("data_GT", "boundary_GT"):
        return "grabcut"
    if has("JPEGImages", "SegmentationObject"):
        return "voc"
    if has("images", "masks") and p.name.lower() == "berkeley":
        return "berkeley"
    if has("img", "inst"):
        return "sbd"
    if has("img", "gt"):
        return "davis"
    if any((p / s / "1st_manual").is_dir() for s in ("test", "training")) or has("images", "1st_manual", "mask"):
        return "drive"
    if any((b / "images").is_dir() and (b / "groundTruth").is_dir() for b in (p / "data", p)) and any(
        (b / "groundTruth" / s).is_dir() for b in (p / "data", p) for s in ("train", "val", "test")
    ):
        return "bsds"
    if has("image", "groundTruth") and any((p / "groundTruth").glob("*.mat")):
        return "crackforest"
    if find_json(p, "panoptic"):
        return "coco_panoptic"
    if find_json(p, "instances"):
        return "coco_instances"
    if find_folder_pair(p) is not None:
        return "folder"
    raise FinecutError(
        f"{p}: cannot tell the dataset layout (expected e.g. images/ + masks/, img/ + gt/, data_GT/ + boundary_GT/, "
        f"or a COCO JSON); pass kind= one of {', '.join(KINDS)}"
    )


def _read(kind: str, path: Path, name: str, options: dict[str, Any]) -> Dataset:
    reader = KINDS.entry(kind)  # an unknown kind: FinecutError naming the known ones
    try:
        return reader(path, name=name, **options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise FinecutError(f"dataset kind {kind!r}: {exc}".replace("read_", "")) from None
        raise


def _open_children(path: Path, name: str, options: dict[str, Any]) -> Dataset | None:
    """A folder of datasets of one kind (DIS5K's DIS-TE1..4, ...): their samples concatenated, names prefixed."""
    children = []
    for child in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            children.append((child, detect_kind(child)))
        except FinecutError:
            continue
    if not children or len({k for _, k in children}) != 1:
        return None
    parts = []
    for child, kind in children:
        ds = _read(kind, child, f"{name}/{child.name}", options)
        ds.refs = [replace(ref, name=f"{child.name}/{ref.name}") for ref in ds.refs]
        parts.append(ds)
    out = Dataset.concat(parts, name)
    out.root = path
    return out


def open_dataset(
    name_or_path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    kind: str | None = None,
    **options: Any,
) -> Dataset:
    """Open a dataset: a known name (see :func:`list_datasets`), resolved under ``root`` (default
    :func:`default_data_root`), or a path to a dataset folder whose layout is detected (or given as ``kind``).

    ``options`` go to the reader (e.g. ``split="training"`` for DRIVE, ``min_area_frac=`` for BSDS500,
    ``mask_suffix="_mask"`` for a folder); ``name=`` renames the dataset. Every sample is one object; see
    :class:`~finecut.datasets.base.Sample`.
    """
    text = str(name_or_path)
    label = options.pop("name", None)  # the dataset's name in runs and banks (default: the known name / folder name)
    known = known_dataset(text) if os.sep not in text and not Path(text).exists() else None
    if known is not None:
        base = Path(root).expanduser() if root is not None else default_data_root()
        tried = [base / rel for rel in known.paths]
        folder = next((t for t in tried if t.is_dir()), None)
        if folder is None and root is not None and _looks_like(base, kind or known.kind):
            folder = base
        if folder is None:
            raise FinecutError(
                f"dataset {known.name} not found under {base} (looked for {', '.join(str(t) for t in tried[:3])})"
            )
        return _open_path(folder, label or known.name, kind or known.kind, {**known.options, **options})
    path = Path(text).expanduser()
    if root is not None and not path.is_absolute() and not path.exists():
        path = Path(root).expanduser() / path  # a relative path is looked up in the current directory first
    if not path.exists():
        hint = f"; known names: {', '.join(d.name for d in KNOWN)}" if os.sep not in text else ""
        raise FinecutError(f"{path}: dataset folder not found{hint}")
    return _open_path(path, label or (path.stem if path.is_file() else path.name), kind, options)


def _open_path(path: Path, name: str, kind: str | None, options: dict[str, Any]) -> Dataset:
    if path.is_dir() and not any(path.iterdir()):
        raise FinecutError(f"{path}: dataset folder is empty")
    if path.is_file():
        kind = kind or detect_kind(path)
        if kind not in ("coco_panoptic", "coco_instances"):
            raise FinecutError(f"{path}: only COCO datasets can be opened from a file; give the dataset folder")
        options = {"json_path": path.name, **options}
        path = path.parent
    if kind is not None:
        return _read(kind, path, name, options)
    try:
        detected = detect_kind(path)
    except FinecutError:
        combined = _open_children(path, name, options) if path.is_dir() else None
        if combined is not None:
            return combined
        raise
    return _read(detected, path, name, options)


def _looks_like(folder: Path, kind: str | None) -> bool:
    try:
        return folder.is_dir() and (kind is None or detect_kind(folder) == kind)
    except FinecutError:
        return False
