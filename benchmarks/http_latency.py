"""Latency of one click through the HTTP API, server on loopback, on a quiet and on a busy machine.

Starts ``finecut app`` (and ``finecut serve`` for the CVAT endpoint) as subprocesses on 127.0.0.1, opens a real photo
(scikit-image's ``chelsea``, 451x300) and times click requests from the client side: request sent -> mask received and
decoded. The image is encoded once (``open``), which is reported separately.

Each server is measured twice in the same run: *quiet*, then *busy* — with a CPU-bound process beside it that this
script starts itself (a float32 matrix product in a loop, one torch thread per core, at normal priority) and stops
afterwards. This is done for each ``--threads`` setting of the servers (default: ``default``, finecut's choice of
one thread, and ``0``, one thread per core, torch's own default), so the table shows what the thread choice does to a click on a busy
machine. Writes ``results/http_latency.md`` and every timing to ``results/http_latency.json``.

    python benchmarks/http_latency.py [--model default] [--clicks 120] [--threads default 0] [--no-cvat] [--out FILE]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LOAD_BEFORE = os.getloadavg()[0]

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


#: The "machine busy" load: a CPU-bound process using every core.
HOG = """
import os, torch
torch.set_num_threads(os.cpu_count() or 1)
a = torch.randn(1024, 1024)
while True:
    a @ a
"""


class BusyMachine:
    """``with BusyMachine():`` runs a CPU-bound process (every core) beside the benchmark."""

    def __init__(self, warmup: float = 2.0) -> None:
        self.warmup = warmup
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "BusyMachine":
        self.proc = subprocess.Popen([sys.executable, "-c", HOG], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(self.warmup)
        if self.proc.poll() is not None:
            raise RuntimeError("the CPU-bound load process exited")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        stop(self.proc)


def thread_args(threads: int | None) -> list[str]:
    return [] if threads is None else ["--threads", str(threads)]


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def click_app(c: httpx.Client, model: str, n_clicks: int) -> tuple[list[float], list[float]]:
    """``n_clicks`` clicks in sequences of SEQUENCE (reset between): round trip and model ms per click (click ``i`` is
    at position ``i % len(SEQUENCE)`` of its sequence)."""
    rt, model_ms = [], []
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
        i += 1
        if i % len(SEQUENCE) == 0:
            c.post("/api/images/chelsea.png/reset").raise_for_status()
    c.post("/api/images/chelsea.png/reset").raise_for_status()
    return rt, model_ms


def bench_app(folder: Path, model: str, n_clicks: int, threads: int | None) -> dict:
    port = free_port()
    proc = start(["app", str(folder), "--port", str(port), "--model", model, "--out", str(folder / "out"),
                  *thread_args(threads)])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url + "/api/config", proc)
        with httpx.Client(base_url=url, timeout=300) as c:
            t0 = time.perf_counter()
            opened = c.post("/api/images/chelsea.png/open", json={"model": model})
            opened.raise_for_status()
            open_ms = (time.perf_counter() - t0) * 1000
            encode_ms = opened.json()["timing"]["encode_ms"]
            timings = quiet_and_busy(lambda n: click_app(c, model, n), n_clicks)
        return {"endpoint": "app `POST /api/images/{name}/click`", "threads": threads, **timings,
                "open_ms": open_ms, "encode_ms": encode_ms}
    finally:
        stop(proc)


def quiet_and_busy(click: Callable[[int], tuple[list[float], list[float]]], n_clicks: int) -> dict:
    """A warm-up sequence, then ``n_clicks`` clicks on a quiet machine and ``n_clicks`` beside a CPU-bound process;
    ``click(n)`` returns (round-trip ms, model ms) per click."""
    click(len(SEQUENCE))  # warm-up
    quiet = click(n_clicks)
    with BusyMachine():
        busy = click(n_clicks)
    return {"quiet": {"rt": quiet[0], "model": quiet[1]}, "busy": {"rt": busy[0], "model": busy[1]}}


def click_cvat(c: httpx.Client, b64: str, n_clicks: int) -> tuple[list[float], list[float]]:
    rt, model_ms = [], []
    i = 0
    while len(rt) < n_clicks:
        k = i % len(SEQUENCE) + 1
        pos = [[x, y] for x, y, kind in SEQUENCE[:k] if kind == "positive"]
        neg = [[x, y] for x, y, kind in SEQUENCE[:k] if kind == "negative"]
        t0 = time.perf_counter()
        r = c.post("/cvat", json={"image": b64, "pos_points": pos, "neg_points": neg, "obj_bbox": None})
        r.raise_for_status()
        mask = np.asarray(r.json()["mask"], dtype=np.uint8)  # decode (the whole image, or the crop at "bounds")
        assert mask.ndim == 2 and mask.shape[0] <= 300 and mask.shape[1] <= 451
        rt.append((time.perf_counter() - t0) * 1000)
        model_ms.append(float(r.headers["X-Finecut-Model-Ms"]))
        i += 1
    return rt, model_ms


def bench_cvat(image_png: bytes, model: str, n_clicks: int, threads: int | None) -> dict:
    port = free_port()
    proc = start(["serve", "--port", str(port), "--model", model, "--models", model, *thread_args(threads)])
    url = f"http://127.0.0.1:{port}"
    b64 = base64.b64encode(image_png).decode()
    try:
        wait_up(url + "/health", proc)
        with httpx.Client(base_url=url, timeout=300) as c:
            c.post("/cvat", json={"image": b64, "pos_points": [[200, 150]], "neg_points": []}).raise_for_status()
            timings = quiet_and_busy(lambda n: click_cvat(c, b64, n), n_clicks)
        return {"endpoint": "CVAT `POST /cvat` (base64 image in every request)", "threads": threads, **timings,
                "open_ms": None, "encode_ms": None}
    finally:
        stop(proc)


def by_position(values: list[float]) -> list[list[float]]:
    """Click ``i`` of a run is the same request as click ``i + len(SEQUENCE)``: the values grouped per request."""
    return [values[k::len(SEQUENCE)] for k in range(len(SEQUENCE))]


def worst_position_ratio(values: list[float]) -> tuple[float, int]:
    """The largest p95 / median over the sequence positions (the same click repeated), and that position (1-based)."""
    ratios = [percentile(v, 95) / statistics.median(v) for v in by_position(values)]
    k = int(np.argmax(ratios))
    return ratios[k], k + 1


def threads_label(threads: int | None) -> str:
    if threads is None:
        return "finecut default (1)"
    return f"{threads} (one per core: {os.cpu_count()})" if threads == 0 else str(threads)


def report(results: list[dict], model: str, n_clicks: int) -> str:
    from finecut.registry import available_models

    meaning = available_models().get(model, "")
    lines = [
        "# HTTP latency of one click, quiet and busy",
        "",
        f"Model `{model}`" + (f" ({meaning})" if meaning else "")
        + f", photo `skimage.data.chelsea()` (451x300), {n_clicks} clicks per endpoint and condition in sequences of "
        f"{len(SEQUENCE)} (positive and negative, reset between sequences), server on 127.0.0.1 in its own process, "
        "timed at the client from request to decoded mask. *Quiet*: nothing else running; *busy*: a CPU-bound "
        "process started by the benchmark runs beside the server (a matrix product in a loop on every core, normal "
        "priority). Both measured in one run on the same server process. *threads*: the server's `--threads` "
        "(intra-op threads of inference). Produced by `python benchmarks/http_latency.py`.",
        "",
        f"Machine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPU cores, "
        f"measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; 1-minute load average before the run "
        f"{LOAD_BEFORE:.2f} (other processes on the machine, not part of the benchmark).",
        "",
        "| endpoint | threads | quiet median ms | quiet p95 ms | busy median ms | busy p95 ms | busy p95 / median "
        "| same click: worst busy p95 / median (position) | busy / quiet median | model median ms quiet / busy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        q, b = r["quiet"]["rt"], r["busy"]["rt"]
        qm, bm = statistics.median(q), statistics.median(b)
        worst, position = worst_position_ratio(b)
        lines.append(
            f"| {r['endpoint']} | {threads_label(r['threads'])} | {qm:.1f} | {percentile(q, 95):.1f} | {bm:.1f} | "
            f"{percentile(b, 95):.1f} | {percentile(b, 95) / bm:.2f} | {worst:.2f} ({position}) | {bm / qm:.2f} | "
            f"{statistics.median(r['quiet']['model']):.1f} / {statistics.median(r['busy']['model']):.1f} |"
        )
    for r in results:
        if r["open_ms"] is not None:
            lines += ["", f"Opening the image in the app (threads {threads_label(r['threads'])}; decode + encode once, "
                          f"then re-used for every click): {r['open_ms']:.1f} ms round trip, of which encoding "
                          f"{r['encode_ms'] or 0:.1f} ms."]
    for r in results:
        lines += ["", f"Per click of the sequence, {r['endpoint']}, threads {threads_label(r['threads'])} "
                      f"({n_clicks // len(SEQUENCE)} repeats each; ms):", "",
                  "| click | kind | quiet median | quiet p95 | busy median | busy p95 | busy p95 / median |",
                  "|---|---|---|---|---|---|---|"]
        for k, (q, b) in enumerate(zip(by_position(r["quiet"]["rt"]), by_position(r["busy"]["rt"]))):
            bm = statistics.median(b)
            lines.append(f"| {k + 1} | {SEQUENCE[k][2]} | {statistics.median(q):.1f} | {percentile(q, 95):.1f} | "
                         f"{bm:.1f} | {percentile(b, 95):.1f} | {percentile(b, 95) / bm:.2f} |")
    lines += ["", "The model time is what the engine itself spent (`Prediction.seconds`); the rest is HTTP, JSON, "
                  "session bookkeeping and saving the annotation after every click. The goal for finecut's default "
                  "threads: a click's busy p95 under 2x its busy median. *Same click* is that measure: each request "
                  "of the sequence repeated (the first click of an object costs more than the later ones by design — "
                  "FocalClick refines the whole new object, later clicks only the region they change — so over the "
                  "mixed sequence the p95 is a first click and the median a later one; the mixed ratio is shown too)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--clicks", type=int, default=120, help="clicks per endpoint and condition (a multiple of 6)")
    parser.add_argument("--threads", type=lambda s: None if s == "default" else int(s), nargs="+",
                        default=[None, 0], metavar="N",
                        help="server --threads settings to compare: 'default' (finecut's, 1), a number, 0 = one per "
                             "core (default: default 0)")
    parser.add_argument("--no-cvat", action="store_true", help="only the app endpoint")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "http_latency.md")
    args = parser.parse_args()
    from skimage import data

    image = data.chelsea()
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "chelsea.png").write_bytes(buf.tobytes())
        for threads in args.threads:
            results.append(bench_app(folder, args.model, args.clicks, threads))
            if not args.no_cvat:
                results.append(bench_cvat(buf.tobytes(), args.model, args.clicks, threads))
    text = report(results, args.model, args.clicks)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    raw = args.out.with_suffix(".json")  # every timing, for other statistics than the table's
    raw.write_text(json.dumps({"model": args.model, "sequence": SEQUENCE, "load_before": LOAD_BEFORE,
                               "results": results}, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
