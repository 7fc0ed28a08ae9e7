"""End to end: the annotation app in headless Chromium (Playwright driving Debian's chromium).

Skips when Playwright or the chromium binary is missing (fails instead with FINECUT_REQUIRE_E2E=1); CI installs both (``pip install playwright`` and
``apt-get install chromium``), and never runs ``playwright install``.
"""

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from doubles import DiskEngine
from helpers_app import LiveServer, photo_like

from finecut.app import AppConfig, create_app
from finecut.io import read_label_image, read_mask

CHROMIUM = os.environ.get("FINECUT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
H, W = 480, 640

# CI sets FINECUT_REQUIRE_E2E=1 so that a missing browser fails instead of skipping.
REQUIRED = os.environ.get("FINECUT_REQUIRE_E2E") == "1"
try:
    from playwright import sync_api
except ImportError:
    if REQUIRED:
        raise
    pytest.skip("playwright is not installed (pip install playwright)", allow_module_level=True)
if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
    if REQUIRED:
        raise RuntimeError(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    pytest.skip(f"chromium not found at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


@pytest.fixture()
def engines():
    return {"disk": DiskEngine(radius=40), "big": DiskEngine(radius=70)}


@pytest.fixture()
def app_url(tmp_path, engines):
    images = tmp_path / "images"
    images.mkdir()
    for i, name in enumerate(["a.png", "b.png"]):
        cv2.imwrite(str(images / name), cv2.cvtColor(photo_like(H, W, seed=i), cv2.COLOR_RGB2BGR))
    config = AppConfig(image_dir=images, default_model="disk", models=["disk", "big"],
                       model_factory=engines.__getitem__)
    with LiveServer(create_app(config)) as url:
        yield url, images


def _new_page(browser):
    pg = browser.new_page(viewport={"width": 1280, "height": 800})
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.set_default_timeout(20_000)
    return pg


@pytest.fixture()
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    return _new_page(browser)


def stage(page, key):
    return page.eval_on_selector("#stage", f"el => el.dataset.{key}")


def wait_idle(page, condition="true"):
    page.wait_for_function(f"(() => {{ const d = document.querySelector('#stage').dataset; "
                           f"return d.busy === '0' && ({condition}); }})()")


def screen(page, x, y):
    """Page coordinates of image pixel (x, y)."""
    box = page.locator("#view").bounding_box()
    v = page.evaluate("window.finecutApp.state.view")
    return box["x"] + v["tx"] + (x + 0.5) * v["s"], box["y"] + v["ty"] + (y + 0.5) * v["s"]


def canvas_pixel(page, x, y):
    sx, sy = screen(page, x, y)
    box = page.locator("#view").bounding_box()
    return page.evaluate(
        """([x, y]) => { const c = document.getElementById('view'); const dpr = window.devicePixelRatio || 1;
             return Array.from(c.getContext('2d').getImageData(Math.round(x * dpr), Math.round(y * dpr), 1, 1).data); }""",
        [sx - box["x"], sy - box["y"]],
    )


def test_annotate_undo_finish_export_reload(app_url, page, tmp_path):
    url, images = app_url
    page.goto(url + "/")
    page.wait_for_selector('#stage[data-image="a.png"]')
    assert page.locator("#image-pos").inner_text() == "1 / 2"

    cx, cy = W // 3, H // 2  # the red disk of the test picture
    before = canvas_pixel(page, cx, cy)
    page.mouse.click(*screen(page, cx, cy))
    wait_idle(page, "Number(d.area) > 0")
    area1 = int(stage(page, "area"))
    after = canvas_pixel(page, cx, cy)
    assert after != before and after[2] > before[2]  # the blue mask now covers the photo
    assert "model" in page.locator("#latency").inner_text() and "ms" in page.locator("#latency").inner_text()

    page.mouse.click(*screen(page, cx + 30, cy), button="right")  # negative click
    wait_idle(page, "d.clicks === '2'")
    assert int(stage(page, "area")) < area1

    page.keyboard.press("Control+z")
    wait_idle(page, "d.clicks === '1'")
    assert int(stage(page, "area")) == area1
    page.keyboard.press("Control+Shift+z")
    wait_idle(page, "d.clicks === '2'")
    page.locator("#undo").click()
    wait_idle(page, "d.clicks === '1'")

    page.locator("#label").fill("cat")
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("Space")
    wait_idle(page, "d.objects === '1' && d.area === '0'")
    assert "#1 cat" in page.locator("#objects").inner_text()

    # second object by dragging a box, finished with the button
    x0, y0 = screen(page, int(W * 0.6), int(H * 0.28))
    x1, y1 = screen(page, int(W * 0.87), int(H * 0.77))
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
    page.mouse.move(x1, y1, steps=4)
    page.mouse.up()
    wait_idle(page, "Number(d.area) > 0")
    page.locator("#label").fill("box")
    page.locator("#finish").click()
    wait_idle(page, "d.objects === '2'")

    # navigation and persistence
    page.keyboard.press("ArrowRight")
    page.wait_for_selector('#stage[data-image="b.png"]')
    wait_idle(page, "d.objects === '0'")
    page.keyboard.press("ArrowLeft")
    page.wait_for_selector('#stage[data-image="a.png"]')
    wait_idle(page, "d.objects === '2'")
    page.reload()
    page.wait_for_selector('#stage[data-image="a.png"]')
    wait_idle(page, "d.objects === '2'")

    page.screenshot(path=str(tmp_path / "app.png"))

    # export everything and check the files
    page.locator("#export-open").click()
    page.locator("#export-run").click()
    page.wait_for_selector("#export-summary")
    assert "2 object(s) from 1 image(s)" in page.locator("#export-summary").inner_text()
    out = images / ".finecut" / "export"
    coco = json.loads((out / "coco_rle.json").read_text())
    assert [a["category_id"] for a in coco["annotations"]] == [2, 1]  # categories sorted: box=1, cat=2
    assert {c["name"] for c in coco["categories"]} == {"cat", "box"}
    cat = read_mask(out / "a.png" / "a.png_obj001_cat.png")
    assert cat.shape == (H, W) and cat[cy, cx]
    inst = read_label_image(out / "a.png" / "a.png_instances.png")
    assert inst[cy, cx] == 1 and inst[int(H * 0.52), int(W * 0.73)] == 2 and inst[5, 5] == 0
    polys = json.loads((out / "coco_polygons.json").read_text())
    assert len(polys["annotations"]) == 2 and polys["annotations"][0]["segmentation"]
    link = page.locator("#export-result a", has_text="coco_rle.json")
    assert link.count() == 1
    assert page.errors == []


def test_bad_image_does_not_stop_the_rest(app_url, page):
    url, images = app_url
    (images / "0-broken.jpg").write_bytes(b"not a jpeg at all")
    page.goto(url + "/")
    page.wait_for_selector("#message.error")
    assert "cannot decode image" in page.locator("#message").inner_text()
    assert "cannot decode image" in page.locator("#status").inner_text()
    page.keyboard.press("ArrowRight")
    page.wait_for_selector('#stage[data-image="a.png"]')
    page.wait_for_selector("#message", state="hidden")
    page.mouse.click(*screen(page, W // 3, H // 2))
    wait_idle(page, "Number(d.area) > 0")
    assert np.isfinite(float(stage(page, "area")))
    assert page.errors == []


def test_tolerant_click_brush_and_zoom(app_url, page):
    url, _ = app_url
    page.goto(url + "/#b.png")
    page.wait_for_selector('#stage[data-image="b.png"]')
    page.keyboard.down("t")
    page.mouse.click(*screen(page, W // 3, H // 2))
    page.keyboard.up("t")
    wait_idle(page, "d.clicks === '1'")
    page.mouse.click(*screen(page, W // 3 + 20, H // 2), button="middle")
    wait_idle(page, "d.clicks === '2'")
    kinds = page.evaluate("window.finecutApp.state.data.current.clicks.map(c => c.kind)")
    assert kinds == ["tolerant", "tolerant"]

    page.keyboard.press("b")  # brush tool
    assert page.locator('#tools button[data-tool="brush"]').get_attribute("class") == "active"
    page.mouse.move(*screen(page, 500, 60))
    page.mouse.down()
    page.mouse.move(*screen(page, 560, 60), steps=6)
    page.mouse.up()
    wait_idle(page, "window.finecutApp.state.data.current.scribbles.length === 1")
    assert page.evaluate("window.finecutApp.state.data.current.scribbles[0].positive") is True
    area = int(stage(page, "area"))
    assert area > 0

    s0 = page.evaluate("window.finecutApp.state.view.s")
    page.mouse.move(*screen(page, 300, 200))
    page.mouse.wheel(0, -400)
    page.wait_for_function(f"window.finecutApp.state.view.s > {s0} * 1.3")
    page.keyboard.press("f")
    page.wait_for_function(f"Math.abs(window.finecutApp.state.view.s - {s0}) < 1e-6")
    page.keyboard.press("Escape")  # reset the object
    wait_idle(page, "d.clicks === '0' && d.area === '0'")
    assert page.errors == []


def click_at(page, x, y, **kw):
    page.mouse.click(*screen(page, x, y), **kw)


def test_busy_state_shows_spinner_cursor_and_queued_clicks(app_url, page, engines):
    url, _ = app_url
    page.goto(url + "/")
    page.wait_for_selector('#stage[data-image="a.png"]')
    wait_idle(page)
    assert page.locator("#spinner").is_hidden()
    engines["disk"].delay = 0.8
    click_at(page, W // 3, H // 2)
    page.wait_for_selector("#spinner", state="visible")
    assert page.eval_on_selector("#view", "el => getComputedStyle(el).cursor") == "progress"
    click_at(page, W // 3 + 20, H // 2)
    click_at(page, W // 3 - 20, H // 2, button="right")
    page.wait_for_function("document.querySelector('#stage').dataset.queued === '2'")
    assert "2 queued" in page.locator("#spinner").inner_text()
    assert len(page.evaluate("window.finecutApp.state.pending")) == 2  # drawn as hollow markers until computed
    wait_idle(page, "d.clicks === '3'")
    assert page.locator("#spinner").is_hidden() and stage(page, "queued") == "0"
    assert page.eval_on_selector("#view", "el => getComputedStyle(el).cursor") != "progress"
    assert page.errors == []


def test_model_switch_undo_rename_enter_delete_undo_and_status(app_url, page):
    url, _ = app_url
    page.goto(url + "/")
    page.wait_for_selector('#stage[data-image="a.png"]')
    click_at(page, W // 3, H // 2)
    wait_idle(page, "d.clicks === '1'")
    small = int(stage(page, "area"))
    page.select_option("#model", "big")
    wait_idle(page, f"Number(d.area) > {small}")
    page.keyboard.press("Control+z")  # undo the model switch: mask and selector go back
    wait_idle(page, f"Number(d.area) === {small}")
    assert page.locator("#model").input_value() == "disk"
    page.keyboard.press("Control+Shift+z")
    wait_idle(page, f"Number(d.area) > {small}")
    assert page.locator("#model").input_value() == "big"
    page.keyboard.press("Control+z")
    wait_idle(page, f"Number(d.area) === {small}")

    page.locator("#label").fill("cat")
    page.locator("#finish").click()
    wait_idle(page, "d.objects === '1'")
    click_at(page, int(W * 0.73), int(H * 0.52))
    wait_idle(page, "Number(d.area) > 0")
    page.locator("#finish").click()
    wait_idle(page, "d.objects === '2'")
    assert "2 objects" in page.locator("#status").inner_text()

    # rename with Enter: no JS error, one rename
    page.locator("#objects li[data-id='2'] .obj-label").dblclick()
    page.locator("#objects li[data-id='2'] input").fill("box")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#objects').innerText.includes('#2 box')")
    wait_idle(page)
    assert page.errors == []

    # delete, then Ctrl+Z restores it; the status bar count follows
    page.locator("#objects li[data-id='1'] button.delete").click()
    wait_idle(page, "d.objects === '1'")
    assert "1 object" in page.locator("#status").inner_text()
    assert "Ctrl+Z" in page.locator("#status").inner_text()
    page.keyboard.press("Control+z")
    wait_idle(page, "d.objects === '2'")
    assert "#1 cat" in page.locator("#objects").inner_text()
    assert "2 objects" in page.locator("#status").inner_text()

    # reopen a finished object, refine it, finish it again under its id
    page.locator("#objects li[data-id='1'] button.reopen").click()
    wait_idle(page, "d.clicks === '1'")
    assert page.locator("#label").input_value() == "cat"
    assert page.locator("#objects li[data-id='1']").get_attribute("class") == "editing"
    click_at(page, W // 3 + 60, H // 2)
    wait_idle(page, "d.clicks === '2'")
    page.locator("#finish").click()
    wait_idle(page, "d.objects === '2' && d.clicks === '0'")
    assert [o["id"] for o in page.evaluate("window.finecutApp.state.objects")] == [1, 2]
    assert page.errors == []


def test_stale_tab_gets_the_current_state_and_a_message(app_url, browser):
    url, _ = app_url
    a, b = _new_page(browser), _new_page(browser)
    for pg in (a, b):
        pg.goto(url + "/#a.png")
        pg.wait_for_selector('#stage[data-image="a.png"]')
        wait_idle(pg)
    click_at(b, W // 3, H // 2)
    wait_idle(b, "d.clicks === '1'")
    click_at(a, int(W * 0.73), int(H * 0.52))  # based on the state before b's click: refused, a reloads
    a.wait_for_selector("#message:not([hidden])")
    assert "another tab" in a.locator("#message").inner_text()
    wait_idle(a, "d.clicks === '1'")
    assert a.evaluate("window.finecutApp.state.data.current.clicks[0].x") == b.evaluate(
        "window.finecutApp.state.data.current.clicks[0].x")
    click_at(a, int(W * 0.73), int(H * 0.52))  # now up to date: goes through, on top of b's object
    wait_idle(a, "d.clicks === '2'")
    a.wait_for_selector("#message", state="hidden")
    assert a.errors == [] and b.errors == []


def test_broken_image_clears_the_object_panel(app_url, page):
    url, images = app_url
    (images / "c-broken.png").write_bytes(b"not a png at all")
    page.goto(url + "/#a.png")
    page.wait_for_selector('#stage[data-image="a.png"]')
    click_at(page, W // 3, H // 2)
    wait_idle(page, "Number(d.area) > 0")
    page.locator("#finish").click()
    wait_idle(page, "d.objects === '1'")
    click_at(page, int(W * 0.73), int(H * 0.52))
    wait_idle(page, "d.clicks === '1'")
    page.locator("#images li", has_text="c-broken.png").click()
    page.wait_for_selector("#message.error")
    wait_idle(page)
    assert page.locator("#objects li").count() == 0
    assert page.locator("#object-count").inner_text() == ""
    assert not any(ch.isdigit() for ch in page.locator("#current-info").inner_text())
    assert page.locator("#latency").inner_text().strip() == ""
    assert page.locator("#finish").is_disabled() and page.locator("#undo").is_disabled()
    assert page.errors == []


# ------------------------------------------------------------------ the annotator's day (issue 19)
@pytest.fixture()
def labelled_url(tmp_path, engines):
    from finecut.app.labels import load_label_set

    images = tmp_path / "images"
    images.mkdir()
    for i, name in enumerate(["a.png", "b.png", "c.png"]):
        cv2.imwrite(str(images / name), cv2.cvtColor(photo_like(H, W, seed=i), cv2.COLOR_RGB2BGR))
    config = AppConfig(image_dir=images, default_model="disk", models=["disk", "big"],
                       model_factory=engines.__getitem__, labels=load_label_set("person,car,tree"))
    with LiveServer(create_app(config)) as url:
        yield url, images


def object_ids(page):
    return page.evaluate("window.finecutApp.state.objects.map(o => o.id)")


def test_label_set_select_rename_reorder_hide_lock(labelled_url, page):
    url, images = labelled_url
    page.goto(url + "/")
    page.wait_for_selector('#stage[data-image="a.png"]')
    wait_idle(page)
    assert page.locator(".class-chip").count() == 3 and page.locator("#label").is_hidden()
    assert page.locator(".class-chip.active").inner_text().split() == ["1", "person"]
    cx, cy = W // 3, H // 2
    before = canvas_pixel(page, cx, cy)
    page.keyboard.press("2")
    assert page.locator(".class-chip.active").get_attribute("data-label") == "car"
    click_at(page, cx, cy)
    wait_idle(page, "Number(d.area) > 0")
    page.keyboard.press("Space")
    wait_idle(page, "d.objects === '1' && d.area === '0'")
    assert "#1 car" in page.locator("#objects").inner_text()
    swatch = page.eval_on_selector("#objects li[data-id='1'] .swatch", "el => getComputedStyle(el).backgroundColor")
    assert swatch == "rgb(60, 179, 113)"  # the colour of class "car"
    shown = canvas_pixel(page, cx, cy)
    assert shown[1] > before[1] + 20  # drawn in the class colour (green) over the red disk
    page.keyboard.press("3")
    click_at(page, int(W * 0.73), int(H * 0.52))
    wait_idle(page, "Number(d.area) > 0")
    page.locator("#finish").click()
    wait_idle(page, "d.objects === '2'")
    assert "#2 tree" in page.locator("#objects").inner_text()

    # select by clicking the mask, rename with the class key
    page.keyboard.press("v")
    click_at(page, cx, cy)
    page.wait_for_function("document.querySelector('#stage').dataset.selected === '1'")
    assert "selected" in page.locator("#objects li[data-id='1']").get_attribute("class")
    page.keyboard.press("1")
    page.wait_for_function("document.querySelector('#objects').innerText.includes('#1 person')")
    wait_idle(page)

    # reorder: the list shows the top object first; bring #1 forward
    assert page.locator("#objects li").first.get_attribute("data-id") == "2" and object_ids(page) == [1, 2]
    page.locator("#objects li[data-id='1'] button.move-up").click()
    page.wait_for_function("window.finecutApp.state.objects.map(o => o.id).join() === '2,1'")
    assert page.locator("#objects li").first.get_attribute("data-id") == "1"
    page.keyboard.press("Control+z")
    page.wait_for_function("window.finecutApp.state.objects.map(o => o.id).join() === '1,2'")

    # hide and show, lock
    shown = canvas_pixel(page, cx, cy)  # now in the colour of "person"
    assert shown != before
    page.locator("#objects li[data-id='1'] button.visibility").click()
    assert canvas_pixel(page, cx, cy) == before
    page.locator("#objects li[data-id='1'] button.visibility").click()
    assert canvas_pixel(page, cx, cy) == shown
    page.locator("#objects li[data-id='1'] button.lock").click()
    assert page.locator("#objects li[data-id='1'] button.delete").is_disabled()
    click_at(page, cx, cy)  # a locked object cannot be selected
    page.wait_for_function("document.querySelector('#stage').dataset.selected === ''")
    page.reload()  # hide / lock are kept per image in the browser
    page.wait_for_selector('#stage[data-image="a.png"]')
    wait_idle(page, "d.objects === '2'")
    assert page.locator("#objects li[data-id='1'] button.delete").is_disabled()

    page.locator("#export-open").click()
    page.locator("#export-run").click()
    page.wait_for_selector("#export-summary")
    coco = json.loads((images / ".finecut" / "export" / "coco_rle.json").read_text())
    assert [(c["name"], c["id"]) for c in coco["categories"]] == [("person", 1), ("car", 2), ("tree", 3)]
    assert [a["category_id"] for a in coco["annotations"]] == [1, 3]
    assert page.errors == []


def test_import_correct_and_folder_progress(labelled_url, page, tmp_path):
    from finecut.export import mask_to_polygons, mask_to_rle

    url, images = labelled_url
    car = np.zeros((H, W), bool)
    car[180:300, 140:280] = True
    tree = np.zeros((H, W), np.uint8)
    cv2.circle(tree, (470, 250), 60, 1, -1)
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
            "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "tree"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": mask_to_rle(car)},
                            {"id": 2, "image_id": 1, "category_id": 2,
                             "segmentation": mask_to_polygons(tree.astype(bool))}]}
    (tmp_path / "prelabels.json").write_text(json.dumps(coco))
    page.goto(url + "/")
    page.wait_for_selector('#stage[data-image="a.png"]')
    wait_idle(page)
    page.set_input_files("#import", str(tmp_path / "prelabels.json"))
    page.wait_for_selector("#import-summary")
    assert "2 object(s) imported into 1 image(s)" in page.locator("#import-summary").inner_text()
    page.locator("#import-close").click()
    wait_idle(page, "d.objects === '2'")
    assert page.locator("#objects li[data-id='1'] .tag").inner_text() == "imported"
    assert page.locator("#image-status").inner_text() == "in progress"

    # correct the imported car: its mask is the prior; a click adds around it, paint adds, erase removes
    page.locator("#objects li[data-id='1'] button.reopen").click()
    wait_idle(page, f"d.area === '{int(car.sum())}'")
    assert "prior mask" in page.locator("#current-info").inner_text()
    click_at(page, 300, 240)
    wait_idle(page, f"Number(d.area) > {int(car.sum())}")
    clicked = int(stage(page, "area"))
    page.keyboard.press("m")
    page.mouse.move(*screen(page, 150, 330))
    page.mouse.down()
    page.mouse.move(*screen(page, 260, 330), steps=6)
    page.mouse.up()
    wait_idle(page, f"Number(d.area) > {clicked}")
    painted = int(stage(page, "area"))
    page.keyboard.press("e")
    page.mouse.move(*screen(page, 150, 200))
    page.mouse.down()
    page.mouse.move(*screen(page, 260, 200), steps=6)
    page.mouse.up()
    wait_idle(page, f"Number(d.area) < {painted}")
    page.keyboard.press("Space")
    wait_idle(page, "d.objects === '2' && d.area === '0'")
    assert page.evaluate("window.finecutApp.state.objects[0].imported") is False

    # folder progress: done + next, skip + next, filters
    page.keyboard.press("d")
    page.wait_for_selector('#stage[data-image="b.png"]')
    wait_idle(page)
    assert page.locator("#progress-text").inner_text() == "1 / 3 done"
    page.keyboard.press("s")
    page.wait_for_selector('#stage[data-image="c.png"]')
    wait_idle(page)
    assert page.locator("#progress-text").inner_text() == "1 / 3 done · 1 skipped"
    assert page.locator("#images li[data-name='b.png']").get_attribute("data-status") == "skipped"
    page.select_option("#image-filter", "done")
    assert page.locator("#images li[data-name='b.png']").count() == 0
    assert page.locator("#images li[data-name='a.png']").count() == 1
    page.select_option("#image-filter", "all")
    page.keyboard.press("d")
    page.wait_for_selector("#message.notice")
    assert "Every image is done or skipped" in page.locator("#message").inner_text()

    page.locator("#export-open").click()
    page.locator("#export-run").click()
    page.wait_for_selector("#export-summary")
    manifest = json.loads((images / ".finecut" / "export" / "finecut-export.json").read_text())
    assert manifest["status"] == {"a.png": "done", "b.png": "skipped", "c.png": "done"}
    assert page.errors == []
