"""Reading images and masks, writing masks and overlays, without ever losing what a user made.

Images come back as RGB ``uint8`` (H, W, 3); masks as ``bool`` (H, W). Writes are atomic (temporary file + rename)
and refuse to replace an existing file unless asked to.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from finecut.errors import FinecutError

_UMASK = os.umask(0)
os.umask(_UMASK)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


def _read_raw(path: str | os.PathLike, flags: int) -> np.ndarray:
    p = Path(path)
    if not p.exists():
        raise FinecutError(f"{p}: file not found")
    if not p.is_file():
        raise FinecutError(f"{p}: not a file")
    if p.suffix.lower() == ".gif":  # palette GIFs: keep the indices (OpenCV would map them to colours)
        arr = _read_gif(p, flags)
    else:
        data = np.fromfile(str(p), dtype=np.uint8)
        arr = cv2.imdecode(data, flags) if data.size else None
    if arr is None:
        raise FinecutError(f"{p}: cannot decode image (unsupported or corrupt file)")
    return arr


def _read_gif(path: Path, flags: int) -> np.ndarray | None:
    """First frame of a GIF (OpenCV cannot decode GIF): palette indices for labels, BGR for colour reads."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if flags == cv2.IMREAD_UNCHANGED and im.mode in ("P", "L", "1"):
                return np.array(im.convert("L") if im.mode == "1" else im)
            if flags == cv2.IMREAD_GRAYSCALE:
                return np.array(im.convert("L"))
            return cv2.cvtColor(np.array(im.convert("RGB")), cv2.COLOR_RGB2BGR)
    except (UnidentifiedImageError, OSError):
        return None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3). Grayscale and alpha images are converted."""
    arr = _read_raw(path, cv2.IMREAD_UNCHANGED)
    if arr.dtype != np.uint8:
        if arr.dtype == np.uint16:
            arr = (arr / 257.0).round().astype(np.uint8)
        else:
            raise FinecutError(f"{path}: unsupported pixel type {arr.dtype}")
    if arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    if arr.shape[2] == 4:
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def read_label_image(path: str | os.PathLike) -> np.ndarray:
    """Read a label/mask file without colour conversion: (H, W) or (H, W, C) as stored (BGR channel order)."""
    return _read_raw(path, cv2.IMREAD_UNCHANGED)


def read_mask(path: str | os.PathLike, threshold: int = 128) -> np.ndarray:
    """Read a mask file as bool (H, W): pixels whose first channel is >= ``threshold`` (or any non-zero for 0/1)."""
    arr = read_label_image(path)
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.max(initial=0) <= 1:
        return arr > 0
    return arr >= threshold


def check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Validate an RGB uint8 (H, W, 3) array; return it as a contiguous array."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise FinecutError(f"{what} must be RGB with shape (H, W, 3), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise FinecutError(f"{what} must be uint8, got {arr.dtype}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise FinecutError(f"{what} is empty (shape {arr.shape})")
    return np.ascontiguousarray(arr)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename, so readers never see half a file."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise FinecutError(f"{p}: already exists (refusing to overwrite; pass overwrite to replace it)")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=str(p.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def encode_png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise FinecutError("failed to encode PNG")
    return buf.tobytes()


def write_mask(path: str | os.PathLike, mask: np.ndarray, overwrite: bool = False) -> Path:
    """Write a bool mask as a 0/255 single-channel PNG."""
    return atomic_write_bytes(path, encode_png(np.asarray(mask, dtype=bool).astype(np.uint8) * 255), overwrite)


def write_image(path: str | os.PathLike, image: np.ndarray, overwrite: bool = False) -> Path:
    """Write an RGB uint8 image as PNG."""
    return atomic_write_bytes(path, encode_png(cv2.cvtColor(check_image(image), cv2.COLOR_RGB2BGR)), overwrite)


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    color: tuple[int, int, int] = (30, 144, 255),
    alpha: float = 0.5,
    clicks: "list | tuple" = (),
) -> np.ndarray:
    """Blend ``mask`` over ``image`` in ``color``, outline it, and draw clicks (green +, red -, yellow tolerant)."""
    img = check_image(image).copy()
    m = np.asarray(mask, dtype=bool)
    tint = np.array(color, dtype=np.float32)
    img[m] = (img[m].astype(np.float32) * (1 - alpha) + tint * alpha).round().astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    thickness = max(1, round(max(img.shape[:2]) / 400))
    cv2.drawContours(img, contours, -1, (255, 255, 255), thickness)
    colors = {"positive": (0, 220, 0), "negative": (230, 0, 0), "tolerant": (255, 210, 0)}
    radius = max(3, round(max(img.shape[:2]) / 120))
    for click in clicks:
        center = (int(round(click.x)), int(round(click.y)))
        cv2.circle(img, center, radius, colors[click.kind.value], -1, cv2.LINE_AA)
        cv2.circle(img, center, radius, (0, 0, 0), 1, cv2.LINE_AA)
    return img
