"""How far a second human gets on DRIVE: the test split's second manual annotation scored against the first.

DRIVE's test images have two manual vessel annotations; every finecut DRIVE row scores against the first, inside the
field of view. This script scores the second one the same way (:func:`finecut.evaluation.protocol.iou` on the
evaluator's ground truth: pixels outside the field of view ignored), so that the DRIVE mIoU rows of
``results/RESULTS.md`` can be read against human agreement. No model runs; nothing is tuned on it.

    python benchmarks/drive_second_observer.py            # writes results/drive_second_observer.md
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from finecut.datasets import open_dataset
from finecut.evaluation.loop import click_gt
from finecut.evaluation.protocol import iou


def second_observer_ious(data_root: str | None = None) -> list[tuple[str, float, float]]:
    """(image, IoU, Dice) of the second manual annotation against the first, inside the field of view."""
    first = open_dataset("DRIVE", root=data_root, split="test")
    second = open_dataset("DRIVE", root=data_root, split="test", annotator=2)
    rows = []
    for a, b in zip(first, second, strict=True):
        if a.name != b.name:
            raise ValueError(f"DRIVE annotations out of step: {a.name} vs {b.name}")
        gt = click_gt(np.asarray(a.gt), np.asarray(a.region, dtype=bool))
        other = np.asarray(b.gt) == 1
        score = iou(gt, other)
        rows.append((a.name, score, 2 * score / (1 + score)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None, help="folder holding DRIVE (default: the datasets' data root)")
    parser.add_argument("--out", default="results/drive_second_observer.md")
    args = parser.parse_args()
    rows = second_observer_ious(args.data_root)
    ious = np.array([r[1] for r in rows]) * 100
    dice = np.array([r[2] for r in rows]) * 100
    lines = [
        "# DRIVE: the second human annotation against the first",
        "",
        "DRIVE's 20 test images carry two manual vessel annotations. finecut's DRIVE rows score against the first, "
        "inside the field of view; here the second annotation is scored the same way "
        "(`python benchmarks/drive_second_observer.py`, no model involved). "
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
        "| | mean | median | min | max |",
        "|---|---|---|---|---|",
        f"| IoU (%) | {ious.mean():.2f} | {np.median(ious):.2f} | {ious.min():.2f} | {ious.max():.2f} |",
        f"| Dice (%) | {dice.mean():.2f} | {np.median(dice):.2f} | {dice.min():.2f} | {dice.max():.2f} |",
        "",
        "Per image (IoU %): " + ", ".join(f"{name} {100 * s:.1f}" for name, s, _ in rows) + ".",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines[6:10]))


if __name__ == "__main__":
    main()
