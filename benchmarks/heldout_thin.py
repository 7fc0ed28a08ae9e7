"""Thin structures on held-out photos, both click protocols: model selection for fine structure without a benchmark.

Draws ``--samples`` synthetic thin structures (the training generator's vessel/crack trees, wires and kite strings,
:mod:`finecut.training.synthetic`) onto photos of the object bank's *validation* split — the name-hashed split every
trainer leaves out (``val_fraction`` 0.04) — so neither the photo nor the drawn structure was trained on. Each model
then gets ``--clicks`` clicks from the shared evaluator (:func:`finecut.evaluation.loop.evaluate_sample`) under the
standard protocol (precise clicks) and the NTClick protocol (tolerant clicks in the ground truth's uncertain band,
seeded offsets). A model is a name or checkpoint path, optionally with pipeline options:
``ntclick:negative_rule=paper``. Unless ``--no-drive``, the same runs on DRIVE's 20 *training* images (real vessels,
inside the field of view) — images the NTClick networks trained on, so a check on real thin structures, not a
held-out score; DRIVE's test split is never touched here.

    python benchmarks/heldout_thin.py --bank runs/object-bank-512-drive.npz \\
        --models ntclick ntclick:negative_rule=paper default     # writes results/heldout_thin.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import finecut
from finecut.datasets import open_dataset
from finecut.evaluation.config import EvalConfig
from finecut.evaluation.loop import mean_iou_curve
from finecut.predictor import Predictor
from finecut.registry import parse_model_spec
from finecut.training.objects import ObjectBank
from finecut.training.validation import THIN_KIND_WEIGHTS, held_out_thin_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", required=True, help="object bank .npz written by finecut train")
    parser.add_argument("--models", nargs="+", default=["ntclick"])
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--val-fraction", type=float, default=0.04)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-drive", action="store_true", help="skip DRIVE's training images")
    parser.add_argument("--kinds", nargs="+", default=None, metavar="KIND",
                        help="synthetic kinds, equally weighted (e.g. crack: surface cracks as in CrackForest; "
                             "default vessels 50 %%, wires 30 %%, string 20 %%)")
    parser.add_argument("--protocols", nargs="+", choices=("standard", "ntclick"), default=["standard", "ntclick"],
                        help="click protocols to run (default: both)")
    parser.add_argument("--data-root", default=None, help="folder holding DRIVE (default: the datasets' data root)")
    parser.add_argument("--out", default="results/heldout_thin.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bank = ObjectBank.load(args.bank)
    kinds = {k: 1.0 / len(args.kinds) for k in args.kinds} if args.kinds else THIN_KIND_WEIGHTS
    synthetic = held_out_thin_samples(bank, args.samples, args.size, args.val_fraction, args.seed, kinds)
    sets = {"synthetic, held out": synthetic}
    if not args.no_drive:
        drive = open_dataset("DRIVE", root=args.data_root, split="training")
        sets["DRIVE training (NTClick trained on it)"] = [drive[i] for i in range(len(drive))]
    shown = sorted({k for k in (1, 2, 3, 5, args.clicks) if k <= args.clicks})
    rows = []
    for spec in args.models:
        name, options = parse_model_spec(spec)
        predictor = Predictor(finecut.load_model(name, threads=1, **options))
        for set_name, samples in sets.items():
            for protocol in args.protocols:
                config = EvalConfig(max_clicks=args.clicks, protocol=protocol, seed=args.seed)
                miou = mean_iou_curve(predictor, samples, config)
                rows.append(f"| {spec} | {set_name} | {protocol} | "
                            + " | ".join(f"{miou[k - 1]:.2f}" for k in shown) + " |")
                print(rows[-1], flush=True)
    lines = [
        "# Thin structures, precise vs tolerant clicks: held-out synthetic views and DRIVE training images",
        "",
        f"`python benchmarks/heldout_thin.py --bank {args.bank} --models {' '.join(args.models)}"
        f"{'' if len(args.protocols) == 2 else ' --protocols ' + ' '.join(args.protocols)}"
        f"{' --kinds ' + ' '.join(args.kinds) if args.kinds else ''}` — "
        f"{args.samples} synthetic thin structures ({', '.join(f'{k} {v:.0%}' for k, v in kinds.items())}) "
        f"drawn at {args.size}² on photos of the object bank's validation split (never trained on; seed {args.seed})"
        + ("" if args.no_drive else "; and DRIVE's 20 training images, inside the field of view (the NTClick "
           "networks trained on them: a check on real vessels, not a held-out score)")
        + ". Standard protocol: precise clicks; NTClick protocol: tolerant clicks inside the ground truth's uncertain "
        "band (offset ≤ 10 px). mIoU (%) after k clicks.",
        "",
        "| model | images | protocol | " + " | ".join(f"@{k}" for k in shown) + " |",
        "|---|---|---|" + "---|" * len(shown),
        *rows,
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
