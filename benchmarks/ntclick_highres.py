"""The whole NTClick engine on large photos: ``set_image`` + 5 clicks at 1024², 2048² and 4096², per-click wall time
and the process's peak memory — the end-to-end counterpart of ``benchmarks/hrr_memory.py`` (which times the HRR
forward alone).

Each size runs in a fresh child process (``--child``) so its peak resident set size (``ru_maxrss``) is its own. The
photo is a DAVIS-345 frame and its ground truth resized to the square size (image bicubic, ground truth nearest);
the clicks are the standard protocol's (``finecut.evaluation.next_click``) on the engine's own predictions. Every
click reports its wall time, the HRR's share, how many pixels the HRR processed and at what scale (``hrr_pixels``,
``hrr_scale`` in the engine state), and the IoU reached. Writes ``results/ntclick_highres.md``.

    python benchmarks/ntclick_highres.py                    # ntclick, sizes 1024 2048 4096, 5 clicks
    python benchmarks/ntclick_highres.py --model ntclick:hrr_max_pixels=4194304 --sizes 4096
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3


def run_child(args: argparse.Namespace) -> None:
    import cv2
    import numpy as np
    import torch

    import finecut
    from finecut.datasets import default_data_root, open_dataset
    from finecut.evaluation import next_click

    sample = open_dataset("DAVIS", default_data_root())[args.sample]
    size = args.size
    image = cv2.resize(sample.image, (size, size), interpolation=cv2.INTER_CUBIC)
    gt = cv2.resize(sample.gt.astype(np.int16), (size, size), interpolation=cv2.INTER_NEAREST)
    model = finecut.load_model(args.model, threads=args.threads)
    predictor = finecut.Predictor(model)
    hrr_seconds = [0.0]

    class TimedHRR:
        """The engine's HRR, timed; attribute reads (its ``config``) pass through."""

        def __init__(self, hrr: object) -> None:
            self.hrr = hrr

        def __call__(self, *a: object, **k: object) -> object:
            start = time.perf_counter()
            try:
                return self.hrr(*a, **k)  # type: ignore[operator]
            finally:
                hrr_seconds[0] += time.perf_counter() - start

        def __getattr__(self, name: str) -> object:
            return getattr(self.hrr, name)

    if getattr(model, "hrr", None) is not None:
        model.hrr = TimedHRR(model.hrr)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    predictor.set_image(image)
    set_image = time.perf_counter() - start
    pred = np.zeros(gt.shape, bool)
    history: list = []
    previous = None
    clicks = []
    valid, obj = gt >= 0, gt == 1
    with torch.inference_mode():
        for _ in range(args.clicks):
            history.append(next_click(gt, pred, history))
            hrr_seconds[0] = 0.0
            start = time.perf_counter()
            previous = predictor.predict(clicks=history, previous=previous)
            wall = time.perf_counter() - start
            pred = previous.mask
            union = np.logical_or(obj, pred)[valid].sum()
            state = previous.state
            clicks.append({"wall": wall, "hrr": hrr_seconds[0], "iou": float(np.logical_and(obj, pred)[valid].sum()
                                                                           / max(union, 1)),
                           "hrr_pixels": int(state.get("hrr_pixels", 0) or 0),
                           "hrr_scale": state.get("hrr_scale"), "tiles": state.get("hrr_tiles")})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"size": size, "set_image": set_image, "clicks": clicks, "peak": peak, "base": base}))


def measure(size: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", "--size", str(size), "--model", args.model, "--clicks",
           str(args.clicks), "--sample", str(args.sample), "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"size": size, "error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(results: list[dict], args: argparse.Namespace, load: tuple[tuple[float, ...], tuple[float, ...]]) -> str:
    lines = [
        "# NTClick end to end on large photos: per-click time and peak memory", "",
        f"Produced by `python benchmarks/ntclick_highres.py --model {args.model} --sizes "
        f"{' '.join(map(str, args.sizes))} --clicks {args.clicks} --sample {args.sample} --threads {args.threads}`: "
        f"DAVIS-345 sample {args.sample} resized to each square size (image bicubic, ground truth nearest), "
        "`set_image` and then the standard protocol's clicks on the engine's own predictions, each size in a fresh "
        "process (peak RSS is that process's `ru_maxrss`: Python, torch, weights, image and every click).", "",
        f"Machine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPU cores, "
        f"{args.threads} inference thread(s); {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; load average "
        f"before {', '.join(f'{v:.2f}' for v in load[0])}, after {', '.join(f'{v:.2f}' for v in load[1])}.", "",
        "| size | set_image s | click s (each) | median click s | max click s | HRR s (each) | HRR pixels (each) "
        "| HRR scale (each) | IoU after each click | peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['size']}² | failed: {r['error']} | | | | | | | | |")
            continue
        c = r["clicks"]
        walls = sorted(x["wall"] for x in c)
        scales = ", ".join("—" if x["hrr_scale"] is None else f"{x['hrr_scale']:.2f}" for x in c)
        def each(key: str, fmt: str = "{:.2f}") -> str:
            return ", ".join(fmt.format(x[key]) for x in c)

        pixels = ", ".join(f"{x['hrr_pixels'] / 1e6:.2f}M" for x in c)
        lines.append(
            f"| {r['size']}² | {r['set_image']:.2f} | {each('wall')} | {walls[len(walls) // 2]:.2f} | "
            f"{walls[-1]:.2f} | {each('hrr')} | {pixels} | {scales} | {each('iou', '{:.3f}')} | "
            f"{r['peak'] / GIB:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ntclick")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--sample", type=int, default=0, help="DAVIS-345 sample index")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(ROOT / "results" / "ntclick_highres.md"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=1024, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args)
        return 0
    before = os.getloadavg()
    results = [measure(size, args) for size in args.sizes]
    text = markdown(results, args, (before, os.getloadavg()))
    print(text)
    Path(args.output).write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
