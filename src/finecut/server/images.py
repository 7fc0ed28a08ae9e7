"""Decoding images sent to the integration server (base64, data URIs, files, URLs) with size limits."""

from __future__ import annotations

import base64
import binascii
import hashlib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finecut.errors import FinecutError
from finecut.io import IMAGE_SUFFIXES, decode_image, pixel_limit

#: Most redirects followed when fetching a task image (every hop is checked against the allow-list).
MAX_REDIRECTS = 5
_REDIRECT_CODES = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray
    digest: str  # sha1 of the encoded bytes: the cache key of the image


def decode_image_bytes(data: bytes, what: str = "image", max_pixels: int | None = None) -> DecodedImage:
    """Decode encoded image bytes (PNG, JPEG, ...) to RGB uint8 through the one image loader (pixel limit checked on
    the header before decoding, EXIF orientation applied)."""
    rgb = decode_image(data, what, max_pixels)
    return DecodedImage(rgb, hashlib.sha1(data).hexdigest())


def decode_base64_image(text: str, what: str = "image", max_pixels: int | None = None) -> DecodedImage:
    """Decode a base64 string (optionally a ``data:image/...;base64,`` URI) to RGB."""
    if not isinstance(text, str) or not text:
        raise FinecutError(f"{what}: expected a base64-encoded image string")
    payload = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        data = base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise FinecutError(f"{what}: invalid base64 ({exc})") from exc
    return decode_image_bytes(data, what, max_pixels)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are followed by :meth:`ImageSource._fetch` itself, one checked hop at a time (urllib would forward
    the Authorization header to any host)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


@dataclass(frozen=True)
class ImageSource:
    """Where Label Studio task images may be read from.

    ``label_studio_url`` + ``token``: URLs on that origin and relative ``/data/...`` paths are fetched with
    ``Authorization: Token``; the token is sent to that origin only, never to another one. ``local_files_root``:
    ``/data/local-files/?d=REL`` is read from that folder (Label Studio's local storage). Other http(s) URLs may be
    fetched when ``allow_urls`` is on (any host) or their host is in ``allowed_hosts`` (``host`` or ``host:port``).
    Redirects are followed up to :data:`MAX_REDIRECTS` hops, each hop checked against those rules.
    """

    label_studio_url: str | None = None
    token: str | None = None
    local_files_root: Path | None = None
    allow_urls: bool = False
    allowed_hosts: tuple[str, ...] = ()
    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = field(default_factory=pixel_limit)
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
            return self._fetch(ref)
        if ref.startswith("/") and self.label_studio_url:
            return self._fetch(self.label_studio_url.rstrip("/") + ref)
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

    def _is_label_studio(self, url: str) -> bool:
        return bool(self.label_studio_url) and _same_origin(url, self.label_studio_url)  # type: ignore[arg-type]

    def _check_allowed(self, url: str, start: str) -> None:
        """Refuse a URL (the first one or a redirect hop) that the allow-list does not cover."""
        via = "" if url == start else f"{start}: redirected to "
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise FinecutError(f"{via}{url}: not an http(s) URL; refusing to fetch it")
        if self._is_label_studio(url) or self.allow_urls or _host_key(url) & set(self.allowed_hosts):
            return
        raise FinecutError(
            f"{via}{url}: fetching images from other hosts is disabled (start the server with --allow-url-host "
            f"{parsed.hostname} or --allow-url-fetch, or give --label-studio-url for the Label Studio host)"
        )

    def _fetch(self, url: str) -> DecodedImage:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            self._check_allowed(current, url)
            data, location = self._get(current, send_token=self._is_label_studio(current))
            if location is None:
                if len(data) > self.max_bytes:
                    raise FinecutError(f"{url}: image is over the limit of {self.max_bytes / 1e6:.1f} MB")
                return decode_image_bytes(data, url, self.max_pixels)
            current = urllib.parse.urljoin(current, location)
        raise FinecutError(f"{url}: more than {MAX_REDIRECTS} redirects; giving up")

    def _get(self, url: str, send_token: bool) -> tuple[bytes, str | None]:
        """One GET without following redirects: (body, None), or (b"", Location) for a redirect."""
        headers = {"User-Agent": "finecut"}
        if send_token and self.token:
            headers["Authorization"] = f"Token {self.token}"
        req = urllib.request.Request(url, headers=headers)
        try:
            with _OPENER.open(req, timeout=self.timeout) as resp:  # noqa: S310 - scheme and host checked
                return resp.read(self.max_bytes + 1), None
        except urllib.error.HTTPError as exc:
            location = exc.headers.get("Location") if exc.code in _REDIRECT_CODES else None
            exc.close()
            if location:
                return b"", location
            raise FinecutError(f"{url}: cannot fetch image (HTTP {exc.code} {exc.reason})") from None
        except (OSError, ValueError) as exc:
            raise FinecutError(f"{url}: cannot fetch image ({exc})") from None


def _origin(url: str) -> tuple[str, str | None, int | None]:
    p = urllib.parse.urlparse(url)
    try:
        port = p.port or {"http": 80, "https": 443}.get(p.scheme)
    except ValueError:
        port = None
    return p.scheme, p.hostname, port


def _same_origin(a: str, b: str) -> bool:
    return _origin(a) == _origin(b)


def _host_key(url: str) -> set[str]:
    """The allow-list entries that cover ``url``: its host, and its host:port."""
    _, host, port = _origin(url)
    return {host or "", f"{host}:{port}"}
