"""What each later NTClick click does on thin structures: where it lands and how much of the error near it it fixes.

Replays the NTClick protocol (tolerant clicks in the ground truth's fine-structure band, seeded offsets) with the
shared evaluator (:func:`finecut.evaluation.loop.evaluate_sample`) on DRIVE's 20 *training* images (inside the field
of view; the test split is never touched) and, with ``--synthetic N``, on the held-out synthetic thin views of
``benchmarks/heldout_thin.py``. Every prediction is recorded. For each click from the second on it reports:

* where it landed: the FBU class the engine's final labels give the click's pixel (``Prediction.state["click_label"]``)
  and whether the HRR decided that pixel (``click_by_hrr``);
* how many mask pixels the click changed within ``--radius`` px of it, and how many of the errors within that radius
  (against the ground truth, inside the field of view) it fixed;
* how often it lands within ``--repeat`` px of an earlier click (the simulated user returning to an error it already
  marked: the click before did not fix it).

A diagnosis of why DRIVE's mIoU barely moves after the first click, not a score; no model is chosen on it.

    python benchmarks/ntclick_click_response.py --models ntclick --synthetic 48 --bank runs/object-bank-512-v3-drive.npz
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import finecut
from finecut.datasets import open_dataset
from finecut.datasets.base import Sample
from finecut.evaluation.config import EvalConfig
from finecut.evaluation.loop import click_gt, evaluate_sample
from finecut.predictor import Prediction, Predictor
from finecut.prompts import disks_of_kind
from finecut.registry import parse_model_spec
from finecut.training.objects import ObjectBank
from finecut.training.validation import held_out_thin_samples



class RecordingPredictor:
    """A :class:`Predictor` that keeps every (clicks, prediction) pair of the current image."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.model = predictor.model
        self.steps: list[tuple[list[Any], Prediction]] = []

    def set_image(self, image: np.ndarray) -> None:
        self.steps = []
        self.predictor.set_image(image)

    def predict(self, **kwargs: Any) -> Prediction:
        out = self.predictor.predict(**kwargs)
        self.steps.append((list(kwargs.get("clicks") or []), out))
        return out


@dataclass
class ClickStats:
    """Per-click measurements of one image set, clicks 2..N of every sample."""

    labels: Counter = field(default_factory=Counter)
    by_hrr: int = 0
    changed: list[int] = field(default_factory=list)
    errors_before: int = 0
    errors_after: int = 0
    repeats: int = 0
    iou_gain: list[float] = field(default_factory=list)

    @property
    def clicks(self) -> int:
        return len(self.changed)


def measure(recorder: RecordingPredictor, sample: Sample, ious: list[float], radius: float, repeat: float,
            stats: ClickStats) -> None:
    """Add one replayed sample's clicks 2..N to ``stats``."""
    gt = click_gt(np.asarray(sample.gt), sample.region)
    valid = gt >= 0
    for k in range(1, len(recorder.steps)):
        clicks, out = recorder.steps[k]
        prev = recorder.steps[k - 1][1].mask
        click = clicks[-1]
        near = disks_of_kind([click], click.kind, gt.shape, radius)
        stats.labels[out.state.get("click_label")] += 1
        stats.by_hrr += bool(out.state.get("click_by_hrr"))
        stats.changed.append(int(((prev != out.mask) & near).sum()))
        stats.errors_before += int(((prev != (gt > 0)) & valid & near).sum())
        stats.errors_after += int(((out.mask != (gt > 0)) & valid & near).sum())
        stats.repeats += any((c.x - click.x) ** 2 + (c.y - click.y) ** 2 <= repeat * repeat for c in clicks[:-1])
        stats.iou_gain.append(100.0 * (ious[k] - ious[k - 1]))


def row(spec: str, set_name: str, s: ClickStats) -> str:
    n = max(s.clicks, 1)
    share = {name: 100.0 * s.labels.get(name, 0) / n for name in ("uncertain", "background", "foreground")}
    fixed = 100.0 * (1 - s.errors_after / s.errors_before) if s.errors_before else 0.0
    changed = float(np.median(s.changed)) if s.changed else 0.0
    return (f"| {spec} | {set_name} | {s.clicks} | {share['uncertain']:.0f} | {share['background']:.0f} | "
            f"{share['foreground']:.0f} | {100.0 * s.by_hrr / n:.0f} | {changed:.0f} | "
            f"{100.0 * sum(c == 0 for c in s.changed) / n:.0f} | {fixed:.1f} | {100.0 * s.repeats / n:.0f} | "
            f"{np.mean(s.iou_gain) if s.iou_gain else 0:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["ntclick"])
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--radius", type=float, default=20.0, help="px around a click where changes are counted")
    parser.add_argument("--repeat", type=float, default=10.0, help="a click this close to an earlier one repeats it")
    parser.add_argument("--synthetic", type=int, default=0, help="also N held-out synthetic thin views (needs --bank)")
    parser.add_argument("--bank", default=None, help="object bank .npz written by finecut train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None, help="folder holding DRIVE (default: the datasets' data root)")
    parser.add_argument("--out", default="results/ntclick_click_response.md")
    args = parser.parse_args()
    if args.synthetic and not args.bank:
        parser.error("--synthetic needs --bank")
    torch.set_num_threads(1)
    drive = open_dataset("DRIVE", root=args.data_root, split="training")
    sets: dict[str, list[Sample]] = {"DRIVE training": [drive[i] for i in range(len(drive))]}
    if args.synthetic:
        bank = ObjectBank.load(args.bank)
        sets["synthetic, held out"] = held_out_thin_samples(bank, args.synthetic, 384, 0.04, args.seed)
    config = EvalConfig(max_clicks=args.clicks, protocol="ntclick", seed=args.seed)
    rows = []
    for spec in args.models:
        name, options = parse_model_spec(spec)
        recorder = RecordingPredictor(Predictor(finecut.load_model(name, threads=1, **options)))
        for set_name, samples in sets.items():
            stats = ClickStats()
            for i, sample in enumerate(samples):
                result = evaluate_sample(recorder, sample, config, index=i)  # type: ignore[arg-type]
                measure(recorder, sample, result.ious, args.radius, args.repeat, stats)
            rows.append(row(spec, set_name, stats))
            print(rows[-1], flush=True)
    lines = [
        "# What each later NTClick click does on thin structures",
        "",
        f"`python benchmarks/ntclick_click_response.py --models {' '.join(args.models)}"
        f"{f' --synthetic {args.synthetic} --bank {args.bank}' if args.synthetic else ''}` — the NTClick protocol "
        f"(tolerant clicks in the ground truth's fine-structure band, seed {args.seed}), {args.clicks} clicks on each "
        "of DRIVE's 20 training images (inside the field of view; the NTClick networks trained on them)"
        + (f" and {args.synthetic} held-out synthetic thin views" if args.synthetic else "")
        + f". Clicks 2–{args.clicks} of every sample: where each landed (the FBU class of its pixel in the engine's "
        f"final labels; whether the HRR decided it), the mask pixels it changed within {args.radius:g} px, the share "
        f"of the errors within {args.radius:g} px it fixed (summed over clicks), how often it came within "
        f"{args.repeat:g} px of an earlier click, and the mean IoU gain it brought. A diagnosis, not a score.",
        "",
        "| model | images | clicks | on uncertain % | on background % | on foreground % | HRR-decided % | "
        "changed px (median) | changed nothing % | errors fixed % | repeats % | IoU gain (points) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
