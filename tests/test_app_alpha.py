"""Alpha mattes in the annotation app: ``current.has_alpha``, ``GET /api/images/{name}/alpha.png``, undo / redo,
finishing (the object keeps its matte, also in the save file), reopening, painting, the session's compact copy, and
exports (``<key>_obj<ID>_<label>_alpha.png`` beside the object's mask)."""

import base64
import json

import cv2
import numpy as np
import pytest
from doubles import DiskEngine
from fastapi.testclient import TestClient
from helpers_app import photo_like

from finecut.app import AppConfig, create_app
from finecut.engines.base import EngineOutput
from finecut.errors import FinecutError
from finecut.importers.base import ImportedObject
from finecut.predictor import Predictor
from finecut.session import PackedAlpha, Session

H, W = 120, 160


class AlphaDiskEngine(DiskEngine):
    """``DiskEngine``'s masks, plus a known matte: 1 inside ``radius`` of each positive click, falling linearly to 0
    at ``2 * radius``, and a strip of fixed values (0.3 and 0.5 round differently in float32 and float64 arithmetic,
    0.5 is a tie) on the top row, so that the 8-bit conversion is checked exactly."""

    name = "disk-alpha"

    def predict(self, image, features, prompts, previous):
        out = super().predict(image, features, prompts, previous)
        return EngineOutput(out.probs, out.state, alpha=known_alpha(image.shape[:2], prompts))


STRIP = np.array([0.3, 0.5, 0.7, 1 / 3, 0.999, 0.001, 0.0, 1.0], dtype=np.float32)


def known_alpha(shape, prompts):
    ys, xs = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    alpha = np.zeros(shape, np.float32)
    for c in prompts.clicks:
        if c.is_negative:
            continue
        d = np.sqrt((xs - c.x) ** 2 + (ys - c.y) ** 2)
        alpha = np.maximum(alpha, np.clip((2 * RADIUS - d) / RADIUS, 0, 1))
    alpha[0, : STRIP.size] = STRIP
    return alpha


RADIUS = 12


def expected_u8(alpha):
    """``round(alpha * 255)`` pixel by pixel, with Python's ``round`` on Python floats."""
    return np.array([[round(float(a) * 255) for a in row] for row in alpha], dtype=np.uint8)


def decode_png(data):
    out = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert out is not None and out.dtype == np.uint8 and out.ndim == 2
    return out


class _Clicks:  # a prompts stand-in for known_alpha
    def __init__(self, *clicks):
        from finecut.prompts import Click

        self.clicks = tuple(Click(float(x), float(y)) for x, y in clicks)


def alpha_for(*clicks):
    return known_alpha((H, W), _Clicks(*clicks))


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    for name, seed in (("a.png", 1), ("b.png", 2)):
        cv2.imwrite(str(d / name), cv2.cvtColor(photo_like(H, W, seed=seed), cv2.COLOR_RGB2BGR))
    return d


def make_app(folder):
    engines = {"alpha": AlphaDiskEngine(radius=RADIUS), "disk": DiskEngine(radius=RADIUS)}
    config = AppConfig(image_dir=folder, default_model="alpha", models=["alpha", "disk"],
                       model_factory=engines.__getitem__)
    return create_app(config)


@pytest.fixture()
def client(folder):
    with TestClient(make_app(folder)) as c:
        yield c


def get_alpha(client, name="a.png"):
    r = client.get(f"/api/images/{name}/alpha.png")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return decode_png(r.content)


def assert_no_alpha(client, name="a.png"):
    r = client.get(f"/api/images/{name}/alpha.png")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")
    assert "has no alpha matte" in r.json()["detail"]


def test_has_alpha_false_for_a_model_without_mattes(client):
    s = client.post("/api/images/a.png/open", json={"model": "disk"}).json()
    assert s["current"]["has_alpha"] is False
    assert_no_alpha(client)  # no prediction yet
    r = client.post("/api/images/a.png/click", json={"x": 40, "y": 50, "model": "disk"}).json()
    assert r["current"]["area"] > 0 and r["current"]["has_alpha"] is False
    assert_no_alpha(client)
    assert "its model gives none" in client.get("/api/images/a.png/alpha.png").json()["detail"]


def test_alpha_png_holds_exactly_the_rounded_matte(client):
    s = client.post("/api/images/a.png/open", json={}).json()
    assert s["model"] == "alpha" and s["current"]["has_alpha"] is False
    assert_no_alpha(client)
    r = client.post("/api/images/a.png/click", json={"x": 40.0, "y": 50.0}).json()
    assert r["current"]["has_alpha"] is True
    resp = client.get("/api/images/a.png/alpha.png")
    assert resp.headers["x-finecut-version"] == str(r["version"])
    assert resp.headers["cache-control"] == "no-store"
    got = decode_png(resp.content)
    want = expected_u8(alpha_for((40, 50)))
    assert got.shape == (H, W)
    np.testing.assert_array_equal(got, want)
    # the float32 / float64 and tie cases of the strip, spelled out
    assert got[0, :8].tolist() == [77, 128, 178, 85, 255, 0, 0, 255]
    assert got[50, 40] == 255 and got[50, 40 + 2 * RADIUS + 2] == 0 and got[50, 40 + 18] == 128  # (24 - 18) / 12
    # a threshold change re-thresholds the mask and keeps the matte
    r = client.post("/api/images/a.png/threshold", json={"threshold": 0.9}).json()
    assert r["current"]["has_alpha"] is True
    np.testing.assert_array_equal(get_alpha(client), want)


def test_unknown_image_is_404_like_the_other_routes(client):
    for name in ("nope.png", "..%2Fa.png", ".hidden.png"):
        r = client.get(f"/api/images/{name}/alpha.png")
        assert r.status_code == 404, name
        assert "detail" in r.json()


def test_undo_and_redo_restore_each_steps_matte(client):
    client.post("/api/images/a.png/open", json={})
    first = expected_u8(alpha_for((40, 50)))
    both = expected_u8(alpha_for((40, 50), (110, 60)))
    assert not np.array_equal(first, both)
    client.post("/api/images/a.png/click", json={"x": 40, "y": 50})
    client.post("/api/images/a.png/click", json={"x": 110, "y": 60})
    np.testing.assert_array_equal(get_alpha(client), both)
    r = client.post("/api/images/a.png/undo").json()
    assert r["current"]["has_alpha"] is True
    np.testing.assert_array_equal(get_alpha(client), first)
    r = client.post("/api/images/a.png/undo").json()  # back to the start: no prediction
    assert r["current"]["has_alpha"] is False and r["current"]["area"] == 0
    assert_no_alpha(client)
    client.post("/api/images/a.png/redo")
    np.testing.assert_array_equal(get_alpha(client), first)
    r = client.post("/api/images/a.png/redo").json()
    assert r["current"]["has_alpha"] is True
    np.testing.assert_array_equal(get_alpha(client), both)
    # a model without mattes re-runs the prompts: no matte; undoing the switch brings the matte back
    r = client.post("/api/images/a.png/model", json={"model": "disk"}).json()
    assert r["model"] == "disk" and r["current"]["has_alpha"] is False
    assert_no_alpha(client)
    r = client.post("/api/images/a.png/undo").json()
    assert r["model"] == "alpha" and r["current"]["has_alpha"] is True
    np.testing.assert_array_equal(get_alpha(client), both)
    r = client.post("/api/images/a.png/reset").json()
    assert r["current"]["has_alpha"] is False
    assert_no_alpha(client)
    client.post("/api/images/a.png/undo")
    np.testing.assert_array_equal(get_alpha(client), both)


def saved_records(folder, name="a.png"):
    lines = (folder / ".finecut" / "annotations" / f"{name}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_finish_keeps_the_matte_with_the_object_across_restarts(folder):
    want = expected_u8(alpha_for((40, 50)))
    with TestClient(make_app(folder)) as c:
        c.post("/api/images/a.png/click", json={"x": 40, "y": 50})
        r = c.post("/api/images/a.png/finish", json={"label": "cat"}).json()
        assert r["current"]["has_alpha"] is False  # a new, empty object
        assert_no_alpha(c)
        c.patch("/api/images/a.png/objects/1", json={"label": "kitten"})  # a new object version, same matte
        session = c.app.state.service._sessions["a.png"].session
        (obj,) = session.objects
        assert obj.label == "kitten"
        np.testing.assert_array_equal(obj.alpha.unpack_uint8(), want)
        # a second object from a model without mattes carries none
        c.post("/api/images/a.png/click", json={"x": 120, "y": 80, "model": "disk"})
        c.post("/api/images/a.png/finish", json={"label": "dog"})
        assert [o.alpha is None for o in session.objects] == [False, True]

    # the save file holds the matte in the object's record, as a base64 8-bit PNG
    objects = [rec["data"] for rec in saved_records(folder) if rec["k"] == "r" and rec["key"].startswith("o")]
    by_label = {o["label"]: o for o in objects}
    assert set(by_label) == {"cat", "kitten", "dog"}
    assert "alpha_png" not in by_label["dog"]
    for label in ("cat", "kitten"):
        np.testing.assert_array_equal(decode_png(base64.b64decode(by_label[label]["alpha_png"])), want)

    # a new server: the finished object has its matte back; reopening it makes that matte the current one
    with TestClient(make_app(folder)) as c:
        s = c.post("/api/images/a.png/open", json={}).json()
        assert [o["label"] for o in s["objects"]] == ["kitten", "dog"] and s["current"]["has_alpha"] is False
        obj = c.app.state.service._sessions["a.png"].session.objects[0]
        np.testing.assert_array_equal(obj.alpha.unpack_uint8(), want)
        r = c.post("/api/images/a.png/objects/1/reopen").json()
        assert r["editing"]["id"] == 1 and r["current"]["has_alpha"] is True
        np.testing.assert_array_equal(get_alpha(c), want)
        r = c.post("/api/images/a.png/objects/2/reopen")  # one edit at a time: refused, nothing changes
        assert r.status_code == 422

    # reloaded while the object is being edited: the reopened object's matte is still the current one
    with TestClient(make_app(folder)) as c:
        s = c.post("/api/images/a.png/open", json={}).json()
        assert s["editing"]["id"] == 1 and s["current"]["has_alpha"] is True
        np.testing.assert_array_equal(get_alpha(c), want)
        r = c.post("/api/images/a.png/finish", json={}).json()  # finished unchanged: keeps its matte
        assert [o["label"] for o in r["objects"]] == ["kitten", "dog"]
        obj = c.app.state.service._sessions["a.png"].session.objects[0]
        np.testing.assert_array_equal(obj.alpha.unpack_uint8(), want)
        r = c.post("/api/images/a.png/undo").json()  # back to editing, matte included
        assert r["editing"]["id"] == 1 and r["current"]["has_alpha"] is True
        np.testing.assert_array_equal(get_alpha(c), want)
        c.post("/api/images/a.png/redo")


def test_an_import_into_a_closed_image_keeps_the_saved_mattes(folder):
    want = expected_u8(alpha_for((40, 50)))
    with TestClient(make_app(folder)) as c:
        c.post("/api/images/a.png/click", json={"x": 40, "y": 50})
        c.post("/api/images/a.png/finish", json={"label": "cat"})
    # another server imports into a.png without opening it: the save file is rewritten from the loaded session
    with TestClient(make_app(folder)) as c:
        service = c.app.state.service
        mask = np.zeros((H, W), bool)
        mask[90:110, 120:150] = True
        assert service.import_objects("a.png", [ImportedObject("box", mask)]) == {"added": 1, "duplicates": 0}
        assert "a.png" not in service._sessions
    with TestClient(make_app(folder)) as c:
        s = c.post("/api/images/a.png/open", json={}).json()
        assert [o["label"] for o in s["objects"]] == ["cat", "box"]
        objs = c.app.state.service._sessions["a.png"].session.objects
        np.testing.assert_array_equal(objs[0].alpha.unpack_uint8(), want)
        assert objs[1].alpha is None
        r = c.post("/api/export", json={"formats": ["png"]}).json()  # exports still work with mattes around
        assert r["objects"] == 2 and "a.png/a.png_obj001_cat.png" in r["files"]


def test_paint_and_erase_set_the_matte_under_the_stroke(client):
    client.post("/api/images/a.png/click", json={"x": 40, "y": 50})
    before = get_alpha(client)
    r = client.post("/api/images/a.png/paint", json={"points": [[90, 30], [120, 30]], "width": 6}).json()
    assert r["current"]["has_alpha"] is True
    painted = get_alpha(client)
    stroke = painted != before
    assert stroke.sum() > 100 and (painted[stroke] == 255).all()
    assert painted[30, 105] == 255 and before[30, 105] == 0
    r = client.post("/api/images/a.png/paint", json={"points": [[30, 50], [50, 50]], "width": 4,
                                                     "erase": True}).json()
    erased = get_alpha(client)
    assert erased[50, 40] == 0 and before[50, 40] == 255
    changed = erased != painted
    assert changed.sum() > 40 and (erased[changed] == 0).all()
    client.post("/api/images/a.png/undo")
    np.testing.assert_array_equal(get_alpha(client), painted)
    client.post("/api/images/a.png/undo")
    np.testing.assert_array_equal(get_alpha(client), before)


def test_session_keeps_mattes_compact_and_shared():
    image = photo_like(H, W, seed=3)
    session = Session(Predictor(AlphaDiskEngine(radius=RADIUS)), image)
    assert session.alpha is None and session.alpha_png is None
    pred = session.add_click(40, 50)
    exact = alpha_for((40, 50))
    np.testing.assert_array_equal(session.alpha, exact)  # the current step: the engine's float32 matte
    assert pred.alpha is session.alpha
    np.testing.assert_array_equal(decode_png(session.alpha_png), expected_u8(exact))
    packed = session.step.alpha
    assert isinstance(packed, PackedAlpha) and packed.shape == (H, W) and packed.nbytes < H * W
    session.add_click(110, 60)
    session.undo()  # restored at 8-bit precision
    np.testing.assert_array_equal(session.alpha, expected_u8(exact).astype(np.float32) / 255)
    obj = session.finish_object("cat")
    assert obj.alpha is packed  # the object shares its step's PNG
    assert session.alpha is None and session.alpha_png is None
    masks = sum(s.result.nbytes for s in session.history if s.result is not None)
    assert session.history_nbytes() == masks + packed.nbytes  # the redo step went with the finish; shared: once
    # saved and loaded: the object's matte comes back
    predictor = Predictor(AlphaDiskEngine(radius=RADIUS))
    predictor.set_image(image)
    again = Session.from_dict(json.loads(session.to_json()), predictor)
    np.testing.assert_array_equal(again.objects[0].alpha.unpack_uint8(), expected_u8(exact))


def test_saved_mattes_are_checked_when_loading():
    png = PackedAlpha.pack(np.full((4, 6), 0.5, np.float32)).png
    assert PackedAlpha.from_png(png, (4, 6)).unpack_uint8().tolist() == [[128] * 6] * 4
    with pytest.raises(FinecutError, match="is 6x4, expected 5x4"):
        PackedAlpha.from_png(png, (4, 5))
    with pytest.raises(FinecutError, match="not a PNG"):
        PackedAlpha.from_png(b"not a png at all, but long enough to have a header", (4, 6))
    rgb = cv2.imencode(".png", np.zeros((4, 6, 3), np.uint8))[1].tobytes()
    with pytest.raises(FinecutError, match="8-bit grayscale"):
        PackedAlpha.from_png(rgb, (4, 6))


# ------------------------------------------------------------------------------------------------- exports
def export_files(client, formats=None):
    r = client.post("/api/export", json={} if formats is None else {"formats": formats})
    assert r.status_code == 200, r.text
    return r.json()


def test_export_writes_each_finished_objects_matte_next_to_its_mask(folder):
    cat = expected_u8(alpha_for((40, 50)))
    named_alpha = expected_u8(alpha_for((110, 30)))
    with TestClient(make_app(folder)) as c:
        c.post("/api/images/a.png/click", json={"x": 40, "y": 50})
        c.post("/api/images/a.png/finish", json={"label": "cat"})  # 1: with a matte
        c.post("/api/images/a.png/click", json={"x": 130, "y": 95, "model": "disk"})
        c.post("/api/images/a.png/finish", json={"label": "dog"})  # 2: without
        c.post("/api/images/a.png/click", json={"x": 110, "y": 30, "model": "alpha"})
        c.post("/api/images/a.png/finish", json={"label": "alpha"})  # 3: a label that looks like a matte's suffix
        session = c.app.state.service._sessions["a.png"].session
        masks = {o.id: o.mask for o in session.objects}
        assert [o.alpha is not None for o in session.objects] == [True, False, True]
        # a new object in progress with a matte is not finished: not exported
        c.post("/api/images/a.png/click", json={"x": 20, "y": 100})

    with TestClient(make_app(folder)) as c:  # exports read the save files
        r = export_files(c)
        assert r["objects"] == 3 and r["skipped"] == []
        out = c.app.state.service.export_dir
        assert sorted(p.name for p in (out / "a.png").iterdir()) == [
            "a.png_instances.png", "a.png_obj001_cat.png", "a.png_obj001_cat_alpha.png", "a.png_obj002_dog.png",
            "a.png_obj003_alpha.png", "a.png_obj003_alpha_alpha.png"]
        assert {"a.png/a.png_obj001_cat_alpha.png", "a.png/a.png_obj003_alpha_alpha.png"} <= set(r["files"])
        manifest = json.loads((out / "finecut-export.json").read_text())
        assert sorted(f for f in manifest["files"] if f.endswith("_alpha.png")) == [
            "a.png/a.png_obj001_cat_alpha.png", "a.png/a.png_obj003_alpha.png", "a.png/a.png_obj003_alpha_alpha.png"]
        # the mattes: exactly the stored 8-bit values, served like any exported file
        got = decode_png(c.get("/api/export/a.png/a.png_obj001_cat_alpha.png").content)
        np.testing.assert_array_equal(got, cat)
        assert got[0, :8].tolist() == [77, 128, 178, 85, 255, 0, 0, 255] and got[50, 40 + 18] == 128
        np.testing.assert_array_equal(decode_png((out / "a.png" / "a.png_obj003_alpha_alpha.png").read_bytes()),
                                      named_alpha)
        # the object labelled "alpha" keeps its binary mask under its own name
        np.testing.assert_array_equal(decode_png((out / "a.png" / "a.png_obj003_alpha.png").read_bytes()),
                                      masks[3].astype(np.uint8) * 255)
        np.testing.assert_array_equal(decode_png((out / "a.png" / "a.png_obj001_cat.png").read_bytes()),
                                      masks[1].astype(np.uint8) * 255)
        coco = json.loads((out / "coco_rle.json").read_text())
        assert [a["finecut_object_id"] for a in coco["annotations"]] == [1, 2, 3]
        assert all("alpha" not in key for a in coco["annotations"] for key in a)  # COCO: no mattes

        # object 1 deleted: a second export replaces the first (its mattes are recognised) without a stale matte
        assert c.delete("/api/images/a.png/objects/1").status_code == 200
        r = export_files(c)
        assert r["objects"] == 2 and r["skipped"] == []
        assert sorted(p.name for p in (out / "a.png").iterdir()) == [
            "a.png_instances.png", "a.png_obj002_dog.png", "a.png_obj003_alpha.png", "a.png_obj003_alpha_alpha.png"]
        np.testing.assert_array_equal(decode_png((out / "a.png" / "a.png_obj003_alpha_alpha.png").read_bytes()),
                                      named_alpha)
        assert not [p for p in out.parent.iterdir() if p.name.startswith(".export.")]  # no build or backup folders

        # the COCO formats alone: no PNGs, no mattes
        r = export_files(c, ["coco_rle"])
        assert r["files"] == ["coco_rle.json", "finecut-export.json"]
        assert sorted(p.name for p in out.iterdir()) == ["coco_rle.json", "finecut-export.json"]


def test_session_export_and_saved_objects_give_the_mattes(tmp_path):
    from finecut.session import saved_objects

    session = Session(Predictor(AlphaDiskEngine(radius=RADIUS)), photo_like(H, W, seed=3))
    session.add_click(40, 50)
    session.finish_object("cat")
    session.add_click(120, 80)
    session.add_object(session.mask, "plain")  # an added mask: no matte
    want = expected_u8(alpha_for((40, 50)))
    session.export(tmp_path / "e", stem="photo", image_file="photo.jpg", formats=["png"])
    names = sorted(p.name for p in (tmp_path / "e" / "photo").iterdir())
    assert names == ["photo_instances.png", "photo_obj001_cat.png", "photo_obj001_cat_alpha.png",
                     "photo_obj002_plain.png"]
    np.testing.assert_array_equal(decode_png((tmp_path / "e" / "photo" / "photo_obj001_cat_alpha.png").read_bytes()),
                                  want)
    data = json.loads(session.to_json())
    assert [sorted(o) for o in saved_objects(data)] == [["id", "label", "mask"]] * 2  # mattes only when asked
    with_alpha = saved_objects(data, with_alpha=True)
    assert [o["label"] for o in with_alpha] == ["cat", "plain"] and with_alpha[1]["alpha"] is None
    assert with_alpha[0]["alpha"].dtype == np.uint8
    np.testing.assert_array_equal(with_alpha[0]["alpha"], want)
    # a corrupt matte in the save file is an error naming the object
    record = next(r for r in data["records"].values() if r.get("alpha_png"))
    record["alpha_png"] = base64.b64encode(PackedAlpha.pack(np.zeros((H, W - 1), np.float32)).png).decode()
    with pytest.raises(FinecutError, match=r"object 1: saved alpha matte is 159x120, expected 160x120"):
        saved_objects(data, with_alpha=True)
    assert len(saved_objects(data)) == 2  # not read without with_alpha


# ------------------------------------------------------------------ the page (headless Chromium, as test_app_e2e.py)
def _playwright_or_skip():
    """Playwright's sync API and the chromium binary, or a skip (a failure with FINECUT_REQUIRE_E2E=1)."""
    import os
    import shutil
    from pathlib import Path

    required = os.environ.get("FINECUT_REQUIRE_E2E") == "1"
    chromium = os.environ.get("FINECUT_CHROMIUM", "/usr/bin/chromium")
    try:
        from playwright import sync_api
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed (pip install playwright)")
    if not (Path(chromium).exists() or shutil.which(chromium)):
        if required:
            raise RuntimeError(f"chromium not found at {chromium}")
        pytest.skip(f"chromium not found at {chromium}")
    return sync_api, chromium


def test_page_alpha_toggle_draws_the_matte_instead_of_the_mask(folder):
    from helpers_app import LiveServer

    sync_api, chromium = _playwright_or_skip()
    engines = {"alpha": AlphaDiskEngine(radius=40), "disk": DiskEngine(radius=40)}  # matte: 1 to 12 px, 0 past 24
    config = AppConfig(image_dir=folder, default_model="alpha", models=["alpha", "disk"],
                       model_factory=engines.__getitem__)
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]
    with LiveServer(create_app(config)) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.set_default_timeout(20_000)
            page.goto(url + "/#a.png")
            page.wait_for_selector('#stage[data-image="a.png"]')

            def wait_idle(condition):
                page.wait_for_function("(() => { const d = document.querySelector('#stage').dataset; "
                                       f"return d.busy === '0' && ({condition}); }})()")

            def screen(x, y):
                box = page.locator("#view").bounding_box()
                v = page.evaluate("window.finecutApp.state.view")
                return box["x"] + v["tx"] + (x + 0.5) * v["s"], box["y"] + v["ty"] + (y + 0.5) * v["s"]

            def pixel(x, y):
                sx, sy = screen(x, y)
                box = page.locator("#view").bounding_box()
                return page.evaluate("""([x, y]) => { const c = document.getElementById('view');
                    const dpr = window.devicePixelRatio || 1;
                    return Array.from(c.getContext('2d').getImageData(Math.round(x * dpr), Math.round(y * dpr), 1, 1)
                      .data); }""", [sx - box["x"], sy - box["y"]])

            alpha_button = page.locator("#alpha")
            assert alpha_button.is_disabled()  # no prediction yet
            page.evaluate("(() => { const o = document.getElementById('opacity'); o.value = 100; "
                          "o.dispatchEvent(new Event('input')); })()")
            cx, cy = 60, 60
            near, ring = (cx + 5, cy), (cx + 32, cy)  # in the matte's opaque core; in the mask, outside the matte
            photo_ring = pixel(*ring)
            page.mouse.click(*screen(cx, cy))
            wait_idle("Number(d.area) > 0")
            assert not alpha_button.is_disabled() and alpha_button.get_attribute("aria-pressed") == "false"
            assert page.evaluate("window.finecutApp.state.data.current.has_alpha") is True
            assert pixel(*ring) != photo_ring  # mask view: the disk of radius 40 is drawn over the photo
            assert stage_alpha(page) == "0"

            page.keyboard.press("Shift+A")  # plain A is 1:1 zoom
            wait_idle("d.alpha === '1'")
            assert alpha_button.get_attribute("aria-pressed") == "true"
            assert pixel(*near) == [47, 155, 255, 255]  # the current object's colour, matte 1, opacity 100 %
            assert pixel(*ring) == photo_ring  # matte 0 there: the photo, although the mask covers it

            # the next prediction's matte replaces it (fetched for the new version)
            page.mouse.click(*screen(130, 80))
            wait_idle("d.clicks === '2' && d.alpha === '1'")
            page.wait_for_function("window.finecutApp.state.alpha.key === 'a.png@' + "
                                   "window.finecutApp.state.data.version && window.finecutApp.state.alpha.layer")
            assert pixel(130 + 5, 80) == [47, 155, 255, 255]

            alpha_button.click()  # off again: the mask
            wait_idle("d.alpha === '0'")
            assert pixel(*ring) != photo_ring and alpha_button.get_attribute("aria-pressed") == "false"
            alpha_button.click()
            wait_idle("d.alpha === '1'")

            page.keyboard.press("Space")  # finish: the new, empty object has no matte
            wait_idle("d.objects === '1' && d.area === '0'")
            assert alpha_button.is_disabled() and stage_alpha(page) == "0"
            page.keyboard.press("Control+z")  # undo the finish: the matte view comes back
            wait_idle("Number(d.area) > 0 && d.alpha === '1'")
            page.evaluate("window.finecutApp.fit()")
            page.keyboard.press("a")
            assert page.locator("#zoom").inner_text() == "100%"
            assert errors == []
        finally:
            browser.close()


def stage_alpha(page):
    return page.eval_on_selector("#stage", "el => el.dataset.alpha")
