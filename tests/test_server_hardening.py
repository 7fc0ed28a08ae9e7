"""``finecut serve`` under hostile or careless input: Label Studio redirects and credentials, request validation
(types, NaN, Infinity), body limits without Content-Length, CVAT points outside the image, compact CVAT answers."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from doubles import DiskEngine
from helpers_app import LiveServer, photo_like

from finecut.server import ServeConfig, create_server

H, W = 120, 160


def png_bytes(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


LS_CONFIG = """
<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image"><Label value="Cat"/></BrushLabels>
  <KeyPointLabels name="kp" toName="image" smart="true"><Label value="Cat"/></KeyPointLabels>
</View>
"""


def ls_body(ref: str, x: Any = 25.0, y: Any = 40.0, **item: Any) -> dict[str, Any]:
    result = {"type": "keypointlabels", "original_width": W, "original_height": H, "is_positive": True,
              "value": {"x": x, "y": y, "keypointlabels": ["Cat"]}, **item}
    return {"tasks": [{"data": {"image": ref}}], "label_config": LS_CONFIG, "params": {"context": {"result": [result]}}}


def make_client(engine: DiskEngine | None = None, **kw: Any) -> TestClient:
    engine = engine or DiskEngine(radius=12)
    config = ServeConfig(model="disk", models=["disk"], model_factory=lambda name: engine, **kw)
    return TestClient(create_server(config), raise_server_exceptions=False)


# ------------------------------------------------------------------ Label Studio: redirects and the token
class Stub:
    """A tiny HTTP server on 127.0.0.1: ``routes`` maps a path to (status, headers, body); records every request."""

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        self.routes = routes
        self.seen: list[tuple[str, str | None]] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                stub.seen.append((self.path, self.headers.get("Authorization")))
                status, headers, body = stub.routes.get(self.path, (404, {}, b"no"))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Stub":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def image_png() -> bytes:
    return png_bytes(photo_like(H, W))


def redirect(location: str, code: int = 302) -> tuple[int, dict[str, str], bytes]:
    return code, {"Location": location}, b""


def test_label_studio_redirect_to_another_host_is_refused_by_default(image_png: bytes) -> None:
    with Stub({"/img.png": (200, {"Content-Type": "image/png"}, image_png)}) as storage, \
         Stub({"/data/upload/1/a.png": redirect(storage.url + "/img.png")}) as ls:
        client = make_client(label_studio_url=ls.url, label_studio_token="secret")
        r = client.post("/predict", json=ls_body("/data/upload/1/a.png"))
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert storage.url in detail and "redirect" in detail and "secret" not in detail
        assert storage.seen == []  # never even asked
        assert ls.seen == [("/data/upload/1/a.png", "Token secret")]


def test_label_studio_token_is_never_forwarded_to_another_origin(image_png: bytes) -> None:
    with Stub({"/presigned/img.png": (200, {}, image_png)}) as storage, \
         Stub({"/data/upload/1/a.png": redirect(storage.url + "/presigned/img.png", 307)}) as ls:
        storage_host = f"127.0.0.1:{storage.server.server_address[1]}"
        for kw in ({"allow_url_fetch": True}, {"allow_url_hosts": (storage_host,)}):
            storage.seen.clear()
            client = make_client(label_studio_url=ls.url, label_studio_token="secret", **kw)
            r = client.post("/predict", json=ls_body("/data/upload/1/a.png"))
            assert r.status_code == 200, r.text
            assert r.json()["results"][0]["result"][0]["type"] == "brushlabels"
            assert storage.seen == [("/presigned/img.png", None)], kw


def test_label_studio_same_origin_redirect_keeps_the_token_and_hops_are_capped(image_png: bytes) -> None:
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {
        "/data/upload/1/a.png": redirect("/data/upload/1/b.png", 301),
        "/data/upload/1/b.png": (200, {}, image_png),
        "/loop": redirect("/loop"),
        "/file": redirect("file:///etc/passwd"),
    }
    with Stub(routes) as ls:
        client = make_client(label_studio_url=ls.url, label_studio_token="secret", allow_url_fetch=True)
        assert client.post("/predict", json=ls_body("/data/upload/1/a.png")).status_code == 200
        assert ls.seen == [("/data/upload/1/a.png", "Token secret"), ("/data/upload/1/b.png", "Token secret")]
        ls.seen.clear()
        r = client.post("/predict", json=ls_body("/loop"))
        assert r.status_code == 422 and "redirects" in r.json()["detail"]
        assert 2 <= len(ls.seen) <= 11
        r = client.post("/predict", json=ls_body("/file"))
        assert r.status_code == 422 and "file:///etc/passwd" in r.json()["detail"]


# ------------------------------------------------------------------ validation: types and finiteness
@pytest.fixture()
def serve_client() -> Iterator[TestClient]:
    with make_client() as c:
        yield c


def cvat(image: np.ndarray, pos: Any = None, neg: Any = None, **extra: Any) -> dict[str, Any]:
    return {"image": b64(png_bytes(image)), "pos_points": [[40, 50]] if pos is None else pos,
            "neg_points": [] if neg is None else neg, **extra}


def raw_json(client: TestClient, url: str, text: str) -> httpx.Response:
    return client.post(url, content=text.encode(), headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"threshold": "abc"}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"pos_points": [[True, 5]]}, "pos_points"),
        ({"pos_points": [["12", 5]]}, "pos_points"),
        ({"pos_points": [[1, 2, 3]]}, "pos_points"),
        ({"neg_points": "x"}, "neg_points"),
        ({"obj_bbox": [[0, 0], [True, 5]]}, "obj_bbox"),
        ({"image": 123}, "image"),
    ],
)
def test_cvat_bad_fields_get_a_4xx_naming_the_field(serve_client: TestClient, change: dict, field: str) -> None:
    r = serve_client.post("/cvat", json=cvat(photo_like(H, W)) | change)
    assert r.status_code == 422, (change, r.status_code, r.text)
    assert field in r.json()["detail"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_get_a_json_4xx(serve_client: TestClient, literal: str) -> None:
    image = b64(png_bytes(photo_like(H, W)))
    for text, field in [
        (f'{{"image": "{image}", "pos_points": [[{literal}, 5]], "neg_points": []}}', "pos_points"),
        (f'{{"image": "{image}", "pos_points": [[5, 5]], "threshold": {literal}}}', "threshold"),
        (f'{{"image": "{image}", "pos_points": [], "obj_bbox": [0, 0, {literal}, 9]}}', "obj_bbox"),
    ]:
        r = raw_json(serve_client, "/cvat", text)
        assert r.status_code == 422, (text[-60:], r.status_code, r.text)
        assert field in r.json()["detail"]
    body = json.dumps(ls_body("data:image/png;base64," + image, x=0.5)).replace("0.5", literal, 1)
    r = raw_json(serve_client, "/predict", body)
    assert r.status_code == 422 and "x" in r.json()["detail"], r.text


@pytest.mark.parametrize(("change", "field"), [
    ({"x": True}, "x"), ({"x": "abc"}, "x"), ({"original_width": "abc"}, "original_width"),
    ({"original_width": 0}, "original_width"), ({"original_height": -3}, "original_height"),
])
def test_label_studio_bad_context_gets_a_4xx(serve_client: TestClient, change: dict, field: str) -> None:
    ref = "data:image/png;base64," + b64(png_bytes(photo_like(H, W)))
    body = ls_body(ref)
    item = body["params"]["context"]["result"][0]
    for key, value in change.items():
        (item["value"] if key in ("x", "y") else item)[key] = value
    r = serve_client.post("/predict", json=body)
    assert r.status_code == 422, (change, r.status_code, r.text)
    assert field in r.json()["detail"]


# ------------------------------------------------------------------ CVAT: points outside the image, compact answers
def test_cvat_points_outside_the_image_are_refused_like_the_app(serve_client: TestClient) -> None:
    image = photo_like(H, W)
    r = serve_client.post("/cvat", json=cvat(image, pos=[[40, 50], [500, 50]]))
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "(500, 50)" in detail and f"{W}x{H}" in detail and "pos_points" in detail
    r = serve_client.post("/cvat", json=cvat(image, pos=[[40, 50]], neg=[[-1, 5]]))
    assert r.status_code == 422 and "(-1, 5)" in r.json()["detail"]
    # a point on the image's far edge (CVAT's canvas allows it) is still taken
    assert serve_client.post("/cvat", json=cvat(image, pos=[[W, H]])).status_code == 200


def test_cvat_box_errors_quote_the_box_as_sent(serve_client: TestClient) -> None:
    image = photo_like(H, W)
    r = serve_client.post("/cvat", json=cvat(image, pos=[], obj_bbox=[[-50, -50], [-10, -10]]))
    assert r.status_code == 422
    assert "(-50, -50, -10, -10)" in r.json()["detail"]
    r = serve_client.post("/cvat", json=cvat(image, pos=[], obj_bbox=[[10, 10], [W + 40, 50]]))
    assert r.status_code == 422 and f"{W + 40}" in r.json()["detail"]
    ok = serve_client.post("/cvat", json=cvat(image, pos=[], obj_bbox=[[0, 0], [W, H]]))
    assert ok.status_code == 200


def paste(answer: dict[str, Any], height: int, width: int) -> np.ndarray:
    """A CVAT interactor answer as a full-size mask (what CVAT's UI does with ``mask`` + ``bounds``)."""
    crop = np.array(answer["mask"], dtype=np.uint8)
    full = np.zeros((height, width), np.uint8)
    x0, y0, x1, y1 = answer.get("bounds", [0, 0, width - 1, height - 1])
    assert crop.shape == (y1 - y0 + 1, x1 - x0 + 1)
    full[y0 : y1 + 1, x0 : x1 + 1] = crop
    return full


def test_cvat_answer_is_compact_on_a_large_image(serve_client: TestClient) -> None:
    big_h, big_w = 2000, 3000
    image = np.full((big_h, big_w, 3), 120, np.uint8)
    payload = cvat(image, pos=[[1500, 1000]])
    r = serve_client.post("/cvat", json=payload, headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert len(r.content) < 20_000, f"{len(r.content)} bytes for one click"
    mask = paste(r.json(), big_h, big_w)
    assert mask[1000, 1500] == 1 and mask.sum() < 2000 and mask[0, 0] == 0
    full = serve_client.post("/cvat?format=full", json=payload).json()
    assert np.array_equal(np.array(full["mask"], np.uint8), mask)
    # a large object is still small on the wire: the answer is gzip-compressed for clients that accept it
    box = cvat(image, pos=[], obj_bbox=[[10, 10], [2990, 1990]])
    r = serve_client.post("/cvat", json=box, headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers.get("content-encoding") == "gzip"
    assert int(r.headers["content-length"]) < 500_000
    assert paste(r.json(), big_h, big_w)[1000, 1500] == 1


def test_cvat_empty_mask_answer(serve_client: TestClient) -> None:
    answer = serve_client.post("/cvat", json=cvat(photo_like(H, W), pos=[[40, 50]], neg=[[40, 50]])).json()
    assert paste(answer, H, W).sum() == 0


# ------------------------------------------------------------------ body limits while streaming
def chunks(total: int, piece: int = 64 * 1024) -> Iterator[bytes]:
    yield b'{"image": "'
    sent = 0
    while sent < total:
        yield b"A" * piece
        sent += piece
    yield b'", "pos_points": [[1, 1]]}'


@pytest.mark.parametrize("path", ["/cvat", "/predict", "/setup", "/api/function_invocations"])
def test_bodies_without_content_length_are_limited_while_streaming(path: str) -> None:
    config = ServeConfig(model="disk", models=["disk"], model_factory=lambda name: DiskEngine(), max_body_bytes=300_000)
    with LiveServer(create_server(config)) as url:
        r = httpx.post(url + path, content=chunks(1_000_000), headers={"Content-Type": "application/json"},
                       timeout=30)
        assert r.status_code == 413, (path, r.status_code, r.text[:200])
        assert "limit" in r.json()["detail"]
        small = httpx.post(url + "/cvat", json={"image": b64(png_bytes(photo_like(H, W))), "pos_points": [[5, 5]]},
                           timeout=30)
        assert small.status_code == 200
