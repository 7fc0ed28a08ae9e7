"""Reading images and masks, writing masks and overlays, without ever losing what a user made.

Images come back as RGB ``uint8`` (H, W, 3); masks as ``bool`` (H, W). Every image any entry point reads (API, CLI,
app, CVAT, Label Studio, dataset readers) goes through one loader: the header's pixel count is checked against one
limit (:func:`pixel_limit`) before decoding, and the EXIF orientation is applied, so pixels come back as a browser
shows them. Writes are atomic (temporary file + rename) and refuse to replace an existing file unless asked to.
"""

from __future__ import annotations

import io
import math
import os
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from finecut.errors import FinecutError, NotAnImage, TooLarge

if TYPE_CHECKING:
    import PIL.Image

_UMASK = os.umask(0)
os.umask(_UMASK)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


#: Largest image, in megapixels, that any entry point decodes (``$FINECUT_MAX_MEGAPIXELS`` or an entry point's
#: ``--max-megapixels`` option replace it). The count is read from the file's header, before decoding.
DEFAULT_MAX_MEGAPIXELS = 40.0
MAX_MEGAPIXELS_ENV = "FINECUT_MAX_MEGAPIXELS"

_ORIENTATION_TAG = 0x0112  # EXIF / TIFF "Orientation"

#: What can go wrong when Pillow parses a hostile header (it raises whatever its parsers hit).
_HEADER_ERRORS = (OSError, ValueError, SyntaxError, EOFError, TypeError, KeyError, IndexError, ZeroDivisionError,
                  struct.error, MemoryError)


def megapixels_to_pixels(value: float | str, what: str = "--max-megapixels") -> int:
    """A pixel limit from a number of megapixels (a CLI option or the environment), validated."""
    try:
        mp = float(value)
    except (TypeError, ValueError):
        raise FinecutError(f"{what} must be a number of megapixels, got {value!r}") from None
    if not math.isfinite(mp) or mp <= 0:
        raise FinecutError(f"{what} must be a positive number of megapixels, got {value!r}")
    return max(1, round(mp * 1e6))


def pixel_limit() -> int:
    """The pixel limit in force: ``$FINECUT_MAX_MEGAPIXELS`` if set, else :data:`DEFAULT_MAX_MEGAPIXELS`."""
    value = os.environ.get(MAX_MEGAPIXELS_ENV, "").strip()
    return megapixels_to_pixels(value, MAX_MEGAPIXELS_ENV) if value else megapixels_to_pixels(DEFAULT_MAX_MEGAPIXELS)


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read without decoding the pixels. ``width`` / ``height`` are the displayed
    size (after the EXIF orientation); ``orientation`` is the EXIF value 1-8 (1: stored as displayed)."""

    stored_width: int
    stored_height: int
    orientation: int
    format: str | None

    @property
    def width(self) -> int:
        return self.stored_height if self.orientation >= 5 else self.stored_width

    @property
    def height(self) -> int:
        return self.stored_width if self.orientation >= 5 else self.stored_height

    @property
    def pixels(self) -> int:
        return self.stored_width * self.stored_height


def _orientation(im: "PIL.Image.Image") -> int:
    """The EXIF orientation of an opened (not loaded) image; 1 when absent or unreadable (as browsers treat it)."""
    if im.format == "PNG" and "exif" not in im.info:
        return 1  # Pillow would decode the whole PNG to look for an eXIf chunk after the image data
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except _HEADER_ERRORS:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _too_large(what: str, width: int, height: int, limit: int) -> TooLarge:
    return TooLarge(f"{what}: image is {width}x{height} = {width * height / 1e6:.1f} MP, over the limit of "
                    f"{limit / 1e6:.1f} MP (raise it with --max-megapixels or ${MAX_MEGAPIXELS_ENV})")


def image_header(source: str | os.PathLike | bytes, what: str | None = None,
                 max_pixels: int | None = None) -> ImageHeader:
    """Read an image's header (size, EXIF orientation, format) without decoding it, and check its pixel count against
    ``max_pixels`` (default :func:`pixel_limit`). Raises :class:`TooLarge` or :class:`NotAnImage` naming ``what``."""
    from PIL import Image, UnidentifiedImageError

    name = what if what is not None else (str(source) if not isinstance(source, bytes) else "image")
    limit = pixel_limit() if max_pixels is None else int(max_pixels)
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with Image.open(fp) as im:
            header = ImageHeader(int(im.width), int(im.height), _orientation(im), im.format)
    except Image.DecompressionBombError as exc:  # Pillow's own check, at twice its MAX_IMAGE_PIXELS
        refused_by = f"the limit of {limit / 1e6:.1f} MP"
        if limit > 2 * (Image.MAX_IMAGE_PIXELS or 0):
            refused_by = f"Pillow's limit of {2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.1f} MP"
        raise TooLarge(f"{name}: image is over {refused_by} ({_one_line(exc)})") from None
    except UnidentifiedImageError:
        raise NotAnImage(f"{name}: cannot decode image (unsupported or corrupt file)") from None
    except _HEADER_ERRORS as exc:
        raise NotAnImage(f"{name}: cannot decode image (corrupt file: {_one_line(exc)})") from None
    if header.stored_width < 1 or header.stored_height < 1:
        raise NotAnImage(f"{name}: cannot decode image (its header says {header.stored_width}x{header.stored_height})")
    if header.pixels > limit:
        raise _too_large(name, header.width, header.height, limit)
    return header


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(exc).__name__)


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels into displayed ones (the EXIF orientation transforms, as Pillow's ``exif_transpose``)."""
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = arr.swapaxes(0, 1)
    elif orientation == 6:
        arr = np.rot90(arr, -1)
    elif orientation == 7:
        arr = arr[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        arr = np.rot90(arr, 1)
    return np.ascontiguousarray(arr)


def _decode_pillow(data: bytes, flags: int) -> np.ndarray | None:
    """Decode with Pillow (GIF, which OpenCV cannot read, and formats OpenCV refuses): the first frame, palette indices
    kept for label reads, BGR(A) otherwise (OpenCV's layout)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if flags == cv2.IMREAD_UNCHANGED and im.mode in ("P", "L", "1"):
                return np.array(im.convert("L") if im.mode == "1" else im)
            if flags == cv2.IMREAD_GRAYSCALE:
                return np.array(im.convert("L"))
            return cv2.cvtColor(np.array(im.convert("RGB")), cv2.COLOR_RGB2BGR)
    except _HEADER_ERRORS:
        return None


def _load(source: str | os.PathLike | bytes, what: str | None, max_pixels: int | None, flags: int,
          pillow_fallback: bool) -> np.ndarray:
    """The one image loader: header check (size, orientation), decode, orientation applied; OpenCV's layout."""
    if isinstance(source, bytes):
        name = what or "image"
        if not source:
            raise NotAnImage(f"{name}: no image data")
        header = image_header(source, name, max_pixels)
        data = source
    else:
        p = Path(source)
        name = what or str(p)
        if not p.exists():
            raise FinecutError(f"{name}: file not found")
        if not p.is_file():
            raise FinecutError(f"{name}: not a file")
        header = image_header(p, name, max_pixels)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise FinecutError(f"{name}: cannot read file ({exc.strerror or exc})") from None
    arr = None
    oriented = False
    if header.format != "GIF":  # OpenCV cannot decode GIF (its video backend maps palettes to shifted colours)
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        oriented = arr is not None and header.format == "TIFF"  # OpenCV's TIFF decoder applies the orientation
    if arr is None and (header.format == "GIF" or pillow_fallback):
        arr = _decode_pillow(data, flags)
    if arr is None or arr.size == 0:
        raise NotAnImage(f"{name}: cannot decode image (unsupported or corrupt file)")
    limit = pixel_limit() if max_pixels is None else int(max_pixels)
    if arr.shape[0] * arr.shape[1] > limit:  # the decoder read another size than the header said
        raise _too_large(name, arr.shape[1], arr.shape[0], limit)
    return arr if oriented else _apply_orientation(arr, header.orientation)


def _to_rgb(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.dtype == np.uint16:
        arr = (arr / 257.0).round().astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise NotAnImage(f"{what}: unsupported pixel type {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 2:  # grey + alpha
        arr = arr[..., 0]
    if arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise NotAnImage(f"{what}: unsupported image layout {arr.shape}")
    if arr.shape[2] == 4:
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3) in displayed orientation (EXIF applied). The pixel count is checked
    on the header against ``max_pixels`` (default :func:`pixel_limit`) before decoding. Grey, 16-bit and alpha images
    are converted. Errors (:class:`FinecutError`) name the file."""
    return _to_rgb(_load(path, None, max_pixels, cv2.IMREAD_UNCHANGED, pillow_fallback=True), str(path))


def decode_image(data: bytes, what: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """:func:`read_image` for encoded bytes (uploads, base64 payloads, fetched URLs); errors name ``what``."""
    return _to_rgb(_load(bytes(data), what, max_pixels, cv2.IMREAD_UNCHANGED, pillow_fallback=True), what)


def read_label_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read a label/mask file without colour conversion: (H, W) or (H, W, C) as stored (BGR channel order), in
    displayed orientation, after the same header checks as :func:`read_image`."""
    return _load(path, None, max_pixels, cv2.IMREAD_UNCHANGED, pillow_fallback=False)


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


def refuse_existing(paths: Iterable[str | os.PathLike], hint: str) -> None:
    """Raise :class:`FinecutError` ``"PATH: already exists (HINT)"`` for the first of ``paths`` that exists — the
    check every writer of user-visible files makes before writing anything."""
    for path in paths:
        if Path(path).exists():
            raise FinecutError(f"{path}: already exists ({hint})")


def read_own_file(path: str | os.PathLike, first_line: str, what: str) -> str:
    """The text of a file finecut generates at ``path`` ("" when there is none, or it is empty), refusing one whose
    first line does not start with ``first_line`` — something else lives there, and rewriting it would lose it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise FinecutError(f"{p}: exists but cannot be read as {what} ({exc}); not overwriting it") from exc
    if text and not text.startswith(first_line):
        raise FinecutError(f"{p}: exists and is not {what} (its first line is not '{first_line}...'); "
                           "not overwriting it")
    return text


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
