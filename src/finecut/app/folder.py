"""The image folder the app annotates: listing, strict name resolution, size-checked reading, uploads.

Images are addressed by file name only; a name resolves only if it is one of the image files directly inside the
folder (a symbolic link there to an image file elsewhere counts: it is listed and opens), so no request can name a
path outside it. Images are read through the one loader of :mod:`finecut.io` (pixel limit checked on the header
before decoding, EXIF orientation applied). Nothing here ever writes over an existing file, and uploads must have a
plain, printable file name.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finecut.errors import FinecutError, TooLarge
from finecut.errors import NotAnImage as Undecodable
from finecut.io import IMAGE_SUFFIXES, atomic_write_bytes, decode_image, pixel_limit, read_image

#: Suffixes a browser can show directly; other images are converted to PNG when served.
BROWSER_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp")

#: Longest upload name, in UTF-8 bytes (file systems allow 255, and saves/temporary files add to the name).
MAX_NAME_BYTES = 200

#: Unicode categories refused in upload names: controls (newline, tab, ...), invisible format characters
#: (right-to-left override, zero-width ...), line/paragraph separators, surrogates, private use, unassigned.
_REFUSED_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")

__all__ = ["BROWSER_SUFFIXES", "ImageFolder", "ImageNotFound", "Limits", "NotAnImage", "TooLarge",
           "check_upload_name"]


class ImageNotFound(FinecutError):
    """The name is not an image file of the folder."""


class NotAnImage(Undecodable):
    """An upload that is not a decodable image of a supported type."""


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 64 * 1024 * 1024
    max_pixels: int = field(default_factory=pixel_limit)


def check_upload_name(name: str) -> None:
    """Refuse upload names that are not a plain, printable, new-file name (one-line :class:`FinecutError`)."""
    shown = repr(name if len(name) <= 60 else name[:60] + "...")
    if not name or name != Path(name).name or name in (".", "..") or name.startswith(".") or "\\" in name:
        raise FinecutError(f"upload name {shown} must be a plain file name (no folders, not hidden)")
    bad = sorted({f"U+{ord(c):04X}" for c in name if unicodedata.category(c) in _REFUSED_CATEGORIES})
    if bad:
        raise FinecutError(f"upload name {shown} contains control or invisible characters ({', '.join(bad[:5])})")
    if name != name.strip():
        raise FinecutError(f"upload name {shown} must not start or end with spaces")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise FinecutError(f"upload name {shown} is too long ({len(name.encode('utf-8'))} bytes in UTF-8, at most "
                           f"{MAX_NAME_BYTES})")


class ImageFolder:
    """Image files directly inside ``root`` (hidden files skipped), sorted by name."""

    def __init__(self, root: str | os.PathLike, limits: Limits | None = None) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FinecutError(f"{self.root}: image folder not found")
        self.limits = limits or Limits()

    def names(self) -> list[str]:
        """Image files directly inside the folder: regular files and symbolic links to regular files."""
        out = []
        for entry in os.scandir(self.root):
            if entry.name.startswith(".") or not entry.is_file():  # is_file() follows links: dangling ones drop out
                continue
            if Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                out.append(entry.name)
        return sorted(out, key=lambda n: (n.lower(), n))

    def path(self, name: str) -> Path:
        """The path of image ``name``; raises :class:`ImageNotFound` for anything that is not one of :meth:`names`."""
        if not name or "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
            raise ImageNotFound(f"{name[:80]!r} is not an image of the folder (names only, no paths)")
        if name not in self.names():
            raise ImageNotFound(f"{name[:80]!r} is not an image of the folder {self.root}")
        return self.root / name

    def check_size(self, path: Path) -> None:
        size = path.stat().st_size
        if size > self.limits.max_file_bytes:
            raise TooLarge(f"{path.name}: file is {size / 1e6:.1f} MB, over the limit of "
                           f"{self.limits.max_file_bytes / 1e6:.1f} MB")

    def check_pixels(self, name: str, height: int, width: int) -> None:
        if height * width > self.limits.max_pixels:
            raise TooLarge(f"{name}: image is {width}x{height} = {height * width / 1e6:.1f} MP, over the limit of "
                           f"{self.limits.max_pixels / 1e6:.1f} MP")

    def read(self, name: str) -> np.ndarray:
        """Read image ``name`` as RGB uint8 in displayed orientation, after checking its file size and (on its header,
        before decoding) its pixel count."""
        path = self.path(name)
        self.check_size(path)
        return read_image(path, max_pixels=self.limits.max_pixels)

    def save_upload(self, name: str, data: bytes) -> str:
        """Store uploaded bytes as a new image ``name`` (never replacing a file); returns the stored name."""
        check_upload_name(name)
        if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            raise NotAnImage(f"{name}: not an image file name (allowed: {', '.join(IMAGE_SUFFIXES)})")
        if len(data) > self.limits.max_file_bytes:
            raise TooLarge(f"{name}: upload is {len(data) / 1e6:.1f} MB, over the limit of "
                           f"{self.limits.max_file_bytes / 1e6:.1f} MB")
        try:
            decode_image(data, name, self.limits.max_pixels)  # header checked before decoding; TooLarge passes
        except Undecodable:
            raise NotAnImage(f"{name}: the uploaded data is not a decodable image") from None
        target = self.root / name
        if target.exists() or target.is_symlink():
            raise FinecutError(f"{name}: a file of that name already exists in the folder")
        try:
            atomic_write_bytes(target, data, overwrite=False)
        except OSError as exc:
            raise FinecutError(f"{name}: cannot store the upload ({exc.strerror or exc})") from None
        return name
