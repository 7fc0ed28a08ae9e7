"""Reading label files (PNG/BMP/JPEG/GIF masks, palette PNGs, MATLAB ``.mat``) and turning them into ground truth.

Ground truth is int8 (H, W): 1 object, 0 background, -1 ignore. The ``gt_*`` functions are pure: they take the raw
label array as stored and return the ground truth of one object.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from finecut.errors import FinecutError
from finecut.io import image_header, read_label_image

IGNORE = -1


def _check_file(path: Path) -> None:
    if not path.exists():
        raise FinecutError(f"{path}: file not found")
    if not path.is_file():
        raise FinecutError(f"{path}: not a file")


def _open_pillow(path: Path):
    """A label file opened with Pillow (palette indices kept), after the loader's header checks (pixel limit), in
    displayed orientation."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    _check_file(path)
    header = image_header(path)
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise FinecutError(f"{path}: cannot decode image ({exc})") from None
    return ImageOps.exif_transpose(img) if header.orientation != 1 else img


def read_label(path: str | os.PathLike) -> np.ndarray:
    """A label/mask file as stored: (H, W) or (H, W, C) in OpenCV's BGR channel order.

    Palette PNGs come back as colours (what ``cv2.imread`` gives, as RITM reads them). GIFs are read with Pillow:
    palette indices for palette GIFs (DRIVE's ``{0, 1}`` palette masks), values for greyscale ones — OpenCV cannot
    decode GIF, and video decoders return palette colours shifted by colour conversion. Both through the one image
    loader of :mod:`finecut.io` (pixel limit, EXIF orientation).
    """
    return read_label_image(path)


def read_index_label(path: str | os.PathLike) -> np.ndarray:
    """A label map of integer ids (H, W): palette indices of a palette PNG/GIF, or the values of a greyscale one.

    An RGB file is accepted when its colours are those of the PASCAL VOC colour map (VOC masks saved without their
    palette); any other colour is an error naming the file.
    """
    p = Path(path)
    img = _open_pillow(p)
    if img.mode in ("P", "L", "I", "I;16"):
        return np.array(img).astype(np.int32)
    if img.mode == "1":
        return np.array(img).astype(np.int32)
    rgb = np.array(img.convert("RGB"))
    return _voc_colors_to_ids(rgb, p)


def voc_colormap(n: int = 256) -> np.ndarray:
    """The PASCAL VOC palette: (n, 3) uint8 RGB."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def _voc_colors_to_ids(rgb: np.ndarray, path: Path) -> np.ndarray:
    cmap = voc_colormap().astype(np.int64)
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = {int((r << 16) | (g << 8) | b): i for i, (r, g, b) in enumerate(cmap)}
    uniq, inverse = np.unique(codes, return_inverse=True)
    ids = np.empty(len(uniq), dtype=np.int32)
    for k, code in enumerate(uniq):
        if int(code) not in table:
            col = ((int(code) >> 16) & 255, (int(code) >> 8) & 255, int(code) & 255)
            raise FinecutError(f"{path}: colour {col} is not a PASCAL VOC palette colour (expected a palette PNG)")
        ids[k] = table[int(code)]
    return ids[inverse].reshape(codes.shape)


def load_mat(path: str | os.PathLike) -> dict[str, Any]:
    """The variables of a MATLAB ``.mat`` file (cells as lists, structs as dicts)."""
    import scipy.io

    p = Path(path)
    _check_file(p)
    try:
        return scipy.io.loadmat(str(p), simplify_cells=True)
    except NotImplementedError:
        raise FinecutError(f"{p}: MATLAB v7.3 (HDF5) files are not supported; save it with -v7") from None
    except Exception as exc:  # scipy raises ValueError/TypeError/OSError on corrupt files
        raise FinecutError(f"{p}: cannot read MATLAB file ({exc})") from None


def structs_of(data: dict[str, Any], var: str, path: str | os.PathLike) -> list[dict[str, Any]]:
    """Variable ``var`` of loaded ``.mat`` contents (from :func:`load_mat`) as a list of structs."""
    if var not in data:
        found = ", ".join(k for k in data if not k.startswith("__")) or "none"
        raise FinecutError(f"{path}: no variable {var!r} (found: {found})")
    value = data[var]
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, np.ndarray) and value.dtype == object:
        items = list(value.ravel())
    else:
        items = [value]
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise FinecutError(f"{path}: {var} must be a struct (or a cell of structs), got {type(item).__name__}")
        out.append(item)
    if not out:
        raise FinecutError(f"{path}: {var} is empty")
    return out


def mat_label_map(struct: dict[str, Any], field: str, path: str | os.PathLike) -> np.ndarray:
    """A 2-D integer map ``struct[field]`` from a loaded ``.mat`` struct."""
    if field not in struct:
        raise FinecutError(f"{path}: struct has no field {field!r} (fields: {', '.join(struct)})")
    arr = np.asarray(struct[field])
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise FinecutError(f"{path}: {field} must be a 2-D numeric map, got {arr.dtype} {arr.shape}")
    return arr


# ----------------------------------------------------------------------------------------------- encodings (pure)

def channel0(label: np.ndarray) -> np.ndarray:
    """Channel 0 as OpenCV stores it (blue), or the array itself when single-channel — RITM's ``[:, :, 0]``."""
    return label[..., 0] if label.ndim == 3 else label


def max_channel(label: np.ndarray) -> np.ndarray:
    """Maximum over colour channels (alpha excluded)."""
    return label[..., :3].max(axis=2) if label.ndim == 3 else label


def gt_ritm_grabcut(label: np.ndarray) -> np.ndarray:
    """RITM's GrabCut/Berkeley encoding: channel 0; 128 -> ignore, > 128 -> object; a value of exactly 1 is object too
    (RITM keeps the raw value and takes ``== 1`` as the object), every other value is background."""
    c = channel0(label).astype(np.int32)
    gt = np.zeros(c.shape, dtype=np.int8)
    gt[(c > 128) | (c == 1)] = 1
    gt[c == 128] = IGNORE
    return gt


def gt_davis(label: np.ndarray) -> np.ndarray:
    """RITM's DAVIS encoding: max over colour channels, every non-zero value (255 too) is object."""
    return (max_channel(label) > 0).astype(np.int8)


def binary_mask(label: np.ndarray, threshold: int = 128) -> np.ndarray:
    """A generic mask as bool: max over channels ``>= threshold``; a 0/1 mask (max <= 1) counts every non-zero."""
    m = max_channel(label)
    if m.max(initial=0) <= 1:
        return m > 0
    return m >= threshold


def gt_binary(label: np.ndarray, threshold: int = 128, ignore_values: Iterable[int] = ()) -> np.ndarray:
    """:func:`binary_mask` as int8 ground truth, with chosen raw values (max over channels) set to ignore."""
    gt = binary_mask(label, threshold).astype(np.int8)
    ignore = tuple(ignore_values)
    if ignore:
        gt[np.isin(max_channel(label), ignore)] = IGNORE
    return gt


def gt_from_ids(ids: np.ndarray, object_id: int, ignore_ids: Iterable[int] = ()) -> np.ndarray:
    """Ground truth of the object whose id is ``object_id`` in an id map; ``ignore_ids`` become ignore."""
    gt = (ids == object_id).astype(np.int8)
    ignore = tuple(ignore_ids)
    if ignore:
        gt[np.isin(ids, ignore) & (gt == 0)] = IGNORE
    return gt


def resize_label(label: np.ndarray, size_hw: tuple[int, int], smooth: bool = True) -> np.ndarray:
    """Resize a raw label array to ``size_hw``: bilinear for soft/binary masks (``smooth``), nearest for id maps."""
    h, w = size_hw
    if label.shape[:2] == (h, w):
        return label
    interp = cv2.INTER_LINEAR if smooth else cv2.INTER_NEAREST
    src = label if label.dtype in (np.uint8, np.uint16, np.float32) else label.astype(np.float32)
    out = cv2.resize(src, (w, h), interpolation=interp)
    return out.astype(label.dtype, copy=False)
