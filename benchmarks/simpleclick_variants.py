"""Per-click latency of the released SimpleClick variants (xTiny / ViT-B / ViT-L / ViT-H) on this CPU.

Latency only, not accuracy: each network is built in the released configuration (the one
``finecut.load_model(PATH, arch="simpleclick-...")`` builds from an official checkpoint) with random weights, and run
behind the same engine and options an official checkpoint gets (target crop resized to 448 x 448, one forward per
click, no flip TTA) on an 854 x 480 DAVIS-345 image (a synthetic one when the data is absent). Clicks follow the
standard protocol on the sample's ground truth; every ``Predictor.predict`` call after the warm-up is timed; the
median is reported for 1 and 2 torch threads. Writes ``results/simpleclick_variants.md`` and prints the table.

    python benchmarks/simpleclick_variants.py                       # xtiny b l h, default click counts
    python benchmarks/simpleclick_variants.py --variants xtiny b --clicks 5
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import finecut
from finecut.evaluation import next_click
from finecut.models.official.simpleclick import released_config
from finecut.models.registry import build_model
from finecut.registry import build_engine

ROOT = Path(__file__).resolve().parents[1]

#: (timed clicks, warm-up clicks) per variant: fewer for the big ones, whose clicks take tens of seconds.
DEFAULT_CLICKS = {"xtiny": (8, 1), "b": (5, 1), "l": (3, 1), "h": (3, 0)}
NAMES = {"xtiny": "SimpleClick-xTiny", "b": "SimpleClick-ViT-B", "l": "SimpleClick-ViT-L", "h": "SimpleClick-ViT-H"}


def davis_sample() -> tuple[np.ndarray, np.ndarray, str]:
    """(image, ground truth, description): the first DAVIS-345 sample, or a synthetic 854x480 scene."""
    try:
        from finecut.datasets import default_data_root, open_dataset

        sample = open_dataset("DAVIS", root=default_data_root())[0]
        return sample.image, sample.gt, f"DAVIS-345 sample 0 ({sample.image.shape[1]}x{sample.image.shape[0]})"
    except Exception:  # noqa: BLE001 - no data here: the latency hardly depends on the content
        rng = np.random.default_rng(0)
        image = (rng.random((480, 854, 3)) * 255).astype(np.uint8)
        yy, xx = np.mgrid[:480, :854]
        gt = (((yy - 240) / 150.0) ** 2 + ((xx - 427) / 220.0) ** 2 <= 1).astype(np.int64)
        return image, gt, "synthetic 854x480 image with an elliptic object"


def measure(variant: str, threads: int, image: np.ndarray, gt: np.ndarray, clicks: int, warmup: int,
            model: torch.nn.Module, config: dict, pipeline: dict) -> list[float]:
    torch.set_num_threads(threads)
    doc = {"name": f"simpleclick-{variant}", "model": config, "engine": "simpleclick", "pipeline": pipeline}
    predictor = finecut.Predictor(build_engine(model, doc, threads=threads))
    predictor.set_image(image)
    history: list = []
    previous = None
    pred = np.zeros(gt.shape, bool)
    times: list[float] = []
    for step in range(clicks + warmup):
        history.append(next_click(gt, pred, history))
        start = time.perf_counter()
        previous = predictor.predict(clicks=history, previous=previous)
        elapsed = time.perf_counter() - start
        if step >= warmup:
            times.append(elapsed)
        pred = previous.mask
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_CLICKS), choices=list(DEFAULT_CLICKS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--clicks", type=int, default=None, help="timed clicks per variant (default: per variant)")
    parser.add_argument("--out", default=str(ROOT / "results" / "simpleclick_variants.md"))
    args = parser.parse_args()
    image, gt, described = davis_sample()
    load_before = os.getloadavg()[0]
    started = datetime.now(timezone.utc)
    rows = []
    for variant in args.variants:
        clicks, warmup = DEFAULT_CLICKS[variant]
        clicks = args.clicks or clicks
        config, pipeline = released_config(variant)
        torch.manual_seed(0)
        model = build_model(config).eval()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        medians = {}
        for threads in args.threads:
            times = measure(variant, threads, image, gt, clicks, warmup, model, config, pipeline)
            medians[threads] = (float(np.median(times)), float(min(times)), float(max(times)), len(times))
            print(f"{NAMES[variant]:>18} {threads} thread(s): median {medians[threads][0]:7.2f} s/click "
                  f"(min {medians[threads][1]:.2f}, max {medians[threads][2]:.2f}, {len(times)} clicks)", flush=True)
        rows.append((variant, params, config, medians))
        del model
        gc.collect()
    header = "| model | params (M) | patch | tokens at 448 | " + " | ".join(
        f"{t} thread{'s' if t > 1 else ''}: median s/click (min-max, clicks)" for t in args.threads) + " |"
    lines = [
        "# SimpleClick variants: per-click latency on this CPU",
        "",
        "Produced by `python benchmarks/simpleclick_variants.py" + (
            f" --variants {' '.join(args.variants)}" if args.variants != list(DEFAULT_CLICKS) else "") + (
            f" --clicks {args.clicks}" if args.clicks else "") + "`. Latency only, not accuracy: each network is "
        "built in its released configuration (`finecut.models.official.simpleclick.released_config`, what "
        "`finecut.load_model(PATH, arch=\"simpleclick-...\")` builds from an official checkpoint) with random "
        "weights and run behind the engine an official checkpoint gets: target crop resized to 448x448 "
        "(`square_input`), one forward per click (`flip_tta` off; the paper's flip TTA doubles the cost), no "
        f"refiner. Image: {described}; clicks from the standard protocol; every `Predictor.predict` call timed "
        "after the warm-up click (none for ViT-H).",
        "",
        f"Machine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPU cores, torch "
        f"{torch.__version__}; run started {started:%Y-%m-%d %H:%M} UTC; 1-minute load average {load_before:.2f} "
        f"before and {os.getloadavg()[0]:.2f} after the run (over about 1 per core means other processes shared the "
        "cores and the numbers are upper bounds; with more runnable threads than cores, 2 torch threads can be "
        "slower than 1, as OpenMP threads wait on each other).",
        "",
        header,
        "|" + "---|" * (4 + len(args.threads)),
    ]
    for variant, params, config, medians in rows:
        grid = 448 // config["patch_size"][0]
        cells = [f"{m:.2f} ({lo:.2f}-{hi:.2f}, {n})" for m, lo, hi, n in (medians[t] for t in args.threads)]
        lines.append(f"| {NAMES[variant]} | {params:.1f} | {config['patch_size'][0]} | {grid}x{grid} | "
                     + " | ".join(cells) + " |")
    lines += [
        "",
        "The issue's bar for an interactive model is 0.15 s per click at 854x480; the default FocalClick-Lite0 "
        "takes 0.035 s ([click_latency.md](click_latency.md)).",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[6:]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
