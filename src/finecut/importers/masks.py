"""A folder of PNG masks as input: per-object binary masks and instance-id maps, matched to images by name.

For an image ``NAME`` (stem ``STEM``) the masks folder may hold

* a subfolder ``NAME/`` or ``STEM/`` (a finecut PNG export has ``NAME/``): every ``*.png`` in it is one object, a
  binary mask (non-zero or >= 128 = object); its label is the file name without the ``<folder>_`` prefix and without
  an ``objNNN_`` prefix (``cat.jpg_obj002_dog.png`` -> ``dog``). Files named ``*_instances.png`` there are instance
  maps, read only when the folder has no per-object masks. The alpha mattes of a finecut export
  (``cat.jpg_obj002_dog_alpha.png`` beside ``cat.jpg_obj002_dog.png``, see :func:`finecut.export.is_alpha_file`) are
  not objects: they are skipped;
* else a file ``NAME.png`` or ``STEM.png``: an instance-id map (0 = background, each other value one object, in
  increasing order; a 0/255 mask is one object; a colour PNG: each colour but black one object).

Objects of instance maps have no label of their own: they get ``default_label``. Sizes must equal the image's
(displayed) size; anything else is reported and skipped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from finecut.errors import FinecutError
from finecut.export import export_key, is_alpha_file
from finecut.importers.base import ImageImport, ImportedObject, resolve_label
from finecut.io import read_label_image

#: Most objects read from one instance map.
MAX_INSTANCES = 1000

_OBJ_PREFIX = re.compile(r"obj(\d+)_(.*)", re.DOTALL)


def _label_of(file: Path, folder: str) -> tuple[int | None, str]:
    """(object number or None, label) of a per-object mask file."""
    stem = file.stem
    for prefix in (f"{folder}_", f"{Path(folder).stem}_"):
        if stem.startswith(prefix) and len(stem) > len(prefix):
            stem = stem[len(prefix):]
            break
    m = _OBJ_PREFIX.fullmatch(stem)
    if m:
        return int(m.group(1)), m.group(2)
    return None, stem


def _binary(path: Path) -> np.ndarray:
    arr = read_label_image(path)
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=2) if arr.shape[2] >= 3 else arr[..., 0]
    if arr.max(initial=0) <= 1:
        return arr > 0
    return arr >= (128 if arr.dtype == np.uint8 else 32768)


def instance_masks(arr: np.ndarray, what: str) -> list[np.ndarray]:
    """The objects of an instance map: one bool mask per non-zero value (or per non-black colour), in order."""
    if arr.ndim == 3:
        channels = arr[..., :3] if arr.shape[2] >= 3 else arr[..., :1]
        if arr.shape[2] >= 3 and not (np.array_equal(channels[..., 0], channels[..., 1])
                                      and np.array_equal(channels[..., 0], channels[..., 2])):
            flat = channels.reshape(-1, channels.shape[2]).astype(np.int64)
            keys = (flat[:, 0] << 32) | (flat[:, 1] << 16) | flat[:, 2]
            ids = keys.reshape(arr.shape[:2])
        else:
            ids = channels[..., 0]
    else:
        ids = arr
    values = np.unique(ids)
    values = values[values != 0]
    if len(values) > MAX_INSTANCES:
        raise FinecutError(f"{what}: {len(values)} instances, more than {MAX_INSTANCES}; is it an instance map?")
    return [ids == v for v in values]


def _folder_for(masks_dir: Path, name: str) -> Path | None:
    for candidate in dict.fromkeys((export_key(name), name, Path(name).stem)):
        folder = masks_dir / candidate
        if folder.is_dir():
            return folder
    return None


def _file_for(masks_dir: Path, name: str, image_path: Path | None) -> Path | None:
    for candidate in dict.fromkeys((f"{name}.png", f"{Path(name).stem}.png")):
        path = masks_dir / candidate
        if path.is_file() and (image_path is None or path.resolve() != image_path.resolve()):
            return path
    return None


def mask_folder_objects(masks_dir: str | Path, name: str, height: int, width: int, default_label: str,
                        labels: Sequence[str] | None = None, image_path: Path | None = None) -> ImageImport | None:
    """The objects of image ``name`` (``height`` × ``width``) in ``masks_dir``; None when it holds none for it.
    ``labels``: the label set (labels outside it are reported, not imported); ``image_path`` is never read as a
    mask."""
    root = Path(masks_dir)
    folder = _folder_for(root, name)
    out = ImageImport(name)
    if folder is not None:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file()
                       and not p.name.startswith("."))
        names = {p.name for p in files}
        files = [p for p in files if not is_alpha_file(p.name, names)]  # an export's mattes: not masks
        maps = [p for p in files if p.stem.endswith("_instances")]
        singles = [p for p in files if p not in maps]
        if singles:
            keyed = sorted(((_label_of(p, folder.name), p) for p in singles),
                           key=lambda item: (item[0][0] is None, item[0][0] or 0, item[1].name))
            for (_, raw_label), path in keyed:
                label = resolve_label(raw_label or default_label, labels)
                if label is None:
                    out.problems.append(f"{name}: {path.name}: label {raw_label!r} is not in the label set")
                    continue
                _add(out, path, label, height, width, binary=True)
            return out
        for path in maps:
            _add(out, path, default_label, height, width, binary=False)
        return out if maps else None
    path = _file_for(root, name, image_path)
    if path is None:
        return None
    _add(out, path, default_label, height, width, binary=False)
    return out


def _add(out: ImageImport, path: Path, label: str, height: int, width: int, binary: bool) -> None:
    try:
        if binary:
            masks = [_binary(path)]
        else:
            masks = instance_masks(read_label_image(path), str(path))
    except FinecutError as exc:
        out.problems.append(f"{out.image}: {exc}")
        return
    if masks and masks[0].shape != (height, width):
        h, w = masks[0].shape
        out.problems.append(f"{out.image}: {path.name} is {w}x{h}, the image is {width}x{height}; skipped")
        return
    for k, mask in enumerate(masks, start=1):
        if not mask.any():
            out.problems.append(f"{out.image}: {path.name} is empty")
            continue
        source = path.name if len(masks) == 1 else f"{path.name} instance {k}"
        out.objects.append(ImportedObject(label, mask, source))
