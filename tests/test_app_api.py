"""The annotation app's HTTP API (in-process TestClient, plus one live server for concurrency)."""

import json
import threading

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers_app import DiskEngine, LiveServer, photo_like

from finecut.app import AppConfig, create_app
from finecut.app.folder import Limits
from finecut.app.service import mask_runs
from finecut.io import read_label_image, read_mask

H, W = 120, 160


def decode_runs(runs, h=H, w=W):
    flat = np.zeros(h * w, bool)
    pos, on = 0, False
    for n in runs:
        if on:
            flat[pos : pos + n] = True
        pos += n
        on = not on
    assert pos == h * w
    return flat.reshape(h, w)


def write_png(path, image):
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    write_png(d / "a.png", photo_like(H, W, seed=1))
    write_png(d / "b.png", photo_like(H, W, seed=2))
    (d / "broken.jpg").write_bytes(b"definitely not a jpeg")
    (d / "notes.txt").write_text("not an image")
    (d / ".hidden.png").write_bytes((d / "a.png").read_bytes())
    return d


def make_config(folder, **kw):
    engines = {"disk": DiskEngine(radius=12), "big": DiskEngine(radius=30)}
    kw.setdefault("models", ["disk", "big"])
    return AppConfig(image_dir=folder, default_model="disk", model_factory=engines.__getitem__, **kw), engines


@pytest.fixture()
def client(folder):
    config, engines = make_config(folder)
    with TestClient(create_app(config)) as c:
        c.engines = engines
        yield c


def test_mask_runs_round_trip():
    m = np.zeros((H, W), bool)
    m[0, 0] = True
    m[10:20, 30:50] = True
    assert decode_runs(mask_runs(m)).tolist() == m.tolist()
    assert mask_runs(np.zeros((2, 3), bool)) == [6]


def test_page_config_and_listing(client):
    page = client.get("/")
    assert page.status_code == 200 and "app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/app.css").status_code == 200
    cfg = client.get("/api/config").json()
    assert cfg["default_model"] == "disk" and [m["name"] for m in cfg["models"]] == ["disk", "big"]
    names = [im["name"] for im in client.get("/api/images").json()["images"]]
    assert names == ["a.png", "b.png", "broken.jpg"]  # no hidden files, no non-images


def test_click_undo_redo_reset_threshold(client):
    s = client.post("/api/images/a.png/open", json={}).json()
    assert (s["width"], s["height"], s["model"]) == (W, H, "disk")
    assert s["objects"] == [] and s["current"]["area"] == 0
    r = client.post("/api/images/a.png/click", json={"x": 40, "y": 50}).json()
    mask = decode_runs(r["current"]["runs"])
    assert mask[50, 40] and not mask[50, 100]
    assert r["timing"]["model_ms"] is not None and r["timing"]["server_ms"] > 0
    r = client.post("/api/images/a.png/click", json={"x": 45, "y": 50, "kind": "negative"}).json()
    assert not decode_runs(r["current"]["runs"])[50, 45]
    assert [c["kind"] for c in r["current"]["clicks"]] == ["positive", "negative"]
    r = client.post("/api/images/a.png/undo").json()
    assert decode_runs(r["current"]["runs"])[50, 45] and r["current"]["can_redo"]
    r = client.post("/api/images/a.png/redo").json()
    assert not decode_runs(r["current"]["runs"])[50, 45]
    r = client.post("/api/images/a.png/threshold", json={"threshold": 0.99}).json()
    assert r["current"]["area"] == 0 and r["threshold"] == 0.99
    client.post("/api/images/a.png/threshold", json={"threshold": 0.5})
    r = client.post("/api/images/a.png/reset").json()
    assert r["current"]["area"] == 0 and r["current"]["clicks"] == [] and r["current"]["can_undo"]
    assert client.engines["disk"].encode_calls == 1  # encoded once for every action on the image
    r = client.post("/api/images/a.png/redo")
    assert r.status_code == 422 and "nothing to redo" in r.json()["detail"]


def test_box_scribble_and_validation(client):
    r = client.post("/api/images/a.png/box", json={"box": [20, 20, 80, 70]}).json()
    assert decode_runs(r["current"]["runs"])[45, 50] and r["current"]["box"] == [20, 20, 80, 70]
    r = client.post("/api/images/a.png/scribble",
                    json={"points": [[120, 100], [140, 100]], "positive": True, "width": 2}).json()
    assert decode_runs(r["current"]["runs"])[100, 130]
    assert client.post("/api/images/a.png/click", json={"x": 500, "y": 5}).status_code == 422
    assert client.post("/api/images/a.png/click", json={"x": "nan", "y": 5}).status_code == 422
    assert client.post("/api/images/a.png/click", json={"x": 5, "y": 5, "kind": "maybe"}).status_code == 422
    assert client.post("/api/images/a.png/box", json={"box": [1, 2, 3]}).status_code == 422


def test_objects_finish_relabel_delete_and_reload(folder):
    config, _ = make_config(folder)
    with TestClient(create_app(config)) as c:
        c.post("/api/images/a.png/click", json={"x": 40, "y": 50})
        r = c.post("/api/images/a.png/finish", json={"label": "cat"}).json()
        assert r["finished_id"] == 1 and [o["label"] for o in r["objects"]] == ["cat"]
        assert decode_runs(r["objects"][0]["runs"])[50, 40] and r["current"]["area"] == 0
        c.post("/api/images/a.png/click", json={"x": 120, "y": 60})
        c.post("/api/images/a.png/finish", json={"label": "dog"})
        r = c.patch("/api/images/a.png/objects/2", json={"label": "puppy"}).json()
        assert [o["label"] for o in r["objects"]] == ["cat", "puppy"]
        r = c.delete("/api/images/a.png/objects/1").json()
        assert [o["id"] for o in r["objects"]] == [2]
        assert c.delete("/api/images/a.png/objects/1").status_code == 422
        c.post("/api/images/a.png/click", json={"x": 30, "y": 30})  # unfinished object, also saved
        assert c.post("/api/images/a.png/finish", json={}).status_code == 200
        c.post("/api/images/a.png/click", json={"x": 100, "y": 100})
        listing = {im["name"]: im for im in c.get("/api/images").json()["images"]}
        assert listing["a.png"]["objects"] == 2

    saved = folder / ".finecut" / "annotations" / "a.png.json"
    data = json.loads(saved.read_text())
    assert data["image"] == "a.png" and data["model"] == "disk"

    config2, engines2 = make_config(folder)  # a new server: everything comes back from disk
    with TestClient(create_app(config2)) as c2:
        s = c2.post("/api/images/a.png/open", json={}).json()
        assert [o["label"] for o in s["objects"]] == ["puppy", "object"]
        assert decode_runs(s["current"]["runs"])[100, 100]
        assert s["current"]["clicks"] == [{"x": 100.0, "y": 100.0, "kind": "positive"}]
        r = c2.post("/api/images/a.png/undo").json()
        assert r["current"]["area"] == 0


def test_model_switch_recomputes(client):
    r = client.post("/api/images/a.png/click", json={"x": 80, "y": 60}).json()
    small = r["current"]["area"]
    r = client.post("/api/images/a.png/model", json={"model": "big"}).json()
    assert r["model"] == "big" and r["current"]["area"] > small
    r = client.post("/api/images/a.png/undo").json()  # the switch is an undoable step
    assert r["current"]["area"] == small
    r = client.post("/api/images/a.png/model", json={"model": "nope"})
    assert r.status_code == 422 and "unknown model" in r.json()["detail"]


def test_bad_and_foreign_paths_are_rejected(client, folder):
    r = client.post("/api/images/broken.jpg/open", json={})
    assert r.status_code == 422 and "cannot decode image" in r.json()["detail"]
    assert client.post("/api/images/b.png/open", json={}).status_code == 200  # the rest still works
    for name in ["notes.txt", ".hidden.png", "..%2Fimages%2Fa.png", "%2Fetc%2Fpasswd", "missing.png"]:
        r = client.get(f"/api/images/{name}/file")
        assert r.status_code == 404, name
    assert client.get("/api/images/a.png/file").content == (folder / "a.png").read_bytes()
    assert client.get("/api/export/..%2Fannotations%2Fa.png.json").status_code == 422


def test_uploads(folder):
    config, _ = make_config(folder, limits=Limits(max_file_bytes=200_000, max_pixels=100_000))
    with TestClient(create_app(config)) as c:
        ok, buf = cv2.imencode(".png", np.zeros((50, 60, 3), np.uint8))
        r = c.put("/api/upload/new.png", content=buf.tobytes())
        assert r.status_code == 200 and "new.png" in r.json()["images"]
        r = c.put("/api/upload/new.png", content=buf.tobytes())
        assert r.status_code == 422 and "already exists" in r.json()["detail"]
        r = c.put("/api/upload/evil.png", content=b"<script>alert(1)</script>")
        assert r.status_code == 415 and "not a decodable image" in r.json()["detail"]
        r = c.put("/api/upload/readme.txt", content=buf.tobytes())
        assert r.status_code == 415
        r = c.put("/api/upload/..%2Fescape.png", content=buf.tobytes())
        assert r.status_code in (404, 422) and not (folder.parent / "escape.png").exists()
        r = c.put("/api/upload/huge.png", content=b"0" * 300_000)
        assert r.status_code == 413
        ok, big = cv2.imencode(".png", np.zeros((400, 400, 3), np.uint8))  # 160k pixels > 100k
        r = c.put("/api/upload/big.png", content=big.tobytes())
        assert r.status_code == 413 and "MP" in r.json()["detail"]


def test_oversized_image_in_folder_is_refused_with_message(folder):
    config, _ = make_config(folder, limits=Limits(max_pixels=10_000))
    with TestClient(create_app(config)) as c:
        r = c.post("/api/images/a.png/open", json={})
        assert r.status_code == 413 and "over the limit" in r.json()["detail"]


def test_export_png_and_coco(client, folder):
    client.post("/api/images/a.png/click", json={"x": 40, "y": 50})
    client.post("/api/images/a.png/finish", json={"label": "cat"})
    client.post("/api/images/b.png/click", json={"x": 120, "y": 60})
    client.post("/api/images/b.png/finish", json={"label": "dog"})
    r = client.post("/api/export", json={"formats": ["png", "coco_rle", "coco_polygons"]}).json()
    assert r["images"] == 2 and r["objects"] == 2
    assert {"coco_rle.json", "coco_polygons.json", "a/a_obj001_cat.png", "a/a_instances.png"} <= set(r["files"])
    coco = client.get("/api/export/coco_rle.json").json()
    assert [im["file_name"] for im in coco["images"]] == ["a.png", "b.png"]
    assert {c["name"] for c in coco["categories"]} == {"cat", "dog"}
    out = folder / ".finecut" / "export"
    assert read_mask(out / "a" / "a_obj001_cat.png")[50, 40]
    assert read_label_image(out / "b" / "b_instances.png")[60, 120] == 1
    poly = json.loads((out / "coco_polygons.json").read_text())
    assert all(isinstance(a["segmentation"], list) for a in poly["annotations"])
    r = client.post("/api/export", json={"formats": ["png"], "images": ["b.png"]}).json()
    assert r["images"] == 1 and all(f.startswith("b/") for f in r["files"])
    assert client.post("/api/export", json={"formats": ["gif"]}).status_code == 422


def test_concurrent_clicks_are_serialised_and_saved_atomically(folder):
    config, engines = make_config(folder)
    n_threads, per_thread = 6, 4
    with LiveServer(create_app(config)) as url:
        errors = []

        def worker(k):
            with httpx.Client(base_url=url, timeout=60) as c:
                for j in range(per_thread):
                    r = c.post("/api/images/a.png/click", json={"x": 10 + 20 * k, "y": 10 + 20 * j})
                    if r.status_code != 200:
                        errors.append(r.text)
                    saved = folder / ".finecut" / "annotations" / "a.png.json"
                    json.loads(saved.read_text())  # always a complete JSON file

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        state = httpx.post(url + "/api/images/a.png/open", json={}, timeout=30).json()
    assert len(state["current"]["clicks"]) == n_threads * per_thread
    assert engines["disk"].encode_calls == 1
    data = json.loads((folder / ".finecut" / "annotations" / "a.png.json").read_text())
    assert len(data["session"]["history"]) == n_threads * per_thread + 1
    leftovers = [p.name for p in (folder / ".finecut" / "annotations").iterdir() if p.suffix == ".tmp"]
    assert leftovers == []
