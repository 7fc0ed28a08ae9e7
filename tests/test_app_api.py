"""The annotation app's HTTP API (in-process TestClient, plus one live server for concurrency)."""

import json
import threading

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from doubles import DiskEngine
from helpers_app import LiveServer, photo_like

from finecut.app import AppConfig, create_app
from finecut.app.folder import Limits
from finecut.app.service import mask_runs
from finecut.app.store import AnnotationStore
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
    # a computed step keeps its probabilities (0.05 / 0.95; only pixels under the clicks may be forced to 1)
    area = client.post("/api/images/a.png/click", json={"x": 100, "y": 100}).json()["current"]["area"]
    r = client.post("/api/images/a.png/threshold", json={"threshold": 0.99}).json()
    assert r["current"]["area"] < area / 4 and r["threshold"] == 0.99
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

    data = AnnotationStore(folder / ".finecut").load("a.png")
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
    assert {"coco_rle.json", "coco_polygons.json", "a.png/a.png_obj001_cat.png",
            "a.png/a.png_instances.png"} <= set(r["files"])
    coco = client.get("/api/export/coco_rle.json").json()
    assert [im["file_name"] for im in coco["images"]] == ["a.png", "b.png"]
    assert {c["name"] for c in coco["categories"]} == {"cat", "dog"}
    out = folder / ".finecut" / "export"
    assert read_mask(out / "a.png" / "a.png_obj001_cat.png")[50, 40]
    assert read_label_image(out / "b.png" / "b.png_instances.png")[60, 120] == 1
    poly = json.loads((out / "coco_polygons.json").read_text())
    assert all(isinstance(a["segmentation"], list) for a in poly["annotations"])
    assert client.post("/api/export", json={"formats": ["gif"]}).status_code == 422


def test_export_always_holds_every_annotated_image_and_nothing_stale(client, folder):
    client.post("/api/images/a.png/click", json={"x": 40, "y": 50})
    client.post("/api/images/a.png/finish", json={"label": "cat"})
    client.post("/api/images/a.png/click", json={"x": 120, "y": 60})
    client.post("/api/images/a.png/finish", json={"label": "dog"})
    client.post("/api/images/b.png/click", json={"x": 120, "y": 60})
    client.post("/api/images/b.png/finish", json={"label": "dog"})
    client.post("/api/export", json={})
    out = folder / ".finecut" / "export"
    cats = {c["name"]: c["id"] for c in json.loads((out / "coco_rle.json").read_text())["categories"]}
    # "only the current image" is refused: the COCO files would lose the other images
    r = client.post("/api/export", json={"images": ["b.png"]})
    assert r.status_code == 422 and "every annotated image" in r.json()["detail"]
    client.delete("/api/images/a.png/objects/1")  # cat gone, dog on a.png relabelled, b.png emptied
    client.patch("/api/images/a.png/objects/2", json={"label": "wolf"})
    client.delete("/api/images/b.png/objects/1")
    r = client.post("/api/export", json={}).json()
    assert r["images"] == 1 and r["objects"] == 1
    coco = json.loads((out / "coco_rle.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["a.png"]
    new_cats = {c["name"]: c["id"] for c in coco["categories"]}
    assert list(new_cats) == ["wolf"] and new_cats["wolf"] not in cats.values()
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["a.png/a.png_instances.png", "a.png/a.png_obj002_wolf.png", "coco_polygons.json",
                     "coco_rle.json", "finecut-export.json"]


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
                    AnnotationStore(folder / ".finecut").load("a.png")  # always a complete, readable state

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        state = httpx.post(url + "/api/images/a.png/open", json={}, timeout=30).json()
    assert len(state["current"]["clicks"]) == n_threads * per_thread
    assert engines["disk"].encode_calls == 1
    data = AnnotationStore(folder / ".finecut").load("a.png")
    assert len(data["history"]) == n_threads * per_thread + 1
    leftovers = [p.name for p in (folder / ".finecut" / "annotations").iterdir() if p.suffix == ".tmp"]
    assert leftovers == []


# ------------------------------------------------------------------ versions: stale writes get 409 (issue 12.5)
def test_stale_write_gets_409_and_changes_nothing(client):
    a = client.post("/api/images/a.png/open", json={}).json()
    v0 = a["version"]
    b = client.post("/api/images/a.png/click", json={"x": 40, "y": 50}, headers={"If-Match": str(v0)}).json()
    assert b["version"] > v0 and len(b["current"]["clicks"]) == 1
    # a second tab still at v0: its click and its finish are refused, nothing is merged
    r = client.post("/api/images/a.png/click", json={"x": 120, "y": 60}, headers={"If-Match": str(v0)})
    assert r.status_code == 409 and "another tab" in r.json()["detail"]
    assert r.json()["version"] == b["version"]
    r = client.post("/api/images/a.png/finish", json={"label": "x"}, headers={"If-Match": f'"{v0}"'})
    assert r.status_code == 409
    for method, path in [("post", "undo"), ("post", "reset"), ("post", "redo")]:
        assert getattr(client, method)(f"/api/images/a.png/{path}", headers={"If-Match": str(v0)}).status_code == 409
    s = client.post("/api/images/a.png/open", json={}).json()
    assert s["version"] == b["version"] and len(s["current"]["clicks"]) == 1 and s["objects"] == []
    # with the current version it goes through; no header = no check (scripts)
    r = client.post("/api/images/a.png/finish", json={"label": "x"}, headers={"If-Match": str(s["version"])})
    assert r.status_code == 200 and r.json()["version"] > s["version"]
    assert client.post("/api/images/a.png/click", json={"x": 120, "y": 60}).status_code == 200
    r = client.delete("/api/images/a.png/objects/1", headers={"If-Match": str(s["version"])})
    assert r.status_code == 409
    assert client.post("/api/images/a.png/click", json={"x": 1, "y": 1},
                       headers={"If-Match": "abc"}).status_code == 400


def test_version_survives_a_restart(folder):
    config, _ = make_config(folder)
    with TestClient(create_app(config)) as c:
        c.post("/api/images/a.png/click", json={"x": 40, "y": 50})
        v = c.post("/api/images/a.png/click", json={"x": 60, "y": 50}).json()["version"]
    config2, _ = make_config(folder)
    with TestClient(create_app(config2)) as c2:
        assert c2.post("/api/images/a.png/open", json={}).json()["version"] == v
        r = c2.post("/api/images/a.png/undo", headers={"If-Match": str(v)})
        assert r.status_code == 200 and len(r.json()["current"]["clicks"]) == 1


# ------------------------------------------------------------------ finish / delete undoable, reopen (issue 12.6)
def test_delete_and_finish_are_undone_by_undo_and_objects_can_be_reopened(client):
    client.post("/api/images/a.png/click", json={"x": 40, "y": 50})
    client.post("/api/images/a.png/finish", json={"label": "cat"})
    client.post("/api/images/a.png/click", json={"x": 120, "y": 60})
    r = client.delete("/api/images/a.png/objects/1").json()
    assert r["objects"] == [] and len(r["current"]["clicks"]) == 1
    r = client.post("/api/images/a.png/undo").json()  # restores the deleted object, not an older click
    assert [o["label"] for o in r["objects"]] == ["cat"] and len(r["current"]["clicks"]) == 1
    assert client.get("/api/images").json()["images"][0]["objects"] == 1
    r = client.post("/api/images/a.png/finish", json={"label": "dog"}).json()
    assert [o["id"] for o in r["objects"]] == [1, 2]
    r = client.post("/api/images/a.png/undo").json()  # the finish: dog is in progress again
    assert [o["id"] for o in r["objects"]] == [1] and len(r["current"]["clicks"]) == 1 and r["current"]["area"] > 0
    client.post("/api/images/a.png/redo")
    r = client.post("/api/images/a.png/objects/1/reopen")
    assert r.status_code == 200
    r = r.json()
    assert r["editing"] == {"id": 1, "label": "cat"} and r["current"]["clicks"] == [{"x": 40.0, "y": 50.0,
                                                                                    "kind": "positive"}]
    r = client.post("/api/images/a.png/click", json={"x": 70, "y": 50}).json()
    r = client.post("/api/images/a.png/finish", json={"label": "cat"}).json()
    assert r["finished_id"] == 1 and [o["id"] for o in r["objects"]] == [1, 2] and r["editing"] is None
    assert decode_runs(r["objects"][0]["runs"])[50, 70]
    client.post("/api/images/a.png/click", json={"x": 20, "y": 20})
    r = client.post("/api/images/a.png/objects/2/reopen")
    assert r.status_code == 422 and "finish or reset" in r.json()["detail"]


def test_undoing_a_model_switch_restores_the_model(client):
    small = client.post("/api/images/a.png/click", json={"x": 80, "y": 60}).json()["current"]["area"]
    r = client.post("/api/images/a.png/model", json={"model": "big"}).json()
    assert r["model"] == "big"
    r = client.post("/api/images/a.png/undo").json()
    assert r["model"] == "disk" and r["current"]["area"] == small
    r = client.post("/api/images/a.png/click", json={"x": 20, "y": 20}).json()  # computed by disk again
    assert r["model"] == "disk" and decode_runs(r["current"]["runs"]).sum() < 2 * small + 10
    r = client.post("/api/images/a.png/undo").json()
    r = client.post("/api/images/a.png/redo").json()
    r = client.post("/api/images/a.png/undo").json()
    r = client.post("/api/images/a.png/redo").json()
    assert r["model"] == "disk"


# ------------------------------------------------------------------ saving is proportional to the change (issue 12.11)
def _bytes_written() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("wchar:"))


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/io"), reason="needs Linux /proc/self/io")
def test_saving_a_click_writes_only_the_change(client, folder):
    for i in range(150):
        r = client.post("/api/images/a.png/click", json={"x": 5 + i % 150, "y": 5 + (i * 7) % 110,
                                                         "kind": "positive" if i % 2 else "negative"})
        assert r.status_code == 200
    saved = folder / ".finecut" / "annotations"
    size = sum(p.stat().st_size for p in saved.iterdir())
    written = []
    for i in range(5):
        before = _bytes_written()
        client.post("/api/images/a.png/click", json={"x": 30 + i, "y": 40})
        written.append(_bytes_written() - before)
    assert size > 100_000
    assert max(written) < size / 20, f"a click wrote {max(written)} bytes; the saved state is {size} bytes"


def test_torn_last_write_is_ignored_and_repaired(folder):
    config, _ = make_config(folder)
    with TestClient(create_app(config)) as c:
        c.post("/api/images/a.png/click", json={"x": 40, "y": 50})
        v = c.post("/api/images/a.png/click", json={"x": 60, "y": 50}).json()["version"]
    files = [p for p in (folder / ".finecut" / "annotations").iterdir() if p.name.startswith("a.png")]
    assert len(files) == 1
    with open(files[0], "ab") as fh:  # a write cut short by kill -9 or a power loss
        fh.write(b'{"k":"r","key":"s99","data":{"action":"cli')
    config2, _ = make_config(folder)
    with TestClient(create_app(config2)) as c2:
        s = c2.post("/api/images/a.png/open", json={}).json()
        assert s["version"] == v and len(s["current"]["clicks"]) == 2
        c2.post("/api/images/a.png/click", json={"x": 80, "y": 50})
    config3, _ = make_config(folder)
    with TestClient(create_app(config3)) as c3:
        assert len(c3.post("/api/images/a.png/open", json={}).json()["current"]["clicks"]) == 3


def test_legacy_save_file_is_read_and_migrated(folder):
    from finecut.predictor import Predictor
    from finecut.session import Session

    engine = DiskEngine(radius=12)
    s = Session(Predictor(engine), photo_like(H, W, seed=1))
    s.add_click(40, 50)
    s.finish_object("cat")
    s.add_click(100, 60)
    legacy = {"format": 1, "height": H, "width": W, "threshold": 0.5, "default_label": "object", "next_id": 2,
              "cursor": 1,
              "history": [{"action": "start", "prompts": {"clicks": []}},
                          {"action": "click", "prompts": {"clicks": [{"x": 100.0, "y": 60.0, "kind": "positive"}]},
                           "prediction": {"mask": __import__("finecut").export.mask_to_rle(s.mask),
                                          "threshold": 0.5, "seconds": 0.0, "state": {}}}],
              "objects": [{"id": 1, "label": "cat", "mask": s.objects[0].rle, "prompts": {"clicks": []}}]}
    ann = folder / ".finecut" / "annotations"
    ann.mkdir(parents=True)
    (ann / "a.png.json").write_text(json.dumps({"model": "disk", "session": legacy, "image": "a.png"}))
    config, _ = make_config(folder)
    with TestClient(create_app(config)) as c:
        assert c.get("/api/images").json()["images"][0]["objects"] == 1
        st = c.post("/api/images/a.png/open", json={}).json()
        assert [o["label"] for o in st["objects"]] == ["cat"] and len(st["current"]["clicks"]) == 1
        c.post("/api/images/a.png/click", json={"x": 20, "y": 20})
        r = c.post("/api/export", json={}).json()
        assert r["objects"] == 1
    assert not (ann / "a.png.json").exists()  # migrated into the new save file, nothing lost
    config2, _ = make_config(folder)
    with TestClient(create_app(config2)) as c2:
        st = c2.post("/api/images/a.png/open", json={}).json()
        assert [o["label"] for o in st["objects"]] == ["cat"] and len(st["current"]["clicks"]) == 2


def test_kill_9_keeps_every_acknowledged_action(folder, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from helpers_app import free_port

    def start():
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "finecut.cli", "app", str(folder), "--port", str(port),
                                 "--model", "grabcut"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                httpx.get(url + "/api/config", timeout=2)
                return proc, url
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read().decode()
                time.sleep(0.1)
        raise RuntimeError("app did not start")

    proc, url = start()
    acked = []
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            c.post("/api/images/a.png/open", json={}).raise_for_status()
            for i in range(8):
                r = c.post("/api/images/a.png/click", json={"x": 30 + 10 * i, "y": 50})
                r.raise_for_status()
                acked.append(r.json()["version"])
                if i == 3:
                    c.post("/api/images/a.png/finish", json={"label": "cat"}).raise_for_status()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    proc, url = start()
    try:
        s = httpx.post(url + "/api/images/a.png/open", json={}, timeout=60).json()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert s["version"] == acked[-1]
    assert [o["label"] for o in s["objects"]] == ["cat"] and len(s["current"]["clicks"]) == 4


_WRITER = """
import sys
from doubles import DiskEngine
from helpers_app import photo_like
from finecut.app.store import AnnotationStore
from finecut.predictor import Predictor
from finecut.session import Session

store = AnnotationStore(sys.argv[1], compact_slack=4000)  # small slack: whole rewrites happen often too
session = Session(Predictor(DiskEngine(radius=8)), photo_like(60, 80), max_history=40)
i = 0
while True:
    i += 1
    if i % 9 == 0:
        session.finish_object("o%d" % i)
    elif i % 7 == 0:
        session.undo()
    else:
        session.add_click(5 + i % 70, 5 + (i * 3) % 50, "positive" if i % 3 else "negative")
    head, records = session.save_parts()
    store.save("x.png", head, records)
    print(session.version, flush=True)
"""


@pytest.mark.parametrize("delay", [0.3, 0.7, 1.1])
def test_kill_9_while_saving_never_loses_an_acknowledged_save(tmp_path, delay):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from finecut.predictor import Predictor
    from finecut.session import Session

    tests_dir = Path(__file__).resolve().parent
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], cwd=tests_dir, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    acked = []
    start = time.time()
    while time.time() - start < 30:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        acked.append(int(line))
        if len(acked) == 1:
            start = time.time()  # count the delay from the first save (after the imports)
        if time.time() - start > delay:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    data = AnnotationStore(tmp_path).load("x.png")
    assert data["version"] >= acked[-1]  # the kill may land after a save and before its acknowledgement
    predictor = Predictor(DiskEngine(radius=8))
    predictor.set_image(photo_like(60, 80))
    session = Session.from_dict(data, predictor)
    assert session.version == data["version"]


# ------------------------------------------------------------------ the annotator's day (issue 19)
def _labelled_client(folder, spec="person,car,tree"):
    from finecut.app.labels import load_label_set

    config, engines = make_config(folder, labels=load_label_set(spec))
    return TestClient(create_app(config)), engines


def test_label_set_fixes_labels_and_category_ids(folder):
    client, _ = _labelled_client(folder)
    with client as c:
        cfg = c.get("/api/config").json()
        assert [(x["name"], x["id"], x["hotkey"]) for x in cfg["labels"]] == [
            ("person", 1, "1"), ("car", 2, "2"), ("tree", 3, "3")]
        assert cfg["default_label"] == "person"
        c.post("/api/images/a.png/click", json={"x": 40, "y": 50})
        r = c.post("/api/images/a.png/finish", json={})  # no label: the first class
        assert r.json()["objects"][0]["label"] == "person"
        c.post("/api/images/a.png/click", json={"x": 120, "y": 60})
        r = c.post("/api/images/a.png/finish", json={"label": "dog"})
        assert r.status_code == 422 and "'dog' is not in the label set (person, car, tree)" in r.json()["detail"]
        assert c.post("/api/images/a.png/finish", json={"label": "tree"}).status_code == 200
        r = c.patch("/api/images/a.png/objects/1", json={"label": "bus"})
        assert r.status_code == 422
        assert c.patch("/api/images/a.png/objects/1", json={"label": "car"}).status_code == 200
        c.post("/api/export", json={})
    coco = json.loads((folder / ".finecut" / "export" / "coco_rle.json").read_text())
    assert [(x["name"], x["id"]) for x in coco["categories"]] == [("person", 1), ("car", 2), ("tree", 3)]
    assert [a["category_id"] for a in coco["annotations"]] == [2, 3]


def test_status_progress_and_export_metadata(client, folder):
    listing = client.get("/api/images").json()
    assert [im["status"] for im in listing["images"]] == ["new", "new", "new"]
    assert listing["progress"] == {"total": 3, "new": 3, "in_progress": 0, "done": 0, "skipped": 0}
    assert client.post("/api/images/a.png/open", json={}).json()["status"] == "new"  # opening changes nothing
    r = client.post("/api/images/a.png/click", json={"x": 40, "y": 50}).json()
    assert r["status"] == "in_progress"
    client.post("/api/images/a.png/finish", json={"label": "cat"})
    v = client.post("/api/images/a.png/open", json={}).json()["version"]
    r = client.post("/api/images/a.png/status", json={"status": "done"}, headers={"If-Match": str(v)})
    assert r.status_code == 200 and r.json()["status"] == "done"
    assert client.post("/api/images/b.png/status", json={"status": "done"}).status_code == 200  # nothing on it
    assert client.post("/api/images/a.png/status", json={"status": "in_progress"}).status_code == 422
    assert client.post("/api/images/a.png/status", json={"status": "done"},
                       headers={"If-Match": str(v - 1)}).status_code == 409
    listing = client.get("/api/images").json()
    assert {im["name"]: im["status"] for im in listing["images"]} == {"a.png": "done", "b.png": "done",
                                                                      "broken.jpg": "new"}
    r = client.post("/api/export", json={}).json()
    assert r["progress"]["done"] == 2 and r["images"] == 2  # b.png: done without objects, a negative example
    out = folder / ".finecut" / "export"
    coco = json.loads((out / "coco_rle.json").read_text())
    assert [(im["file_name"], im["finecut_status"]) for im in coco["images"]] == [("a.png", "done"),
                                                                                   ("b.png", "done")]
    manifest = json.loads((out / "finecut-export.json").read_text())
    assert manifest["status"] == {"a.png": "done", "b.png": "done", "broken.jpg": "new"}
    assert manifest["progress"]["total"] == 3
    client.post("/api/images/b.png/status", json={"status": None})  # unmarked: new again, left out of exports
    assert client.get("/api/images").json()["images"][1]["status"] == "new"


def test_status_is_saved_with_the_annotations(folder):
    config, _ = make_config(folder)
    with TestClient(create_app(config)) as c:
        c.post("/api/images/a.png/click", json={"x": 40, "y": 50})
        c.post("/api/images/a.png/status", json={"status": "skipped"})
        c.post("/api/images/a.png/click", json={"x": 60, "y": 50})  # a chosen status stays until changed
    assert AnnotationStore(folder / ".finecut").load("a.png")["status"] == "skipped"
    config2, _ = make_config(folder)
    with TestClient(create_app(config2)) as c2:
        assert c2.post("/api/images/a.png/open", json={}).json()["status"] == "skipped"


def test_paint_erase_and_move_endpoints(client):
    r = client.post("/api/images/a.png/paint", json={"points": [[20, 20], [60, 20]], "width": 6}).json()
    mask = decode_runs(r["current"]["runs"])
    assert mask[20, 40] and r["current"]["has_prior"] and r["timing"]["model_ms"] is None
    r = client.post("/api/images/a.png/paint", json={"points": [[40, 20]], "width": 10, "erase": True}).json()
    assert not decode_runs(r["current"]["runs"])[20, 40] and decode_runs(r["current"]["runs"])[20, 22]
    for bad in ({"points": [], "width": 4}, {"points": [[1, 2]], "width": 0}, {"points": [[1, 2]], "erase": 1},
                {"points": [[1, "2"]]}):
        assert client.post("/api/images/a.png/paint", json=bad).status_code == 422
    assert client.post("/api/images/a.png/paint", json={"points": [[999, 2]]}).status_code == 422
    r = client.post("/api/images/a.png/finish", json={"label": "a"}).json()
    client.post("/api/images/a.png/click", json={"x": 40, "y": 25})
    client.post("/api/images/a.png/finish", json={"label": "b"})
    r = client.post("/api/images/a.png/objects/2/move", json={"index": 0}).json()
    assert [o["id"] for o in r["objects"]] == [2, 1]
    assert client.post("/api/images/a.png/objects/2/move", json={"index": 5}).status_code == 422
    assert client.post("/api/images/a.png/objects/2/move", json={"index": "0"}).status_code == 422
    client.post("/api/export", json={})
    # the instance map follows the drawing order: object 1 (now on top) wins where they overlap
    inst = read_label_image(client.app.state.service.export_dir / "a.png" / "a.png_instances.png")
    assert inst[20, 30] == 1


def _coco_for(masks_by_image, categories=({"id": 5, "name": "car"}, {"id": 6, "name": "tree"})):
    from finecut.export import mask_to_polygons, mask_to_rle

    images, annotations = [], []
    for i, (name, objs) in enumerate(masks_by_image.items(), start=1):
        images.append({"id": i, "file_name": f"photos/{name}", "height": H, "width": W})
        for cat, mask, polygon in objs:
            seg = mask_to_polygons(mask) if polygon else mask_to_rle(mask)
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": cat, "segmentation": seg})
    return {"images": images, "annotations": annotations, "categories": list(categories)}


def _blob(x, y, r):
    m = np.zeros((H, W), np.uint8)
    cv2.circle(m, (x, y), r, 1, -1)
    return m.astype(bool)


def test_import_correct_export_round_trips_through_pycocotools(folder, tmp_path):
    from pycocotools.coco import COCO

    source = _coco_for({"a.png": [(5, _blob(40, 50, 15), False), (6, _blob(110, 60, 20), True)],
                        "b.png": [(6, _blob(60, 60, 25), False)], "elsewhere.png": []})
    src_file = tmp_path / "in.json"
    src_file.write_text(json.dumps(source))
    config, engines = make_config(folder)
    with TestClient(create_app(config)) as c:
        r = c.post("/api/import", content=src_file.read_bytes(), headers={"X-Filename": "in.json"})
        assert r.status_code == 200, r.text
        report = r.json()
        assert (report["images"], report["objects"], report["unmatched"]) == (2, 3, ["photos/elsewhere.png"])
        assert engines["disk"].encode_calls == 0  # importing decodes no image and runs no model
        again = c.post("/api/import", content=src_file.read_bytes()).json()
        assert again["objects"] == 0 and again["duplicates"] == 3  # importing twice adds nothing
        s = c.post("/api/images/a.png/open", json={}).json()
        assert [(o["label"], o["imported"]) for o in s["objects"]] == [("car", True), ("tree", True)]
        assert s["status"] == "in_progress"
        r = c.post("/api/images/a.png/undo").json()  # the whole import of the image is one step
        assert r["objects"] == []
        c.post("/api/images/a.png/redo")
        # correct the car: reopen (its mask is the prior), one click, finish
        r = c.post("/api/images/a.png/objects/1/reopen").json()
        assert r["current"]["has_prior"] and r["current"]["area"] == int(_blob(40, 50, 15).sum())
        c.post("/api/images/a.png/click", json={"x": 62, "y": 50})
        assert c.post("/api/images/a.png/finish", json={}).json()["objects"][0]["label"] == "car"
        c.post("/api/export", json={})
    exported = COCO(str(folder / ".finecut" / "export" / "coco_rle.json"))
    original_path = tmp_path / "orig.json"
    original_path.write_text(json.dumps(source))
    original = COCO(str(original_path))

    def masks(api, file_name):
        img = next(i for i in api.dataset["images"] if i["file_name"].endswith(file_name))
        cats = {c["id"]: c["name"] for c in api.dataset["categories"]}
        return [(cats[a["category_id"]], api.annToMask(a).astype(bool)) for a in api.imgToAnns[img["id"]]]

    a_orig, a_out = masks(original, "a.png"), masks(exported, "a.png")
    assert [label for label, _ in a_out] == ["car", "tree"]
    assert np.array_equal(a_out[1][1], a_orig[1][1])  # untouched (a polygon): identical pixels
    assert not np.array_equal(a_out[0][1], a_orig[0][1]) and a_out[0][1][50, 62]  # the corrected car
    assert (a_out[0][1] | a_orig[0][1]).sum() == a_out[0][1].sum()  # the correction only added pixels
    b_orig, b_out = masks(original, "b.png"), masks(exported, "b.png")
    assert len(b_out) == 1 and np.array_equal(b_out[0][1], b_orig[0][1])  # untouched (RLE): identical


def test_import_endpoint_refuses_bad_files(folder):
    config, _ = make_config(folder, limits=Limits(max_file_bytes=2000))
    with TestClient(create_app(config)) as c:
        r = c.post("/api/import", content=b"{oops")
        assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
        r = c.post("/api/import", content=json.dumps({"images": [{"id": 1}]}).encode())
        assert r.status_code == 422 and "images[0].file_name" in r.json()["detail"]
        assert c.post("/api/import", content=b" " * 3000).status_code == 413


def test_import_with_a_label_set_reports_other_categories(folder, tmp_path):
    client, _ = _labelled_client(folder, "car")
    source = _coco_for({"a.png": [(5, _blob(40, 50, 15), False), (6, _blob(110, 60, 20), False)]})
    with client as c:
        r = c.post("/api/import", content=json.dumps(source).encode()).json()
        assert r["objects"] == 1 and "category 'tree' is not in the label set" in r["problems"][0]


def test_import_into_an_open_image_and_a_masks_folder(folder, tmp_path):
    from finecut.app.importing import import_path

    config, _ = make_config(folder)
    with TestClient(create_app(config)) as c:
        c.post("/api/images/a.png/click", json={"x": 10, "y": 10})  # open, with an object in progress
        v = c.post("/api/images/a.png/open", json={}).json()["version"]
        masks = tmp_path / "masks"
        masks.mkdir()
        inst = np.zeros((H, W), np.uint8)
        inst[_blob(40, 50, 10)] = 1
        inst[_blob(110, 60, 10)] = 2
        cv2.imwrite(str(masks / "a.png"), inst)
        report = import_path(c.app.state.service, masks)
        assert (report.images, report.objects) == (1, 2)
        s = c.post("/api/images/a.png/open", json={}).json()
        assert len(s["objects"]) == 2 and len(s["current"]["clicks"]) == 1 and s["version"] > v
        r = c.post("/api/images/a.png/click", json={"x": 30, "y": 30}, headers={"If-Match": str(v)})
        assert r.status_code == 409  # a tab that has not seen the import reloads first
        with pytest.raises(Exception, match="must not be the image folder"):
            import_path(c.app.state.service, folder)
