"""Regenerate the app screenshots of docs/app.md: ``python docs/screenshots.py [--model default]``.

Builds a small folder from photos bundled with scikit-image (public domain: astronaut, coffee, chelsea, rocket, camera,
coins), pre-labels three of them from "detector" boxes with ``finecut segment --batch BOXES.json``, starts
``finecut app`` with the label set ``docs/labels-example.yaml`` and ``--import`` of the pre-labels, and drives it in
headless Chromium (Playwright with Debian's chromium, no downloads) as a person would. Writes, 1000 px wide:

* ``app-annotate.png`` — an object in progress (box + clicks) with the label set's class buttons;
* ``app-labels.png`` — finished objects coloured by class, one selected by clicking its mask;
* ``app-import.png`` — an imported (pre-labelled) object reopened and corrected with clicks;
* ``app-progress.png`` — the folder progress view: statuses, counts, the image list.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import httpx
import numpy as np

DOCS = Path(__file__).resolve().parent
WIDTH = 1000
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins")
#: Boxes (x, y, w, h) a detector might give, by image and class.
BOXES = {
    "coffee.png": [("cup", (172, 12, 240, 290)), ("spoon", (320, 62, 106, 265))],
    "rocket.png": [("rocket", (298, 122, 44, 285))],
    "chelsea.png": [("cat", (0, 0, 451, 300))],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_folder(root: Path) -> Path:
    from skimage import data

    images = root / "photos"
    images.mkdir()
    for name in PHOTOS:
        image = getattr(data, name)()
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        cv2.imwrite(str(images / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return images


def prelabel(root: Path, images: Path, model: str) -> Path:
    """``finecut segment --batch`` with a COCO file of boxes: the masks to import into the app."""
    categories = {"cup": 5, "spoon": 6, "rocket": 7, "cat": 8}
    coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for n, i in categories.items()]}
    for image_id, (name, boxes) in enumerate(BOXES.items(), start=1):
        h, w = cv2.imread(str(images / name)).shape[:2]
        coco["images"].append({"id": image_id, "file_name": name, "height": h, "width": w})
        for label, box in boxes:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                        "category_id": categories[label], "bbox": list(box), "score": 0.9})
    (root / "boxes.json").write_text(json.dumps(coco))
    out = root / "prelabels"
    subprocess.run([sys.executable, "-m", "finecut.cli", "segment", "--batch", str(root / "boxes.json"),
                    "--images", str(images), "--out-dir", str(out), "--model", model], check=True)
    return out / "coco_rle.json"


def shoot(page, name: str) -> None:
    path = DOCS / name
    page.screenshot(path=str(path))
    image = cv2.imread(str(path))
    height = round(image.shape[0] * WIDTH / image.shape[1])
    cv2.imwrite(str(path), cv2.resize(image, (WIDTH, height), interpolation=cv2.INTER_AREA),
                [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print("wrote", path)


def drive(page, url: str) -> None:
    def at(x: float, y: float) -> tuple[float, float]:
        box = page.locator("#view").bounding_box()
        v = page.evaluate("window.finecutApp.state.view")
        return box["x"] + v["tx"] + x * v["s"], box["y"] + v["ty"] + y * v["s"]

    def idle(cond: str = "true") -> None:
        page.wait_for_function("(() => { const d = document.querySelector('#stage').dataset; "
                               f"return d.busy === '0' && ({cond}); }})()")

    def opened(name: str) -> None:
        page.wait_for_selector(f'#stage[data-image="{name}"]')
        idle()

    def drag_box(x0: float, y0: float, x1: float, y1: float) -> None:
        page.mouse.move(*at(x0, y0))
        page.mouse.down()
        page.mouse.move(*at((x0 + x1) / 2, (y0 + y1) / 2), steps=5)
        page.mouse.move(*at(x1, y1), steps=5)
        page.mouse.up()
        idle("Number(d.area) > 0")

    def click(x: float, y: float, button: str = "left") -> None:
        n = int(page.eval_on_selector("#stage", "el => el.dataset.clicks"))
        page.mouse.click(*at(x, y), button=button)
        idle(f"d.clicks === '{n + 1}'")

    def finish() -> None:
        n = int(page.eval_on_selector("#stage", "el => el.dataset.objects"))
        page.keyboard.press("Space")
        idle(f"d.objects === '{n + 1}' || (d.objects === '{n}' && d.area === '0')")

    page.goto(url + "/#astronaut.png")
    opened("astronaut.png")
    page.keyboard.press("3")  # shuttle
    drag_box(352, 2, 470, 285)
    finish()
    page.keyboard.press("2")  # helmet
    drag_box(275, 340, 511, 511)
    finish()
    page.keyboard.press("4")  # flag
    drag_box(0, 0, 95, 511)
    finish()
    page.keyboard.press("1")  # person
    drag_box(20, 10, 372, 511)
    click(200, 330)
    click(90, 420)
    click(420, 420, "right")
    page.mouse.move(*at(470, 60))
    shoot(page, "app-annotate.png")
    finish()
    page.keyboard.press("v")  # select the helmet by clicking its mask
    page.mouse.click(*at(400, 470))
    page.wait_for_function("document.querySelector('#stage').dataset.selected !== ''")
    page.mouse.move(*at(470, 60))
    shoot(page, "app-labels.png")
    page.keyboard.press("Escape")
    page.keyboard.press("c")

    page.keyboard.press("d")  # done: on to the next unfinished image (camera)
    opened("camera.png")
    page.keyboard.press("s")  # skipped: on to chelsea, pre-labelled
    opened("chelsea.png")
    page.locator("#images li[data-name='coffee.png']").click()
    opened("coffee.png")
    idle("d.objects === '2'")
    page.locator("#objects li[data-id='1'] button.reopen").click()  # the cup: its mask is the prior
    idle("Number(d.area) > 0 && d.clicks === '0'")
    click(213, 268)  # the handle, missed by the pre-label
    click(385, 110)  # the rim
    click(300, 290, "right")  # not the saucer
    click(182, 245, "right")
    click(260, 297, "right")
    page.mouse.move(*at(560, 40))
    shoot(page, "app-import.png")
    finish()
    page.keyboard.press("d")  # done: on to coins
    opened("coins.png")
    page.locator("#images li[data-name='rocket.png']").click()
    opened("rocket.png")
    page.mouse.move(*at(600, 40))
    shoot(page, "app-progress.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp())
    try:
        images = make_folder(tmp)
        coco = prelabel(tmp, images, args.model)
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "finecut.cli", "app", str(images), "--port", str(port),
                                 "--model", args.model, "--labels", str(DOCS / "labels-example.yaml"),
                                 "--import", str(coco)])
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    httpx.get(url + "/api/config", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(120_000)
                drive(page, url)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
