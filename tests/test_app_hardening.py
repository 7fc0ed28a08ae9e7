"""The annotation app under hostile or careless input: non-finite and mistyped numbers, odd upload names, symlinks,
decompression bombs and EXIF orientation, and request bodies without Content-Length."""

from __future__ import annotations

import io
import os
import resource
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from doubles import DiskEngine
from helpers_app import LiveServer, photo_like
from PIL import Image

from finecut.app import AppConfig, create_app

H, W = 120, 160


def write_png(path: Path, image: np.ndarray) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def png_bomb(width: int, height: int) -> bytes:
    """A small greyscale PNG of ``width`` x ``height`` zeros (decodes to width * height bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    write_png(d / "a.png", photo_like(H, W, seed=1))
    return d


def make_app(folder: Path, **kw):
    engine = DiskEngine(radius=12)
    config = AppConfig(image_dir=folder, default_model="disk", models=["disk"], model_factory=lambda n: engine, **kw)
    return create_app(config)


@pytest.fixture()
def client(folder: Path) -> Iterator[TestClient]:
    with TestClient(make_app(folder), raise_server_exceptions=False) as c:
        yield c


def post_raw(client: TestClient, url: str, text: str) -> httpx.Response:
    return client.post(url, content=text.encode(), headers={"Content-Type": "application/json"})


# ------------------------------------------------------------------ item 9: types and finiteness
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_get_a_json_422_naming_the_field(client: TestClient, literal: str) -> None:
    cases = [
        ("click", f'{{"x": {literal}, "y": 5}}', "x"),
        ("click", f'{{"x": 5, "y": {literal}}}', "y"),
        ("threshold", f'{{"threshold": {literal}}}', "threshold"),
        ("box", f'{{"box": [0, 0, {literal}, 5]}}', "box"),
        ("scribble", f'{{"points": [[1, 2], [{literal}, 3]]}}', "points"),
        ("scribble", f'{{"points": [[1, 2]], "width": {literal}}}', "width"),
    ]
    for route, text, field in cases:
        r = post_raw(client, f"/api/images/a.png/{route}", text)
        assert r.status_code == 422, (route, text, r.status_code, r.text)
        body = r.json()  # the error body itself encodes
        assert field in body["detail"], (route, body)


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("click", {"x": True, "y": 5}, "x"),
        ("click", {"x": 5, "y": "12"}, "y"),
        ("click", {"x": 5, "y": 5, "kind": 3}, "kind"),
        ("threshold", {"threshold": "abc"}, "threshold"),
        ("threshold", {"threshold": True}, "threshold"),
        ("box", {"box": [True, 0, 10, 10]}, "box"),
        ("scribble", {"points": [[False, 2]]}, "points"),
        ("scribble", {"points": [[1, 2]], "positive": "yes"}, "positive"),
        ("finish", {"label": 5}, "label"),
        ("model", {"model": ["disk"]}, "model"),
    ],
)
def test_mistyped_fields_get_a_422_naming_the_field(client: TestClient, route: str, body: dict, field: str) -> None:
    r = client.post(f"/api/images/a.png/{route}", json=body)
    assert r.status_code == 422, (route, body, r.status_code, r.text)
    assert field in r.json()["detail"]


def test_export_and_relabel_validate_types(client: TestClient) -> None:
    r = client.post("/api/export", json={"formats": ["png"], "images": "a.png"})
    assert r.status_code == 422 and "images" in r.json()["detail"]
    r = client.request("PATCH", "/api/images/a.png/objects/1", json={"label": None})
    assert r.status_code == 422 and "label" in r.json()["detail"]
    assert client.delete("/api/images/a.png/objects/abc").status_code == 422


# ------------------------------------------------------------------ item 11: upload names, symlinks
@pytest.mark.parametrize("name", ["a%0Ab.png", "tab%09x.png", "bell%07.png", "rtl%E2%80%AEgnp.exe.png",
                                  "x" * 300 + ".png", " lead.png", "trail.png ", "%C3%A9" * 120 + ".png"])
def test_odd_upload_names_are_refused(client: TestClient, folder: Path, name: str) -> None:
    ok, buf = cv2.imencode(".png", np.zeros((20, 30, 3), np.uint8))
    before = set(os.listdir(folder))
    r = client.put(f"/api/upload/{name}", content=buf.tobytes())
    assert 400 <= r.status_code < 500, (name[:40], r.status_code, r.text[:200])
    assert "name" in r.json()["detail"]
    assert set(os.listdir(folder)) == before


def test_symlinked_images_are_listed_and_open(tmp_path: Path, folder: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_png(elsewhere / "b.png", photo_like(H, W, seed=5))
    (folder / "link.png").symlink_to(elsewhere / "b.png")
    (folder / "dangling.png").symlink_to(elsewhere / "missing.png")
    (folder / "dir.png").symlink_to(elsewhere, target_is_directory=True)
    with TestClient(make_app(folder), raise_server_exceptions=False) as c:
        names = [i["name"] for i in c.get("/api/images").json()["images"]]
        assert names == ["a.png", "link.png"]
        for name in names:
            assert c.get(f"/api/images/{name}/file").status_code == 200, name
            assert c.post(f"/api/images/{name}/open", json={}).status_code == 200, name
            assert c.post(f"/api/images/{name}/click", json={"x": 40, "y": 50}).status_code == 200, name
        for name in ("dangling.png", "dir.png"):
            assert c.post(f"/api/images/{name}/open", json={}).status_code == 404


# ------------------------------------------------------------------ items 2 and 3: one loader in the app
def test_bomb_in_the_folder_is_refused_from_its_header(folder: Path) -> None:
    (folder / "bomb.png").write_bytes(png_bomb(8000, 8000))  # 64 MP > 40 MP
    with TestClient(make_app(folder), raise_server_exceptions=False) as c:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        r = c.post("/api/images/bomb.png/open", json={})
        assert r.status_code == 413 and "8000x8000" in r.json()["detail"]
        assert c.get("/api/images/bomb.png/file").status_code == 413
        assert time.perf_counter() - start < 2.0
        assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 50


def test_bomb_upload_is_refused_without_decoding(folder: Path) -> None:
    with TestClient(make_app(folder), raise_server_exceptions=False) as c:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        r = c.put("/api/upload/bomb.png", content=png_bomb(8000, 8000))
        assert r.status_code == 413 and "limit" in r.json()["detail"]
        assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 50
        assert not (folder / "bomb.png").exists()


def test_exif_rotated_photo_is_segmented_in_displayed_orientation(folder: Path) -> None:
    stored = np.zeros((300, 451, 3), np.uint8)  # stored 451 wide, 300 high
    stored[:, :100] = 255  # a white band on the stored left = the displayed top (orientation 6: rotate 90 cw)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    (folder / "phone.jpg").write_bytes(buf.getvalue())
    with TestClient(make_app(folder), raise_server_exceptions=False) as c:
        opened = c.post("/api/images/phone.jpg/open", json={})
        assert opened.status_code == 200, opened.text
        assert (opened.json()["height"], opened.json()["width"]) == (451, 300)
        # displayed (x=250, y=400) is inside the 300-wide displayed image, outside the stored one's height
        r = c.post("/api/images/phone.jpg/click", json={"x": 250, "y": 400})
        assert r.status_code == 200, r.text


# ------------------------------------------------------------------ item 10: bodies without Content-Length
def chunked(total: int, piece: int = 64 * 1024) -> Iterator[bytes]:
    yield b'{"label": "'
    for _ in range(total // piece + 1):
        yield b"x" * piece
    yield b'"}'


def test_chunked_bodies_are_limited_on_every_route(folder: Path) -> None:
    app = make_app(folder)
    with LiveServer(app) as url:
        for method, path, total in [
            ("POST", "/api/images/a.png/click", 9_000_000),
            ("POST", "/api/images/a.png/finish", 9_000_000),
            ("POST", "/api/export", 9_000_000),
            ("PUT", "/api/upload/big.png", 70 * 1024 * 1024),
        ]:
            r = httpx.request(method, url + path, content=chunked(total), timeout=60,
                              headers={"Content-Type": "application/json"})
            assert r.status_code == 413, (path, r.status_code, r.text[:200])
            assert "limit" in r.json()["detail"]
        assert httpx.post(url + "/api/images/a.png/open", json={}, timeout=30).status_code == 200
