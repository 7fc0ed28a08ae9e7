"""The image folder the app annotates: listing, strict name resolution, size-checked reading, uploads.

Images are addressed by file name only; a name resolves only if it is one of the image files directly inside the
folder, so no request can reach a path outside it. Nothing here ever writes over an existing file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from finecut.errors import FinecutError
from finecut.io import IMAGE_SUFFIXES, atomic_write_bytes, read_image

#: Suffixes a browser can show directly; other images are converted to PNG when served.
BROWSER_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp")


class ImageNotFound(FinecutError):
    """The name is not an image file of the folder."""


class TooLarge(FinecutError):
    """A file or image is over the configured limits."""


class NotAnImage(FinecutError):
    """The data is not a decodable image of a supported type."""


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 40_000_000


class ImageFolder:
    """Image files directly inside ``root`` (hidden files skipped), sorted by name."""

    def __init__(self, root: str | os.PathLike, limits: Limits | None = None) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FinecutError(f"{self.root}: image folder not found")
        self.limits = limits or Limits()

    def names(self) -> list[str]:
        out = []
        for entry in os.scandir(self.root):
            if entry.name.startswith(".") or not entry.is_file():
                continue
            if Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                out.append(entry.name)
        return sorted(out, key=lambda n: (n.lower(), n))

    def path(self, name: str) -> Path:
        """The path of image ``name``; raises :class:`ImageNotFound` for anything that is not one of :meth:`names`."""
        if not name or "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
            raise ImageNotFound(f"{name!r} is not an image of the folder (names only, no paths)")
        candidate = self.root / name
        if candidate.name != name or candidate.resolve().parent != self.root or name not in self.names():
            raise ImageNotFound(f"{name!r} is not an image of the folder {self.root}")
        return candidate

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
        """Read image ``name`` as RGB uint8, after checking its file size and pixel count."""
        path = self.path(name)
        self.check_size(path)
        image = read_image(path)
        self.check_pixels(name, image.shape[0], image.shape[1])
        return image

    def save_upload(self, name: str, data: bytes) -> str:
        """Store uploaded bytes as a new image ``name`` (never replacing a file); returns the stored name."""
        if not name or name != Path(name).name or name.startswith(".") or "\\" in name or "\x00" in name:
            raise FinecutError(f"upload name {name!r} must be a plain file name (no folders, not hidden)")
        if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            raise NotAnImage(f"{name}: not an image file name (allowed: {', '.join(IMAGE_SUFFIXES)})")
        if len(data) > self.limits.max_file_bytes:
            raise TooLarge(f"{name}: upload is {len(data) / 1e6:.1f} MB, over the limit of "
                           f"{self.limits.max_file_bytes / 1e6:.1f} MB")
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
        if decoded is None:
            raise NotAnImage(f"{name}: the uploaded data is not a decodable image")
        self.check_pixels(name, decoded.shape[0], decoded.shape[1])
        target = self.root / name
        if target.exists():
            raise FinecutError(f"{name}: a file of that name already exists in the folder")
        atomic_write_bytes(target, data, overwrite=False)
        return name
