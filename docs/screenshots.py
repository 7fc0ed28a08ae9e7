"""Regenerate the app screenshots of docs/app.md: ``python docs/screenshots.py [--model default]``.

Starts ``finecut app`` on 127.0.0.1 with scikit-image's ``astronaut`` photo, drives it in headless Chromium
(Playwright with Debian's chromium, no downloads) as a person would — a box and clicks, finish, next object — and
writes ``docs/app-annotate.png`` and ``docs/app-objects.png``.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import httpx

DOCS = Path(__file__).resolve().parent
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright
    from skimage import data

    tmp = Path(tempfile.mkdtemp())
    try:
        for name in ("astronaut", "coffee"):
            cv2.imwrite(str(tmp / f"{name}.png"), cv2.cvtColor(getattr(data, name)(), cv2.COLOR_RGB2BGR))
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "finecut.cli", "app", str(tmp), "--port", str(port),
                                 "--model", args.model])
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    httpx.get(url + "/api/config", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1360, "height": 820})
                page.set_default_timeout(120_000)
                page.goto(url + "/#astronaut.png")
                page.wait_for_selector('#stage[data-image="astronaut.png"]')

                def at(x: float, y: float) -> tuple[float, float]:
                    box = page.locator("#view").bounding_box()
                    v = page.evaluate("window.finecutApp.state.view")
                    return box["x"] + v["tx"] + x * v["s"], box["y"] + v["ty"] + y * v["s"]

                def idle(cond: str = "true") -> None:
                    page.wait_for_function("(() => { const d = document.querySelector('#stage').dataset; "
                                           f"return d.busy === '0' && ({cond}); }})()")

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

                def finish(label: str) -> None:
                    n = int(page.eval_on_selector("#stage", "el => el.dataset.objects"))
                    page.locator("#label").fill(label)
                    page.locator("#finish").click()
                    idle(f"d.objects === '{n + 1}'")

                drag_box(352, 2, 470, 285)
                finish("shuttle")
                drag_box(150, 12, 305, 160)
                finish("head")
                page.locator("#label").fill("suit")
                drag_box(20, 140, 372, 511)
                click(200, 330)
                click(420, 420, "right")
                page.mouse.move(*at(470, 60))
                page.screenshot(path=str(DOCS / "app-annotate.png"))
                finish("suit")
                page.locator("#opacity").fill("60")
                page.screenshot(path=str(DOCS / "app-objects.png"))
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("wrote", DOCS / "app-annotate.png", DOCS / "app-objects.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
