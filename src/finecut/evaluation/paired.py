"""Paired comparison of two evaluation runs on the same samples: per-sample differences, their mean and standard
error, and how many samples each run wins.

Held-out sets here are small (96 objects for SimpleClick's choices), so a one-click move in a pooled NoC can be
chance; the standard error of the per-sample differences says how much of a margin is. Pure functions over the
``samples.jsonl`` rows an evaluation writes (``name``, ``ious``, ``noc``)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from finecut.errors import FinecutError


@dataclass(frozen=True)
class PairedDifference:
    """``other − base`` over the samples both runs scored: mean, its standard error, and the wins of each side."""

    metric: str
    samples: int
    mean: float
    stderr: float
    other_better: int
    base_better: int


def read_samples(run_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """A run's per-sample rows by sample name (its ``samples.jsonl``)."""
    path = Path(run_dir) / "samples.jsonl"
    if not path.is_file():
        raise FinecutError(f"{run_dir}: no samples.jsonl (not an evaluation run folder)")
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[str(row["name"])] = row
    return rows


def _value(row: dict[str, Any], metric: str) -> float:
    kind, _, arg = metric.partition("@")
    if kind == "NoC":  # NoC85, NoC90: a sample that never reaches it is recorded as the click limit already
        value = (row.get("noc") or {}).get(arg)
        if value is None:  # the run stopped early below the threshold: unknown, as summarize() treats it
            raise FinecutError(f"{row.get('name')}: NoC@{arg} unknown (the run stopped early below it)")
        return float(value)
    if kind == "IoU":  # IoU@k: the IoU after click k, in points
        return 100.0 * float(row["ious"][int(arg) - 1])
    raise FinecutError(f"unknown metric {metric!r} (NoC@85, NoC@90, IoU@1, ...)")


def paired_difference(base: dict[str, dict[str, Any]], other: dict[str, dict[str, Any]],
                      metric: str) -> PairedDifference:
    """``metric`` (``NoC@90``, ``IoU@1``, ...) of ``other`` minus ``base`` on every sample both hold.

    Lower is better for NoC, higher for IoU; the win counts follow that."""
    names = sorted(set(base) & set(other))
    if len(names) < 2:
        raise FinecutError(f"the runs share {len(names)} sample(s); a paired comparison needs two or more")
    diffs = [_value(other[n], metric) - _value(base[n], metric) for n in names]
    mean = sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    lower_better = metric.startswith("NoC")
    better = sum(1 for d in diffs if (d < 0 if lower_better else d > 0))
    worse = sum(1 for d in diffs if (d > 0 if lower_better else d < 0))
    return PairedDifference(metric, len(names), mean, math.sqrt(var / len(diffs)), better, worse)


def paired_table(base_label: str, runs: Sequence[tuple[str, dict[str, dict[str, Any]]]],
                 base: dict[str, dict[str, Any]], metrics: Sequence[str] = ("NoC@85", "NoC@90", "IoU@1")) -> str:
    """A Markdown table: one row per run and metric, its paired difference against ``base``."""
    lines = [f"| run | metric | samples | mean − `{base_label}` | std. error | run better | `{base_label}` better |",
             "|---|---|---|---|---|---|---|"]
    for label, rows in runs:
        for metric in metrics:
            d = paired_difference(base, rows, metric)
            lines.append(f"| `{label}` | {metric} | {d.samples} | {d.mean:+.3f} | {d.stderr:.3f} | {d.other_better} | "
                         f"{d.base_better} |")
    return "\n".join(lines) + "\n"
