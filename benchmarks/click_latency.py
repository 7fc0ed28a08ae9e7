"""Per-click latency of engines on DAVIS-345 images (854x480) and on 4000x3000 photos, side by side in one run.

Every engine sets each image once (timed separately), then follows the standard protocol's simulated clicks for
``--clicks`` steps on its own predictions; every ``Predictor.predict`` call is timed, as wall time and as the
process's CPU time (on a busy machine the CPU time is the steadier estimate of an idle machine's wall time). The
engines take turns click by click (the order rotating), so a change in the machine's load touches all of them alike.
The load average is recorded before and after.

``--large N`` repeats the run on the first N samples resized to 4000x3000 (image bicubic, ground truth nearest), and
``--breakdown`` times the stages of a click (network calls, RoIAlign, the crop's resize, prompt maps, Focus Crop,
sigmoid, click honouring; the rest is the full-resolution copies, paste and thresholds) — where the time goes.
``--scribbles`` follows the scribble protocol's simulated scribbles instead of clicks (each step one more scribble;
a "click" in the tables is then a scribble step). ``--boxes`` times one step per sample instead: the box protocol's
box (the ground truth's bounding box, :func:`finecut.evaluation.perturb.gt_box`).
Prints the tables and writes them to ``results/click_latency.md``.

    python benchmarks/click_latency.py --models default default:runtime=onnx grabcut --samples 20 --clicks 10 \\
        --large 3 --breakdown
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

import finecut
from finecut.datasets import default_data_root, open_dataset
from finecut.evaluation import next_click, next_scribble
from finecut.evaluation.perturb import gt_box
from finecut.evaluation.runinfo import cpu_name

ROOT = Path(__file__).resolve().parents[1]
LARGE = (3000, 4000)  # height, width


@dataclass
class Stats:
    wall: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)  # each object's first click (also in ``wall``)
    cpu: list[float] = field(default_factory=list)
    set_image: list[float] = field(default_factory=list)
    noc90: list[int] = field(default_factory=list)
    final_iou: list[float] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def row(self) -> dict[str, float]:
        wall, cpu = np.asarray(self.wall), np.asarray(self.cpu)
        return {"clicks": len(wall), "median": float(np.median(wall)), "p95": float(np.percentile(wall, 95)),
                "mean": float(wall.mean()), "cpu_median": float(np.median(cpu)),
                "first_median": float(np.median(self.first)),
                "set_image": float(np.median(self.set_image)), "noc90": float(np.mean(self.noc90)),
                "iou": float(np.mean(self.final_iou))}


class StageTimer:
    """Wall-clock timers around the stages of a learned engine's click: the engines' own attributes (networks,
    RoIAlign, Focus Crop) and functions of the pipeline modules, the latter shared by every engine and charged to
    :attr:`current`. Everything else a click does is 'other'."""

    def __init__(self) -> None:
        self.current: Stats | None = None
        self.restore: list[tuple[Any, str, Any]] = []
        from finecut import predictor
        from finecut.pipelines import focalclick, skeleton

        self._wrap(focalclick, "crop_image", "crop resize + normalise", None)
        self._wrap(skeleton, "crop_prompt_maps", "prompt maps (previous mask resize, disks)", None)
        self._wrap(focalclick, "_sigmoid", "sigmoid over the crop", None)
        self._wrap(focalclick, "resize", "logits / probabilities resize to the crop", None)
        self._wrap(predictor, "honour_clicks", "click honouring", None)

    def add_engine(self, engine: Any, stats: Stats) -> None:
        for name in getattr(engine, "networks", ()):
            if getattr(engine, name, None) is not None:
                self._wrap(engine, name, f"network: {name}", stats)
        if hasattr(engine, "roi_align"):
            self._wrap(engine, "roi_align", "RoIAlign (refiner inputs)", stats)
        if hasattr(engine, "_focus_box"):
            self._wrap(engine, "_focus_box", "Focus Crop (changed component)", stats)

    def _wrap(self, owner: Any, name: str, label: str, stats: Stats | None) -> None:
        self.restore.append((owner, name, vars(owner).get(name)))  # None: a class attribute, seen through
        setattr(owner, name, _Timed(getattr(owner, name), label, self, stats))

    def close(self) -> None:
        for owner, name, original in reversed(self.restore):
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


class _Timed:
    """A callable that times another one and passes attribute reads through (a network's ``config``)."""

    def __init__(self, original: Any, label: str, timer: StageTimer, stats: Stats | None) -> None:
        self.original, self.label, self.timer, self.stats = original, label, timer, stats

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.original(*args, **kwargs)
        finally:
            target = self.stats or self.timer.current
            if target is not None:
                target.stages[self.label] += time.perf_counter() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


def iou(gt: np.ndarray, mask: np.ndarray) -> float:
    valid = gt >= 0
    obj = gt == 1
    union = np.logical_or(obj, mask)[valid].sum()
    return float(np.logical_and(obj, mask)[valid].sum() / union) if union else 1.0


def measure(models: list[str], samples: list, clicks: int, threshold: float,
            breakdown: bool, protocol: str = "standard") -> dict[str, Stats]:
    """Every model on every sample, taking turns click by click (``protocol`` "scribble": scribble by scribble, a
    sample stopping early when the simulated user finds no error left to scribble on; "box": the box step, ``clicks``
    being 1)."""
    predictors = {m: finecut.Predictor(finecut.load_model(m)) for m in models}
    stats = {m: Stats() for m in models}
    timer = StageTimer() if breakdown else None
    for m in models if timer else ():
        timer.add_engine(predictors[m].model, stats[m])
    try:
        for index, sample in enumerate(samples):
            state = {}
            for m, predictor in predictors.items():
                start = time.perf_counter()
                predictor.set_image(sample.image)
                stats[m].set_image.append(time.perf_counter() - start)
                state[m] = {"pred": np.zeros(sample.gt.shape, bool), "history": [], "previous": None, "noc": None}
            for step in range(clicks):
                order = models[(index + step) % len(models):] + models[:(index + step) % len(models)]
                for m in order:
                    s = state[m]
                    if protocol == "box":
                        prompts = {"box": gt_box(sample.gt)}
                    elif protocol == "scribble":
                        stroke = next_scribble(sample.gt, s["pred"], s["history"])
                        if stroke is None:
                            continue
                        s["history"].append(stroke)
                        prompts = {"scribbles": s["history"]}
                    else:
                        s["history"].append(next_click(sample.gt, s["pred"], s["history"]))
                        prompts = {"clicks": s["history"]}
                    if timer:
                        timer.current = stats[m]
                    start, cpu = time.perf_counter(), time.process_time()
                    s["previous"] = predictors[m].predict(**prompts, previous=s["previous"], threshold=threshold)
                    stats[m].wall.append(time.perf_counter() - start)
                    if step == 0:
                        stats[m].first.append(stats[m].wall[-1])
                    stats[m].cpu.append(time.process_time() - cpu)
                    s["pred"] = s["previous"].mask
                    if s["noc"] is None and iou(sample.gt, s["pred"]) >= 0.9:
                        s["noc"] = step + 1
            for m in models:
                stats[m].noc90.append(state[m]["noc"] or clicks)
                stats[m].final_iou.append(iou(sample.gt, state[m]["pred"]))
    finally:
        if timer:
            timer.close()
    return stats


def enlarge(sample: Any) -> Any:
    h, w = LARGE
    image = cv2.resize(sample.image, (w, h), interpolation=cv2.INTER_CUBIC)
    gt = cv2.resize(sample.gt.astype(np.int16), (w, h), interpolation=cv2.INTER_NEAREST).astype(sample.gt.dtype)
    return type("Sample", (), {"image": image, "gt": gt, "name": sample.name})()


def table(stats: dict[str, Stats], clicks: int) -> list[str]:
    lines = [("| engine | clicks | median s/click | p95 s/click | mean s/click | CPU median s/click "
              f"| first click median s | set_image median s | NoC@90 (max {clicks}) | IoU after {clicks} |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for model, s in stats.items():
        r = s.row()
        lines.append(f"| {model} | {r['clicks']} | {r['median']:.4f} | {r['p95']:.4f} | {r['mean']:.4f} | "
                     f"{r['cpu_median']:.4f} | {r['first_median']:.4f} | {r['set_image']:.4f} | {r['noc90']:.2f} | "
                     f"{r['iou']:.4f} |")
    return lines


def breakdown_table(stats: dict[str, Stats]) -> list[str]:
    learned = {m: s for m, s in stats.items() if s.stages}
    if not learned:
        return []
    labels = sorted({label for s in learned.values() for label in s.stages},
                    key=lambda lb: -max(s.stages.get(lb, 0.0) for s in learned.values()))
    lines = ["| stage (ms per click, wall) | " + " | ".join(learned) + " |", "|---|" + "---|" * len(learned)]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(f"{1000 * s.stages.get(label, 0.0) / len(s.wall):.1f}"
                                                for s in learned.values()) + " |")
    other = [1000 * (sum(s.wall) - sum(s.stages.values())) / len(s.wall) for s in learned.values()]
    lines.append("| other (full-resolution copies, paste, thresholds, zoom-in box) | "
                 + " | ".join(f"{v:.1f}" for v in other) + " |")
    lines.append("| **total** | " + " | ".join(f"{1000 * np.mean(s.wall):.1f}" for s in learned.values()) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["default", "default:runtime=onnx", "grabcut"])
    parser.add_argument("--samples", type=int, default=20, help="first N DAVIS-345 samples")
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--large", type=int, default=0, metavar="N",
                        help="also the first N samples resized to 4000x3000 (learned models only)")
    parser.add_argument("--large-models", nargs="+", default=None, metavar="MODEL",
                        help="the models of the 4000x3000 run (default: the learned ones of --models)")
    parser.add_argument("--breakdown", action="store_true", help="time the stages of each click")
    steps = parser.add_mutually_exclusive_group()
    steps.add_argument("--scribbles", action="store_const", dest="protocol", const="scribble", default="standard",
                       help="simulated scribbles (the scribble protocol's) instead of clicks")
    steps.add_argument("--boxes", action="store_const", dest="protocol", const="box",
                       help="one step per sample: the ground truth's bounding box (the box protocol's)")
    parser.add_argument("--threshold", type=float, default=0.49)
    parser.add_argument("--threads", type=int, default=1, help="inference threads (torch and onnxruntime)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default=str(ROOT / "results" / "click_latency.md"))
    args = parser.parse_args()
    if args.protocol == "box":
        args.clicks = 1
    os.environ["FINECUT_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    root = Path(args.data_root) if args.data_root else default_data_root()
    dataset = open_dataset("DAVIS", root=root)
    samples = [dataset[i] for i in range(min(args.samples, len(dataset)))]
    load_before = os.getloadavg()
    started = datetime.now(timezone.utc)
    stats = measure(args.models, samples, args.clicks, args.threshold, args.breakdown, args.protocol)
    large_stats: dict[str, Stats] = {}
    if args.large:
        learned = args.large_models or [m for m in args.models
                                        if m.split(":")[0] not in ("grabcut", "random_walker", "geodesic")]
        large_stats = measure(learned, [enlarge(s) for s in samples[:args.large]], args.clicks, args.threshold,
                              args.breakdown, args.protocol)
    load_after = os.getloadavg()
    command = (f"python benchmarks/click_latency.py --models {' '.join(args.models)} --samples {args.samples} "
               f"--clicks {args.clicks} --threads {args.threads}" + (f" --large {args.large}" if args.large else "")
               + (f" --large-models {' '.join(args.large_models)}" if args.large_models else "")
               + (" --breakdown" if args.breakdown else "")
               + {"standard": "", "scribble": " --scribbles", "box": " --boxes"}[args.protocol])
    what = ("the box protocol's box once each (the ground truth's bounding box, on an empty mask)"
            if args.protocol == "box" else
            f"the {args.protocol} protocol's first {args.clicks} simulated "
            f"{'scribbles' if args.protocol == 'scribble' else 'clicks'} each on the engine's own predictions")
    lines = [
        "# Per-click latency on DAVIS-345 images (854x480) and 4000x3000 photos",
        "",
        f"Produced by `{command}`: the first {len(samples)} DAVIS-345 samples, {what} (a 'click' below is one such "
        "step), every `Predictor.predict` call timed "
        "(wall and process CPU time; `set_image` reported separately). The engines take turns click by click, the "
        "order rotating, so load changes touch them alike. NoC@90 counts clicks until IoU >= 0.9 (the cap when never).",
        "",
        f"Machine: {platform.platform()}, {cpu_name()}, Python {platform.python_version()}, {os.cpu_count()} CPU "
        f"cores, torch "
        f"{torch.__version__}, onnxruntime {_ort_version()}, {args.threads} inference thread(s); "
        f"{started:%Y-%m-%d %H:%M} UTC; load average (1, 5, 15 min) before the run "
        f"{', '.join(f'{v:.2f}' for v in load_before)}, after {', '.join(f'{v:.2f}' for v in load_after)}.",
        "",
        "## DAVIS-345, 854x480",
        "",
        *table(stats, args.clicks),
    ]
    if args.breakdown:
        lines += ["", "Where a click's time goes (DAVIS, wall ms per click, mean):", "", *breakdown_table(stats)]
    if large_stats:
        lines += ["", f"## 4000x3000 (the first {args.large} samples resized: image bicubic, ground truth nearest)", "",
                  *table(large_stats, args.clicks)]
        if args.breakdown:
            lines += ["", "Where a click's time goes (4000x3000, wall ms per click, mean):", "",
                      *breakdown_table(large_stats)]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


def _ort_version() -> str:
    try:
        import onnxruntime
    except ImportError:
        return "not installed"
    return onnxruntime.__version__


if __name__ == "__main__":
    main()
