"""CVAT interactor and Label Studio ML backend, exercised over real HTTP (uvicorn on 127.0.0.1) with the payload
shapes those tools send."""

import base64
import http.server
import threading

import cv2
import httpx
import numpy as np
import pytest
from doubles import DiskEngine
from helpers_app import LiveServer, photo_like

from finecut import FinecutError
from finecut.server import ServeConfig, create_server
from finecut.server.brush_rle import (
    brush_rle_to_mask,
    decode_rle,
    encode_rle,
    mask_to_brush_rle,
)
from finecut.server.labelstudio import parse_label_config

H, W = 120, 160

LS_CONFIG = """
<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image">
    <Label value="Banana" background="#FF0000"/>
    <Label value="Orange" background="#0d14d3"/>
  </BrushLabels>
  <KeyPointLabels name="tag2" toName="image" smart="true">
    <Label value="Banana" background="#000000" showInline="true"/>
    <Label value="Orange" background="#000000" showInline="true"/>
  </KeyPointLabels>
  <RectangleLabels name="tag3" toName="image">
    <Label value="Banana" background="#000000" showInline="true"/>
  </RectangleLabels>
</View>
"""

LS_POLYGON_CONFIG = """
<View>
  <Image name="img" value="$photo"/>
  <PolygonLabels name="poly" toName="img"><Label value="Cat"/></PolygonLabels>
  <KeyPointLabels name="kp" toName="img" smart="true"><Label value="Cat"/></KeyPointLabels>
</View>
"""


def png_bytes(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


# ------------------------------------------------------------------ Label Studio RLE
def reference_decode(rle: list[int]) -> np.ndarray:
    """An independent, string-based reading of the rle-pack bit stream (as label-studio-converter does it)."""
    bits = "".join(f"{b:08b}" for b in rle)
    pos = 0

    def read(n):
        nonlocal pos
        v = int(bits[pos : pos + n], 2)
        pos += n
        return v

    num = read(32)
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, np.uint8)
    i = 0
    while i < num:
        x = read(1)
        j = i + 1 + read(sizes[read(2)])
        if x:
            out[i:j] = read(word)
            i = j
        else:
            while i < j:
                out[i] = read(word)
                i += 1
    return out


def test_brush_rle_header_and_round_trip():
    mask = np.zeros((H, W), bool)
    mask[20:60, 30:90] = True
    mask[100, 5] = True
    rle = mask_to_brush_rle(mask)
    assert all(isinstance(b, int) and 0 <= b <= 255 for b in rle)
    bits = "".join(f"{b:08b}" for b in rle)
    assert int(bits[:32], 2) == H * W * 4
    assert int(bits[32:37], 2) + 1 == 8
    assert [int(bits[37 + 4 * k : 41 + 4 * k], 2) + 1 for k in range(4)] == [3, 4, 8, 16]
    flat = reference_decode(rle)
    assert np.array_equal(flat.reshape(H, W, 4)[:, :, 3] > 0, mask)
    assert set(np.unique(flat)) == {0, 255}
    assert np.array_equal(brush_rle_to_mask(rle, H, W), mask)


def test_rle_literals_and_long_runs():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.integers(0, 256, 300), np.full(200_000, 9), [1, 2, 3]]).astype(np.uint8)
    rle = encode_rle(values)
    assert np.array_equal(reference_decode(rle), values)
    assert np.array_equal(decode_rle(rle), values)
    with pytest.raises(FinecutError, match="truncated"):
        decode_rle(rle[: len(rle) // 2])
    with pytest.raises(FinecutError, match="expected"):
        brush_rle_to_mask(mask_to_brush_rle(np.ones((4, 4), bool)), 5, 5)


def test_parse_label_config():
    cfg = parse_label_config(LS_CONFIG)
    assert (cfg.from_name, cfg.to_name, cfg.image_key, cfg.kind) == ("tag", "image", "image", "brushlabels")
    assert cfg.labels == ("Banana", "Orange")
    poly = parse_label_config(LS_POLYGON_CONFIG)
    assert (poly.from_name, poly.image_key, poly.kind) == ("poly", "photo", "polygonlabels")
    with pytest.raises(FinecutError, match="no <BrushLabels>"):
        parse_label_config("<View><Image name='i' value='$i'/></View>")
    with pytest.raises(FinecutError, match="not valid XML"):
        parse_label_config("<View>")


# ------------------------------------------------------------------ servers
@pytest.fixture(scope="module")
def engine():
    return DiskEngine(radius=12)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ls")
    (root / "imgs").mkdir()
    image = photo_like(H, W)
    (root / "imgs" / "a.png").write_bytes(png_bytes(image))
    return root, image


@pytest.fixture(scope="module")
def server(engine, files):
    root, _ = files
    config = ServeConfig(
        model="disk",
        models=["disk", "disk2"],
        model_factory=lambda name: engine,
        local_files_root=root,
    )
    with LiveServer(create_server(config)) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client


def cvat_payload(image, pos, neg, bbox=None):
    # what CVAT's lambda manager posts to an interactor function
    return {
        "image": base64.b64encode(png_bytes(image)).decode("ascii"),
        "pos_points": pos,
        "neg_points": neg,
        "obj_bbox": bbox,
    }


def full_mask(answer, height=H, width=W):
    """A CVAT answer (``mask`` inside ``bounds``, inclusive pixel bounds) placed on the whole image, as CVAT does."""
    crop = np.array(answer["mask"])
    x0, y0, x1, y1 = answer["bounds"]
    assert crop.shape == (y1 - y0 + 1, x1 - x0 + 1) and set(np.unique(crop)) <= {0, 1}
    out = np.zeros((height, width), crop.dtype)
    out[y0 : y1 + 1, x0 : x1 + 1] = crop
    return out


def test_cvat_interactor_returns_2d_binary_mask(server, engine, files):
    _, image = files
    before = engine.encode_calls
    r = server.post("/cvat", json=cvat_payload(image, [[40.0, 50.0]], []))
    assert r.status_code == 200, r.text
    mask = full_mask(r.json())
    assert mask[50, 40] == 1 and mask[50, 100] == 0
    full = np.array(server.post("/cvat?format=full", json=cvat_payload(image, [[40.0, 50.0]], [])).json()["mask"])
    assert full.shape == (H, W) and np.array_equal(full, mask)
    # a second request adds a negative point: same image, so no new encoding
    r2 = server.post("/cvat", json=cvat_payload(image, [[40.0, 50.0]], [[50.0, 50.0]]))
    mask2 = full_mask(r2.json())
    assert mask2[50, 50] == 0 and mask2[50, 30] == 1
    assert engine.encode_calls == before + 1


def test_cvat_box_and_polygon_format(server, files):
    _, image = files
    payload = cvat_payload(image, [], [], bbox=[[60, 20], [140, 100]])
    mask = full_mask(server.post("/cvat/disk", json=payload).json())
    assert mask[60, 100] == 1 and mask[5, 5] == 0
    flat = dict(payload, obj_bbox=[60, 20, 140, 100])
    assert np.array_equal(full_mask(server.post("/cvat/disk", json=flat).json()), mask)
    poly = server.post("/cvat?format=polygon", json=cvat_payload(image, [[40, 50]], [])).json()["points"]
    pts = np.array(poly)
    assert pts.ndim == 2 and pts.shape[1] == 2 and len(pts) >= 4
    assert abs(pts[:, 0].mean() - 40) < 3 and abs(pts[:, 1].mean() - 50) < 3


def test_nuclio_dashboard_stand_in(server, files):
    _, image = files
    functions = server.get("/api/functions").json()
    assert set(functions) == {"finecut-disk", "finecut-disk2"}
    fn = functions["finecut-disk"]
    assert fn["metadata"]["annotations"]["type"] == "interactor"
    assert fn["status"]["state"] == "ready" and fn["spec"]["description"]
    assert server.get("/api/functions/finecut-disk2").json()["metadata"]["name"] == "finecut-disk2"
    headers = {"x-nuclio-function-name": "finecut-disk", "x-nuclio-path": "/", "x-nuclio-project-name": "cvat"}
    r = server.post("/api/function_invocations", json=cvat_payload(image, [[40, 50]], []), headers=headers)
    assert full_mask(r.json())[50, 40] == 1
    r = server.post("/api/function_invocations", json=cvat_payload(image, [[40, 50]], []),
                    headers={"x-nuclio-function-name": "finecut-nope"})
    assert r.status_code == 422 and "unknown function" in r.json()["detail"]
    direct = server.post("/", json=cvat_payload(image, [[40, 50]], []))
    assert full_mask(direct.json())[50, 40] == 1


def test_cvat_rejects_bad_requests(server, files):
    _, image = files
    r = server.post("/cvat", json={"pos_points": [[1, 1]], "neg_points": []})
    assert r.status_code == 422 and "image: Field required" in r.json()["detail"]
    r = server.post("/cvat", json={"image": base64.b64encode(b"hello").decode(), "pos_points": [[1, 1]]})
    assert r.status_code == 422 and "cannot decode image" in r.json()["detail"]
    r = server.post("/cvat", json=cvat_payload(image, [[1]], []))
    assert r.status_code == 422 and "pos_points[0][1]: Field required" in r.json()["detail"]
    r = server.post("/cvat", json=cvat_payload(image, [], []))
    assert r.status_code == 422 and "at least one point" in r.json()["detail"]
    r = server.post("/cvat/unknown", json=cvat_payload(image, [[1, 1]], []))
    assert r.status_code == 422 and "unknown model" in r.json()["detail"]


def ls_context(points, width=W, height=H):
    return {
        "result": [
            {
                "original_width": width,
                "original_height": height,
                "image_rotation": 0,
                "value": {"x": x * 100.0 / width, "y": y * 100.0 / height, "width": 0.6,
                          "keypointlabels": ["Orange"]},
                "is_positive": positive,
                "id": f"kp{i}",
                "from_name": "tag2",
                "to_name": "image",
                "type": "keypointlabels",
                "origin": "manual",
            }
            for i, (x, y, positive) in enumerate(points)
        ]
    }


def test_label_studio_health_setup_predict_brush(server):
    health = server.get("/health").json()
    assert health["status"] == "UP"
    setup = server.post("/setup", json={"project": "1.1700000000", "schema": LS_CONFIG, "hostname": "",
                                        "access_token": "", "model_version": ""})
    assert setup.status_code == 200 and setup.json()["model_version"].startswith("finecut")
    body = {
        "tasks": [{"id": 7, "data": {"image": "/data/local-files/?d=imgs/a.png"}}],
        "project": "1.1700000000",
        "label_config": LS_CONFIG,
        "params": {"login": None, "password": None,
                   "context": ls_context([(40, 50, True), (50, 50, False)])},
    }
    r = server.post("/predict", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["results"]) == 1
    pred = out["results"][0]
    assert 0 < pred["score"] <= 1
    (res,) = pred["result"]
    assert res["type"] == "brushlabels" and res["from_name"] == "tag" and res["to_name"] == "image"
    assert res["original_width"] == W and res["original_height"] == H
    assert res["value"]["format"] == "rle" and res["value"]["brushlabels"] == ["Orange"]
    mask = reference_decode(res["value"]["rle"]).reshape(H, W, 4)[:, :, 3] > 0
    assert mask[50, 30] and not mask[50, 50] and not mask[100, 150]


def test_label_studio_uses_setup_config_and_polygons(server, files):
    _, image = files
    server.post("/setup", json={"project": "poly", "schema": LS_POLYGON_CONFIG})
    uri = "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()
    ctx = ls_context([(40, 50, True)])
    for item in ctx["result"]:
        item["value"]["keypointlabels"] = ["Cat"]
    r = server.post("/predict", json={"tasks": [{"data": {"photo": uri}}], "project": "poly",
                                      "params": {"context": ctx}})
    assert r.status_code == 200, r.text
    (res,) = r.json()["results"][0]["result"]
    assert res["type"] == "polygonlabels" and res["from_name"] == "poly"
    pts = np.array(res["value"]["points"])
    assert res["value"]["polygonlabels"] == ["Cat"]
    assert abs(pts[:, 0].mean() - 40 * 100 / W) < 3 and abs(pts[:, 1].mean() - 50 * 100 / H) < 3


def test_label_studio_no_context_and_errors(server):
    body = {"tasks": [{"data": {"image": "/data/local-files/?d=imgs/a.png"}}], "label_config": LS_CONFIG,
            "params": {"context": None}}
    assert server.post("/predict", json=body).json()["results"] == []
    bad = dict(body, params={"context": ls_context([(40, 50, True)])})
    bad["tasks"] = [{"data": {"image": "/data/local-files/?d=../../etc/passwd"}}]
    r = server.post("/predict", json=bad)
    assert r.status_code == 422 and "not a file inside" in r.json()["detail"]
    bad["tasks"] = [{"data": {"image": "http://example.invalid/x.png"}}]
    r = server.post("/predict", json=bad)
    assert r.status_code == 422 and "disabled" in r.json()["detail"]


def test_label_studio_fetches_from_its_host_with_token(engine, files):
    _, image = files
    data = png_bytes(image)
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    ls = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=ls.serve_forever, daemon=True)
    thread.start()
    try:
        ls_url = f"http://127.0.0.1:{ls.server_address[1]}"
        config = ServeConfig(model="disk", models=["disk"], model_factory=lambda n: engine,
                             label_studio_url=ls_url, label_studio_token="secret")
        with LiveServer(create_server(config)) as url:
            body = {"tasks": [{"data": {"image": "/data/upload/1/a.png"}}], "label_config": LS_CONFIG,
                    "params": {"context": ls_context([(40, 50, True)])}}
            r = httpx.post(url + "/predict", json=body, timeout=30)
            assert r.status_code == 200, r.text
            assert r.json()["results"][0]["result"][0]["type"] == "brushlabels"
    finally:
        ls.shutdown()
    assert seen == [("/data/upload/1/a.png", "Token secret")]
