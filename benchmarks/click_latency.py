"""Per-click latency of engines on DAVIS-345 images (854x480), side by side in one run.

Each engine sets the image once per sample (timed separately), then follows the standard protocol's simulated clicks
for ``--clicks`` steps; every ``predict`` call is timed. Prints a table and writes it to ``results/click_latency.md``.

    python benchmarks/click_latency.py --models default grabcut geodesic --samples 20 --clicks 10
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import finecut
from finecut.datasets import default_data_root, open_dataset
from finecut.evaluation import next_click

ROOT = Path(__file__).resolve().parents[1]


def measure(model: str, samples: list, clicks: int, threshold: float) -> dict[str, float]:
    predictor = finecut.Predictor(finecut.load_model(model))
    per_click: list[float] = []
    set_image: list[float] = []
    for sample in samples:
        start = time.perf_counter()
        predictor.set_image(sample.image)
        set_image.append(time.perf_counter() - start)
        pred = np.zeros(sample.gt.shape, bool)
        history: list = []
        previous = None
        for _ in range(clicks):
            history.append(next_click(sample.gt, pred, history))
            start = time.perf_counter()
            previous = predictor.predict(clicks=history, previous=previous, threshold=threshold)
            per_click.append(time.perf_counter() - start)
            pred = previous.mask
    arr = np.asarray(per_click)
    return {"clicks": len(arr), "median": float(np.median(arr)), "p95": float(np.percentile(arr, 95)),
            "mean": float(arr.mean()), "set_image_median": float(np.median(set_image))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["default", "grabcut", "geodesic"])
    parser.add_argument("--samples", type=int, default=20, help="first N DAVIS-345 samples")
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--threshold", type=float, default=0.49)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default=str(ROOT / "results" / "click_latency.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.data_root) if args.data_root else default_data_root()
    dataset = open_dataset("DAVIS", root=root)
    samples = [dataset[i] for i in range(min(args.samples, len(dataset)))]
    rows = []
    for model in args.models:
        stats = measure(model, samples, args.clicks, args.threshold)
        rows.append((model, stats))
        print(f"{model:>14}: median {stats['median'] * 1000:7.1f} ms  p95 {stats['p95'] * 1000:7.1f} ms  "
              f"(set_image {stats['set_image_median'] * 1000:.1f} ms, {stats['clicks']} clicks)", flush=True)
    lines = [
        "# Per-click latency on DAVIS-345 images (854x480)",
        "",
        f"Produced by `python benchmarks/click_latency.py --models {' '.join(args.models)} --samples {args.samples} "
        f"--clicks {args.clicks} --threads {args.threads}`: the first {len(samples)} DAVIS-345 samples, the standard "
        f"protocol's first {args.clicks} simulated clicks each, every `Predictor.predict` call timed "
        "(`set_image` reported separately).",
        "",
        f"Machine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPU cores, torch "
        f"{torch.__version__} with {args.threads} threads; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"load average before the run {os.getloadavg()[0]:.2f}.",
        "",
        "| engine | clicks | median s/click | p95 s/click | mean s/click | set_image median s |",
        "|---|---|---|---|---|---|",
    ]
    for model, s in rows:
        lines.append(f"| {model} | {s['clicks']} | {s['median']:.3f} | {s['p95']:.3f} | {s['mean']:.3f} | "
                     f"{s['set_image_median']:.3f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
