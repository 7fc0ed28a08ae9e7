"""Standard-protocol clicks on held-out objects of the *training* sets: model selection without touching a benchmark.

The object bank that ``finecut train`` builds (``runs/object-bank-512*.npz``) has a validation split (the same
name-hashed split the trainers leave out, ``val_fraction`` 0.04). This draws ``--objects`` of its photo objects
(DRIVE's excluded), runs the shared evaluator's standard click loop (:func:`finecut.evaluation.loop.evaluate_sample`)
for ``--clicks`` clicks with each model, and reports mIoU after each click.

    python benchmarks/heldout_clicks.py --bank runs/object-bank-512-drive.npz --models ntclick default
    # writes results/heldout_clicks.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import finecut
from finecut.evaluation.config import EvalConfig
from finecut.evaluation.loop import mean_iou_curve
from finecut.predictor import Predictor
from finecut.registry import parse_model_spec
from finecut.training.objects import ObjectBank
from finecut.training.validation import BankSamples, validation_indices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", required=True, help="object bank .npz written by finecut train")
    parser.add_argument("--models", nargs="+", default=["ntclick"])
    parser.add_argument("--objects", type=int, default=150)
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--val-fraction", type=float, default=0.04)
    parser.add_argument("--exclude-source", nargs="*", default=["DRIVE"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/heldout_clicks.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bank = ObjectBank.load(args.bank)
    val = validation_indices(bank, args.val_fraction, args.exclude_source)
    picked = np.random.default_rng(args.seed).choice(val, size=min(args.objects, len(val)), replace=False)
    samples = BankSamples(bank, picked, "heldout")
    config = EvalConfig(max_clicks=args.clicks)
    rows = []
    for model in args.models:
        name, options = parse_model_spec(model)  # NAME[:KEY=VALUE,...]: inference options
        miou = mean_iou_curve(Predictor(finecut.load_model(name, threads=1, **options)), samples, config)
        rows.append(f"| {model} | " + " | ".join(f"{v:.2f}" for v in miou) + " |")
        print(rows[-1], flush=True)
    sources = sorted({bank.sources[bank.objects[int(i)].source] for i in picked})
    lines = [
        "# Held-out training-set objects, standard clicks",
        "",
        f"`python benchmarks/heldout_clicks.py --bank {args.bank} --models {' '.join(args.models)}` — {len(picked)} "
        f"objects of the bank's validation split ({', '.join(sources)}; seed {args.seed}), never trained on; mIoU (%) "
        "after each click.",
        "",
        "| model | " + " | ".join(f"@{k}" for k in range(1, args.clicks + 1)) + " |",
        "|---|" + "---|" * args.clicks,
        *rows,
    ]
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
