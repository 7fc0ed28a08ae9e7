"""Latency of one click through the HTTP API, server on loopback, for a model (default: the default model).

Starts ``finecut app`` (and ``finecut serve`` for the CVAT endpoint) as subprocesses on 127.0.0.1, opens a real photo
(scikit-image's ``chelsea``, 451x300) and times click requests from the client side: request sent -> mask received and
decoded. The image is encoded once (``open``), which is reported separately. Writes ``results/http_latency.md``.

    python benchmarks/http_latency.py [--model default] [--clicks 30] [--no-cvat]
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# (x, y, kind) on the cat of skimage.data.chelsea(); a reset follows each sequence
SEQUENCE = [
    (200, 150, "positive"),
    (420, 40, "negative"),
    (300, 120, "positive"),
    (60, 250, "negative"),
    (150, 230, "positive"),
    (420, 280, "negative"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not start")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "finecut.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=ROOT)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def bench_app(folder: Path, model: str, n_clicks: int) -> dict:
    port = free_port()
    proc = start(["app", str(folder), "--port", str(port), "--model", model, "--out", str(folder / "out")])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url + "/api/config", proc)
        rt, model_ms, server_ms = [], [], []
        with httpx.Client(base_url=url, timeout=120) as c:
            t0 = time.perf_counter()
            opened = c.post("/api/images/chelsea.png/open", json={"model": model})
            opened.raise_for_status()
            open_ms = (time.perf_counter() - t0) * 1000
            encode_ms = opened.json()["timing"]["encode_ms"]
            i = 0
            while len(rt) < n_clicks:
                x, y, kind = SEQUENCE[i % len(SEQUENCE)]
                t0 = time.perf_counter()
                r = c.post("/api/images/chelsea.png/click", json={"x": x, "y": y, "kind": kind, "model": model})
                r.raise_for_status()
                data = r.json()
                _ = np.repeat(np.arange(len(data["current"]["runs"])) % 2, data["current"]["runs"])  # decode
                rt.append((time.perf_counter() - t0) * 1000)
                model_ms.append(data["timing"]["model_ms"])
                server_ms.append(data["timing"]["server_ms"])
                i += 1
                if i % len(SEQUENCE) == 0:
                    c.post("/api/images/chelsea.png/reset").raise_for_status()
        return {"endpoint": "app `POST /api/images/{name}/click`", "rt": rt, "model": model_ms, "server": server_ms,
                "open_ms": open_ms, "encode_ms": encode_ms}
    finally:
        stop(proc)


def bench_cvat(image_png: bytes, model: str, n_clicks: int) -> dict:
    port = free_port()
    proc = start(["serve", "--port", str(port), "--model", model, "--models", model])
    url = f"http://127.0.0.1:{port}"
    b64 = base64.b64encode(image_png).decode()
    try:
        wait_up(url + "/health", proc)
        rt, model_ms = [], []
        with httpx.Client(base_url=url, timeout=120) as c:
            c.post("/cvat", json={"image": b64, "pos_points": [[200, 150]], "neg_points": []}).raise_for_status()
            i = 0
            while len(rt) < n_clicks:
                k = i % len(SEQUENCE) + 1
                pos = [[x, y] for x, y, kind in SEQUENCE[:k] if kind == "positive"]
                neg = [[x, y] for x, y, kind in SEQUENCE[:k] if kind == "negative"]
                t0 = time.perf_counter()
                r = c.post("/cvat", json={"image": b64, "pos_points": pos, "neg_points": neg, "obj_bbox": None})
                r.raise_for_status()
                mask = np.asarray(r.json()["mask"], dtype=np.uint8)
                rt.append((time.perf_counter() - t0) * 1000)
                assert mask.shape == (300, 451)
                model_ms.append(float(r.headers["X-Finecut-Model-Ms"]))
                i += 1
        return {"endpoint": "CVAT `POST /cvat` (base64 image in every request)", "rt": rt, "model": model_ms,
                "server": None, "open_ms": None, "encode_ms": None}
    finally:
        stop(proc)


def report(results: list[dict], model: str, n_clicks: int) -> str:
    from finecut.registry import available_models

    meaning = available_models().get(model, "")
    lines = [
        "# HTTP latency of one click",
        "",
        f"Model `{model}`" + (f" ({meaning})" if meaning else "")
        + f", photo `skimage.data.chelsea()` (451x300), {n_clicks} clicks per endpoint in sequences of "
        f"{len(SEQUENCE)} (positive and negative, reset between sequences), server on 127.0.0.1 in its own process, "
        "timed at the client from request to decoded mask. Produced by `python benchmarks/http_latency.py`.",
        "",
        f"Machine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPU cores "
        f"(shared), measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| endpoint | clicks | median ms | p95 ms | mean ms | model median ms | HTTP + server overhead median ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rt, mm = r["rt"], r["model"]
        overhead = statistics.median([a - b for a, b in zip(rt, mm)])
        lines.append(
            f"| {r['endpoint']} | {len(rt)} | {statistics.median(rt):.1f} | {percentile(rt, 95):.1f} | "
            f"{statistics.mean(rt):.1f} | {statistics.median(mm):.1f} | {overhead:.1f} |"
        )
    for r in results:
        if r["open_ms"] is not None:
            lines += ["", f"Opening the image in the app (decode + encode once, then re-used for every click): "
                          f"{r['open_ms']:.1f} ms round trip, of which encoding {r['encode_ms'] or 0:.1f} ms."]
    lines += ["", "The model time is what the engine itself spent (`Prediction.seconds`); the rest is HTTP, JSON, "
                  "session bookkeeping and the atomic save of the annotation after every click."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--clicks", type=int, default=30)
    parser.add_argument("--no-cvat", action="store_true", help="only the app endpoint")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "http_latency.md")
    args = parser.parse_args()
    from skimage import data

    image = data.chelsea()
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "chelsea.png").write_bytes(buf.tobytes())
        results = [bench_app(folder, args.model, args.clicks)]
        if not args.no_cvat:
            results.append(bench_cvat(buf.tobytes(), args.model, args.clicks))
    text = report(results, args.model, args.clicks)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
