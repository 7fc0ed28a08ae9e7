"""Paired differences between evaluation runs on the same samples (a held-out set, usually): per metric, the mean
per-sample difference against a base run, its standard error, and how many samples each side wins.

    python scripts/paired_compare.py BASE_RUN OTHER_RUN [OTHER_RUN ...] [--out FILE.md]

Each RUN is a folder an evaluation wrote (``samples.jsonl``, ``summary.json``), e.g. one of
``results/heldout_whole/``. Used to read the margins of checkpoint choices (``results/heldout_simpleclick.md``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from finecut.evaluation.paired import paired_table, read_samples


def _label(run: Path) -> str:
    summary = run / "summary.json"
    return str(json.loads(summary.read_text()).get("model", run.name)) if summary.is_file() else run.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="the run the others are compared with")
    parser.add_argument("others", type=Path, nargs="+", help="runs on the same samples")
    parser.add_argument("--metrics", nargs="+", default=["NoC@85", "NoC@90", "IoU@1"])
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args()
    table = paired_table(_label(args.base), [(_label(run), read_samples(run)) for run in args.others],
                         read_samples(args.base), args.metrics)
    print(table, end="")
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
