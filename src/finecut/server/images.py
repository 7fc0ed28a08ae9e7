"""Decoding images sent to the integration server (base64, data URIs, files, URLs) with size limits."""

from __future__ import annotations

import base64
import binascii
import hashlib
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from finecut.errors import FinecutError
from finecut.io import IMAGE_SUFFIXES


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray
    digest: str  # sha1 of the encoded bytes: the cache key of the image


def decode_image_bytes(data: bytes, what: str = "image", max_pixels: int = 40_000_000) -> DecodedImage:
    """Decode encoded image bytes (PNG, JPEG, ...) to RGB uint8."""
    if not data:
        raise FinecutError(f"{what}: no image data")
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise FinecutError(f"{what}: not a decodable image (PNG, JPEG, ...)")
    if arr.dtype == np.uint16:
        arr = (arr / 257.0).round().astype(np.uint8)
    if arr.dtype != np.uint8:
        raise FinecutError(f"{what}: unsupported pixel type {arr.dtype}")
    if arr.shape[0] * arr.shape[1] > max_pixels:
        raise FinecutError(f"{what}: image is {arr.shape[1]}x{arr.shape[0]}, over the limit of "
                           f"{max_pixels / 1e6:.1f} MP")
    if arr.ndim == 2:
        rgb = cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    elif arr.shape[2] == 4:
        rgb = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
    else:
        rgb = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    return DecodedImage(np.ascontiguousarray(rgb), hashlib.sha1(data).hexdigest())


def decode_base64_image(text: str, what: str = "image", max_pixels: int = 40_000_000) -> DecodedImage:
    """Decode a base64 string (optionally a ``data:image/...;base64,`` URI) to RGB."""
    if not isinstance(text, str) or not text:
        raise FinecutError(f"{what}: expected a base64-encoded image string")
    payload = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        data = base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise FinecutError(f"{what}: invalid base64 ({exc})") from exc
    return decode_image_bytes(data, what, max_pixels)


@dataclass(frozen=True)
class ImageSource:
    """Where Label Studio task images may be read from.

    ``label_studio_url`` + ``token``: URLs on that host and relative ``/data/...`` paths are fetched with
    ``Authorization: Token``. ``local_files_root``: ``/data/local-files/?d=REL`` is read from that folder (Label
    Studio's local storage). ``allow_urls``: other http(s) URLs may be fetched (off by default).
    """

    label_studio_url: str | None = None
    token: str | None = None
    local_files_root: Path | None = None
    allow_urls: bool = False
    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 40_000_000
    timeout: float = 30.0

    def load(self, ref: str) -> DecodedImage:
        if not isinstance(ref, str) or not ref:
            raise FinecutError("task image reference must be a non-empty string")
        if ref.startswith("data:"):
            return decode_base64_image(ref, "task image", self.max_pixels)
        parsed = urllib.parse.urlparse(ref)
        if parsed.path.startswith("/data/local-files") and self.local_files_root is not None:
            rel = urllib.parse.parse_qs(parsed.query).get("d", [""])[0]
            return self._local(rel, ref)
        if parsed.scheme in ("http", "https"):
            own = self.label_studio_url and _same_origin(ref, self.label_studio_url)
            if not own and not self.allow_urls:
                raise FinecutError(
                    f"{ref}: fetching images from other hosts is disabled (start the server with --allow-url-fetch, "
                    "or give --label-studio-url for the Label Studio host)"
                )
            return self._fetch(ref, send_token=bool(own))
        if ref.startswith("/") and self.label_studio_url:
            return self._fetch(self.label_studio_url.rstrip("/") + ref, send_token=True)
        raise FinecutError(
            f"{ref}: cannot read this task image (give --label-studio-url for /data/... paths, or "
            "--local-files-root for local storage)"
        )

    def _local(self, rel: str, ref: str) -> DecodedImage:
        root = Path(self.local_files_root).resolve()  # type: ignore[arg-type]
        path = (root / rel).resolve()
        if root not in path.parents or not path.is_file():
            raise FinecutError(f"{ref}: not a file inside the local files root {root}")
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise FinecutError(f"{ref}: not an image file")
        if path.stat().st_size > self.max_bytes:
            raise FinecutError(f"{ref}: file is over the limit of {self.max_bytes / 1e6:.1f} MB")
        return decode_image_bytes(path.read_bytes(), ref, self.max_pixels)

    def _fetch(self, url: str, send_token: bool) -> DecodedImage:
        headers = {"User-Agent": "finecut"}
        if send_token and self.token:
            headers["Authorization"] = f"Token {self.token}"
        req = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - scheme checked above
                data = resp.read(self.max_bytes + 1)
        except OSError as exc:
            raise FinecutError(f"{url}: cannot fetch image ({exc})") from exc
        if len(data) > self.max_bytes:
            raise FinecutError(f"{url}: image is over the limit of {self.max_bytes / 1e6:.1f} MB")
        return decode_image_bytes(data, url, self.max_pixels)


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urllib.parse.urlparse(a), urllib.parse.urlparse(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)
