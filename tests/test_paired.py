"""Paired comparison of evaluation runs (finecut.evaluation.paired)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finecut.errors import FinecutError
from finecut.evaluation.paired import paired_difference, paired_table, read_samples


def _rows(nocs: list[int | None], first_ious: list[float]) -> dict[str, dict]:
    return {f"s{i}": {"name": f"s{i}", "noc": {"90": n}, "ious": [iou]}
            for i, (n, iou) in enumerate(zip(nocs, first_ious))}


def test_paired_difference_counts_wins_with_the_metrics_direction() -> None:
    base = _rows([3, 5, 20, 2], [0.5, 0.6, 0.7, 0.8])
    other = _rows([2, 5, 10, 4], [0.6, 0.6, 0.6, 0.9])
    noc = paired_difference(base, other, "NoC@90")
    # differences -1, 0, -10 (never reached is recorded as 20), +2: mean -2.25
    assert noc.samples == 4 and noc.mean == pytest.approx(-2.25)
    assert (noc.other_better, noc.base_better) == (2, 1)
    diffs = [-1, 0, -10, 2]
    sd = (sum((d + 2.25) ** 2 for d in diffs) / 3) ** 0.5
    assert noc.stderr == pytest.approx(sd / 2)
    first = paired_difference(base, other, "IoU@1")  # in points; higher is better
    assert first.mean == pytest.approx(2.5) and (first.other_better, first.base_better) == (2, 1)
    with pytest.raises(FinecutError, match="unknown"):  # a run that stopped early below 90 %
        paired_difference(_rows([None, 5], [0.5, 0.5]), other, "NoC@90")
    with pytest.raises(FinecutError, match="unknown metric"):
        paired_difference(base, other, "Dice@1")
    with pytest.raises(FinecutError, match="share 0"):
        paired_difference(base, {"x": base["s0"]}, "NoC@90")


def test_read_samples_and_table(tmp_path: Path) -> None:
    for name, nocs in (("a", [3, 4]), ("b", [2, 4])):
        (tmp_path / name).mkdir()
        rows = _rows(nocs, [0.5, 0.5])
        (tmp_path / name / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows.values()))
    table = paired_table("a", [("b", read_samples(tmp_path / "b"))], read_samples(tmp_path / "a"), ["NoC@90"])
    assert "| `b` | NoC@90 | 2 | -0.500 | 0.500 | 1 | 0 |" in table
    with pytest.raises(FinecutError, match="samples.jsonl"):
        read_samples(tmp_path)
