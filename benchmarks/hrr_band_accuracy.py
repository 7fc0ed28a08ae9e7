"""How well NTClick's HRR resolves the uncertain band: on ground-truth FBU maps vs on the maps its ECP predicts.

Held-out views of the training sets only (the object bank's validation split, never a benchmark): ``--batches`` ECP
training batches (views, training-rule FBU labels, clicks drawn as in ECP training, no previous mask). For each view
the HRR gets either the ground-truth FBU map or the ECP's predicted one; reported per source: accuracy of
``HRR > 0.5`` inside the uncertain band next to the majority-class share of that band, and the object IoU of the final
mask (FBU foreground ∪ (uncertain ∧ HRR > 0.5)). A third row gives the ECP alone (uncertain pixels follow
P(fg) > P(bg), the engine's ``hrr=False``).

    python benchmarks/hrr_band_accuracy.py --bank runs/object-bank-512-drive.npz      # writes results/hrr_band_accuracy.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import finecut
from finecut import fbu
from finecut.training.augment import ViewConfig
from finecut.training.batch import BatchSampler
from finecut.training.clicks import ClickSimConfig
from finecut.training.config import TrainConfig
from finecut.training.ntclick import ecp_batch, ecp_maps
from finecut.training.objects import ObjectBank


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    return float((pred & gt).sum() / max((pred | gt).sum(), 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ntclick")
    parser.add_argument("--config", default="configs/ntclick-ecp.toml", help="ECP training config (views, clicks)")
    parser.add_argument("--bank", required=True, help="object bank of the training sets (its validation split is used)")
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", default="results/hrr_band_accuracy.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = TrainConfig.from_file(args.config)
    bank = ObjectBank.load(args.bank)
    _, val_idx = bank.split(cfg.data.val_fraction)
    rng = np.random.default_rng(args.seed)
    sampler = BatchSampler(bank, val_idx, {i: 1.0 for i in range(len(bank.sources))}, ViewConfig(size=cfg.size, hi_factor=1),
                           ClickSimConfig(), 0.0, rng, 0.0)
    engine = finecut.load_model(args.model)
    ecp, hrr = engine.ecp, engine.hrr
    rows: dict[str, dict[str, list[float]]] = {k: {"acc": [], "majority": [], "iou": []}
                                               for k in ("ground-truth FBU map + HRR", "ECP map + HRR", "ECP alone")}
    for _ in range(args.batches):
        images, labels, masks, clicks, previous = ecp_batch(bank, sampler, cfg, rng)
        with torch.no_grad():
            probs = torch.softmax(ecp(images, ecp_maps(clicks, torch.zeros_like(previous), cfg,
                                                       ecp.config.prompt_channels))["logits"], 1).numpy()
        predicted = probs.argmax(1)
        for name, maps in (("ground-truth FBU map + HRR", labels), ("ECP map + HRR", predicted)):
            onehot = torch.from_numpy(np.stack([fbu.labels_to_one_hot(m) for m in maps]))
            with torch.no_grad():
                hrr_probs = torch.sigmoid(hrr(images, onehot)["logits"])[:, 0].numpy()
            for lab, hp, gt in zip(maps, hrr_probs, masks.astype(bool)):
                band = lab == fbu.FBU_UNCERTAIN
                if band.any():
                    rows[name]["acc"].append(float(((hp > 0.5) == gt)[band].mean()))
                    share = float(gt[band].mean())
                    rows[name]["majority"].append(max(share, 1 - share))
                rows[name]["iou"].append(_iou(fbu.final_mask(lab, hp), gt))
        for lab, p, gt in zip(predicted, probs, masks.astype(bool)):
            odds = p[fbu.FBU_FOREGROUND] / np.maximum(p[fbu.FBU_FOREGROUND] + p[fbu.FBU_BACKGROUND], 1e-6)
            rows["ECP alone"]["iou"].append(_iou(fbu.final_mask(lab, odds), gt))
    count = len(rows["ECP alone"]["iou"])
    lines = [f"# HRR band accuracy: ground-truth vs ECP-predicted FBU maps ({args.model})", "",
             f"`python benchmarks/hrr_band_accuracy.py --bank {args.bank} --batches {args.batches} "
             f"--seed {args.seed}`: {count} held-out views of the training sets ({args.config}: "
             f"{cfg.size}² views, ECP-training clicks, no previous mask).", "",
             "| input | band accuracy (HRR > 0.5) | majority class of the band | object IoU |", "|---|---|---|---|"]
    for name, r in rows.items():
        acc = f"{np.mean(r['acc']):.3f}" if r["acc"] else "–"
        maj = f"{np.mean(r['majority']):.3f}" if r["majority"] else "–"
        lines.append(f"| {name} | {acc} | {maj} | {np.mean(r['iou']):.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
