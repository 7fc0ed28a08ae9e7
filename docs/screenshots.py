"""Regenerate the app screenshots of docs/app.md: ``python docs/screenshots.py [--model M] [--xl M | --ntclick [M]]``.

Builds a small folder from photos bundled with scikit-image (public domain: astronaut, coffee, chelsea, rocket, camera,
coins), pre-labels three of them from "detector" boxes with ``finecut segment --batch BOXES.json``, starts
``finecut app`` with the label set ``docs/labels-example.yaml`` and ``--import`` of the pre-labels, and drives it in
headless Chromium (Playwright with Debian's chromium, no downloads) as a person would. Writes, 1000 px wide:

* ``app-annotate.png`` — an object in progress (box + clicks) with the label set's class buttons;
* ``app-labels.png`` — finished objects coloured by class, one selected by clicking its mask;
* ``app-import.png`` — an imported (pre-labelled) object reopened and corrected with clicks;
* ``app-progress.png`` — the folder progress view: statuses, counts, the image list.

With ``--xl MODEL`` (a model name such as ``focalclick-xl``, or a FocalClick-XL checkpoint ``NAME.json``) it writes
only ``app-xl.png`` instead: three panels side by side, each the app's canvas around the astronaut's head — a box
around her head and hair and the resulting mask (*box*), a positive scribble along the hair, for what the box missed,
and the result (*scribble*), the *Alpha* toggle on, drawing the model's alpha matte as the object's opacity
(*alpha*). ``finecut app --model`` takes registered names only, so a checkpoint path is served by the same app built
in Python (:func:`app_command`).

With ``--ntclick [MODEL]`` (default ``ntclick``) it writes only ``app-ntclick.png``: tolerant clicks ("there is fine
structure near here", a middle click or T + click in the app) on a thin structure, three panels of the canvas side by
side. The image is synthetic, so that anyone can rerun it: a branching surface crack from the training code's
:func:`~finecut.training.synthetic.draw_crack` (fixed seed), darkened into a concrete-like surface made, as the
training's crack scenes are, from a flattened, low-contrast photo texture (scikit-image's ``gravel``). The panels: one
ordinary positive click on the crack and the resulting mask (*precise click*); the object reset (Esc) and three
tolerant clicks placed loosely, up to 9 px off the crack, instead (*tolerant clicks*); one more tolerant click where
the mask left a gap (*+1 tolerant click*). ``--out DIR`` writes the images elsewhere than ``docs/``.
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
from collections.abc import Iterator
from contextlib import contextmanager
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
#: The FocalClick-XL scene (``--xl``), in astronaut.png's pixels: the box (head and hair), the positive scribble along
#: the hair (inside the box: nothing outside a prompt box is ever object) and the part of the photo each panel shows.
XL_IMAGE = "astronaut.png"
XL_BOX = (140, 5, 312, 195)
XL_SCRIBBLE = [(180, 70), (205, 40), (245, 35), (270, 60), (240, 95), (228, 140), (226, 172)]
XL_REGION = (105, 0, 345, 240)
XL_GAP = 5  # white pixels between the panels
#: The NTClick scene (``--ntclick``), in crack.png's pixels (512 × 512): the crack's seed for
#: :func:`~finecut.training.synthetic.draw_crack`, the ordinary positive click on the crack, the tolerant clicks near
#: it (9, 4.5 and 1 px from its nearest pixel), the tolerant click that closes the gap they leave, and the part of the
#: image each panel shows (the crack's trunk; its forks run off the top right corner).
NT_IMAGE = "crack.png"
NT_SEED = 6
NT_PRECISE = (361, 300)
NT_TOLERANT = [(290, 368), (368, 296), (430, 250)]
NT_MORE = (405, 262)
NT_REGION = (245, 195, 475, 425)
#: ``finecut app`` for a model that its ``--model`` refuses (a checkpoint path): the same parser, config, imports and
#: app, without the check that the model is a registered name.
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


def crack_image(size: int = 512, seed: int = NT_SEED) -> np.ndarray:
    """A synthetic RGB photo of a surface crack, the same for everyone: ``draw_crack``'s alpha matte (a 1-5 px wide,
    branching crack) darkening a grey, concrete-like surface with scikit-image's ``gravel`` as its low-contrast
    texture, as the training's crack scenes are made."""
    from skimage import data

    from finecut.training.synthetic import SyntheticConfig, draw_crack

    texture = cv2.resize(data.gravel(), (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    surface = np.full((size, size, 3), 150.0, np.float32) + (texture - texture.mean())[..., None] * 0.3
    alpha = draw_crack(np.random.default_rng(seed), size, SyntheticConfig())[..., None]
    return np.clip(surface * (1 - alpha) + surface * 0.3 * alpha + 0.5, 0, 255).astype(np.uint8)


def make_crack_folder(root: Path) -> Path:
    images = root / "crack"
    images.mkdir()
    cv2.imwrite(str(images / NT_IMAGE), cv2.cvtColor(crack_image(), cv2.COLOR_RGB2BGR))
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


def grab(page, clip: dict[str, float] | None = None) -> np.ndarray:
    """A screenshot of the page (or of the ``clip`` rectangle of it), as a BGR image."""
    return cv2.imdecode(np.frombuffer(page.screenshot(clip=clip), np.uint8), cv2.IMREAD_COLOR)


def write(path: Path, image: np.ndarray) -> None:
    """``image`` resized to :data:`WIDTH` pixels wide, as a PNG."""
    height = round(image.shape[0] * WIDTH / image.shape[1])
    cv2.imwrite(str(path), cv2.resize(image, (WIDTH, height), interpolation=cv2.INTER_AREA),
                [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print("wrote", path)


def shoot(page, name: str, out: Path = DOCS) -> None:
    write(out / name, grab(page))


def labelled(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` with ``text`` in small white letters on a dark tag in its top left corner."""
    image = image.copy()
    font, scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.55, 1
    (w, h), base = cv2.getTextSize(text, font, scale, thickness)
    cv2.rectangle(image, (0, 0), (w + 12, h + base + 10), (32, 32, 32), -1)
    cv2.putText(image, text, (6, h + 5), font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return image


def side_by_side(panels: list[tuple[str, np.ndarray]], gap: int = XL_GAP) -> np.ndarray:
    """The labelled panels in a row, :data:`WIDTH` pixels wide in all, ``gap`` white pixels apart."""
    width = (WIDTH - gap * (len(panels) - 1)) // len(panels)
    height = round(panels[0][1].shape[0] * width / panels[0][1].shape[1])
    row = []
    for i, (text, image) in enumerate(panels):
        if i:
            row.append(np.full((height, gap, 3), 255, np.uint8))
        row.append(labelled(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA), text))
    strip = np.hstack(row)
    return np.hstack([strip, np.full((height, WIDTH - strip.shape[1], 3), 255, np.uint8)])


class Ui:
    """The app's page driven as a person would, in image pixels; every action waits until the app is idle."""

    def __init__(self, page) -> None:
        self.page = page

    def at(self, x: float, y: float) -> tuple[float, float]:
        box = self.page.locator("#view").bounding_box()
        v = self.page.evaluate("window.finecutApp.state.view")
        return box["x"] + v["tx"] + x * v["s"], box["y"] + v["ty"] + y * v["s"]

    def idle(self, cond: str = "true") -> None:
        self.page.wait_for_function("(() => { const d = document.querySelector('#stage').dataset; "
                                    f"return d.busy === '0' && ({cond}); }})()")

    def opened(self, name: str) -> None:
        self.page.wait_for_selector(f'#stage[data-image="{name}"]')
        self.idle()

    def drag(self, points: list[tuple[float, float]]) -> None:
        """Press at the first point, move through the others, release."""
        self.page.mouse.move(*self.at(*points[0]))
        self.page.mouse.down()
        for point in points[1:]:
            self.page.mouse.move(*self.at(*point), steps=5)
        self.page.mouse.up()

    def drag_box(self, x0: float, y0: float, x1: float, y1: float) -> None:
        self.drag([(x0, y0), ((x0 + x1) / 2, (y0 + y1) / 2), (x1, y1)])
        self.idle("Number(d.area) > 0")

    def scribble(self, points: list[tuple[float, float]]) -> None:
        """A stroke with the Scribble tool (chosen first: B)."""
        n = self.page.evaluate("window.finecutApp.state.data.current.scribbles.length")
        self.drag(points)
        self.idle(f"window.finecutApp.state.data.current.scribbles.length === {n + 1}")

    def click(self, x: float, y: float, button: str = "left") -> None:
        n = int(self.page.eval_on_selector("#stage", "el => el.dataset.clicks"))
        self.page.mouse.click(*self.at(x, y), button=button)
        self.idle(f"d.clicks === '{n + 1}'")

    def finish(self) -> None:
        n = int(self.page.eval_on_selector("#stage", "el => el.dataset.objects"))
        self.page.keyboard.press("Space")
        self.idle(f"d.objects === '{n + 1}' || (d.objects === '{n}' && d.area === '0')")

    def region(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """A screenshot of the canvas showing image pixels ``x0..x1`` × ``y0..y1``."""
        (sx0, sy0), (sx1, sy1) = self.at(x0, y0), self.at(x1, y1)
        return grab(self.page, {"x": sx0, "y": sy0, "width": sx1 - sx0, "height": sy1 - sy0})


def drive(page, url: str, out: Path = DOCS) -> None:
    ui = Ui(page)
    at, idle, opened, drag_box, click, finish = ui.at, ui.idle, ui.opened, ui.drag_box, ui.click, ui.finish

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
    shoot(page, "app-annotate.png", out)
    finish()
    page.keyboard.press("v")  # select the helmet by clicking its mask
    page.mouse.click(*at(400, 470))
    page.wait_for_function("document.querySelector('#stage').dataset.selected !== ''")
    page.mouse.move(*at(470, 60))
    shoot(page, "app-labels.png", out)
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
    shoot(page, "app-import.png", out)
    finish()
    page.keyboard.press("d")  # done: on to coins
    opened("coins.png")
    page.locator("#images li[data-name='rocket.png']").click()
    opened("rocket.png")
    page.mouse.move(*at(600, 40))
    shoot(page, "app-progress.png", out)


def drive_xl(page, url: str, out: Path = DOCS) -> None:
    """``app-xl.png``: box, then a scribble, then the alpha matte view, each a panel of the canvas."""
    ui = Ui(page)
    page.goto(f"{url}/#{XL_IMAGE}")
    ui.opened(XL_IMAGE)
    page.keyboard.press("x")  # box tool
    ui.drag_box(*XL_BOX)
    panels = [("box", ui.region(*XL_REGION))]
    page.keyboard.press("b")  # scribble tool
    ui.scribble(XL_SCRIBBLE)
    panels.append(("scribble", ui.region(*XL_REGION)))
    page.locator("#alpha").click()  # enabled when the model gave the current object an alpha matte
    ui.idle("d.alpha === '1'")  # the matte has arrived and is drawn
    panels.append(("alpha", ui.region(*XL_REGION)))
    path = out / "app-xl.png"
    cv2.imwrite(str(path), side_by_side(panels), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print("wrote", path)


def drive_ntclick(page, url: str, out: Path = DOCS) -> None:
    """``app-ntclick.png``: a precise click, then tolerant clicks instead, then one more, each a panel of the canvas."""
    ui = Ui(page)
    page.goto(f"{url}/#{NT_IMAGE}")
    ui.opened(NT_IMAGE)
    away = ui.at(20, 20)  # the pointer, out of the panels' region

    def panel(text: str) -> tuple[str, np.ndarray]:
        page.mouse.move(*away)
        return text, ui.region(*NT_REGION)

    ui.click(*NT_PRECISE)
    panels = [panel("precise click")]
    page.keyboard.press("Escape")  # reset: the same object, no prompts
    ui.idle("d.clicks === '0' && d.area === '0'")
    for x, y in NT_TOLERANT:
        ui.click(x, y, "middle")  # a middle click is a tolerant click (as is a click with T held)
    panels.append(panel("tolerant clicks"))
    ui.click(*NT_MORE, "middle")
    panels.append(panel("+1 tolerant click"))
    path = out / "app-ntclick.png"
    cv2.imwrite(str(path), side_by_side(panels), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print("wrote", path)


def app_command(images: Path, port: int, model: str, *options: str) -> list[str]:
    """``finecut app`` on ``images`` with ``model`` (a shipped name or a checkpoint path)."""
    return [sys.executable, "-m", "finecut.cli", "app", str(images), "--port", str(port), "--model", model, *options]


@contextmanager
def serving(command: list[str], port: int) -> Iterator[str]:
    """Run the app server ``command`` until the block ends; yields its URL once it answers."""
    proc = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if proc.poll() is not None:
                raise SystemExit(f"the app server stopped (exit status {proc.returncode})")
            try:
                httpx.get(url + "/api/config", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--xl", metavar="MODEL", default=None,
                      help="write only app-xl.png, with this FocalClick-XL model (a name, or a checkpoint NAME.json)")
    only.add_argument("--ntclick", metavar="MODEL", nargs="?", const="ntclick", default=None,
                      help="write only app-ntclick.png, with this NTClick model (default: ntclick)")
    parser.add_argument("--out", type=Path, default=DOCS, help="folder for the images (default: docs/)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    try:
        port = free_port()
        if args.ntclick is not None:
            command, scene = app_command(make_crack_folder(tmp), port, args.ntclick), drive_ntclick
        elif args.xl is not None:
            command, scene = app_command(make_folder(tmp), port, args.xl), drive_xl
        else:
            images = make_folder(tmp)
            coco = prelabel(tmp, images, args.model)
            command = app_command(images, port, args.model, "--labels", str(DOCS / "labels-example.yaml"),
                                  "--import", str(coco))
            scene = drive
        with serving(command, port) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)
            scene(page, url, args.out)
            browser.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
