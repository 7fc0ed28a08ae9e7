"""Dataset-level metrics from per-sample results: NoC@t, NoF@t, mIoU@k, seconds per click."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from finecut.evaluation.config import SINGLE_ROUND, EvalConfig, pct
from finecut.evaluation.loop import SampleResult
from finecut.evaluation.protocol import miou_curve, nof


def summarize(results: Sequence[SampleResult], config: EvalConfig) -> dict[str, Any]:
    """Aggregate per-sample results.

    ``noc[t]`` is the mean NoC@t and ``nof[t]`` the number of samples whose NoC@t equals ``max_clicks`` (RITM's
    NoF), both None when some sample stopped early below t. ``miou`` is mIoU@k for k = 1..max_clicks, None unless every
    run took ``max_clicks`` clicks. ``seconds_per_click`` is total engine time (set_image included) / total clicks.
    ``click_violations``: clicks not honoured by the mask of a step, summed over every step of every sample (when the
    records hold the count).

    The FocalClick-XL protocols add ``protocol_params`` (their settings), for box and
    coarse runs ``final_miou`` (the mIoU of the one prediction; ``mean_init_iou`` is the coarse masks' mIoU), the count
    of generated masks outside their IoU band, and, when samples carry a ground-truth alpha, ``alpha``: the mean SAD /
    MSE / Grad and whether the engines' alphas or binary masks were scored. Under the scribble protocol ``noc`` /
    ``nof`` count scribbles (NoS / NoF).
    """
    n = len(results)
    noc_mean: dict[str, float | None] = {}
    nof_count: dict[str, int | None] = {}
    for t in config.noc_thresholds:
        key = pct(t)
        values = [r.noc.get(key) for r in results]
        if n and all(v is not None for v in values):
            noc_mean[key] = float(np.mean(values))
            nof_count[key] = nof(values, config.max_clicks)  # type: ignore[arg-type]
        else:
            noc_mean[key] = None
            nof_count[key] = None
    full = n > 0 and all(r.num_clicks >= config.max_clicks for r in results)
    miou = [float(v) for v in miou_curve([r.ious for r in results], config.max_clicks)] if full else None
    total_clicks = int(sum(r.num_clicks for r in results))
    total_seconds = float(sum(r.seconds for r in results))
    summary: dict[str, Any] = {
        "num_samples": n,
        "max_clicks": config.max_clicks,
        "threshold": config.threshold,
        "target_iou": config.target_iou,
        "mask_correction": config.mask_correction,
        "protocol": config.protocol,
        "seed": config.seed,
        "honour_clicks": config.honour_clicks,
        "noc": noc_mean,
        "nof": nof_count,
        "miou": miou,
        "total_clicks": total_clicks,
        "total_seconds": total_seconds,
        "seconds_per_click": total_seconds / total_clicks if total_clicks else None,
    }
    if config.protocol in SINGLE_ROUND:  # one prompt, no NoC: its mIoU is the measure
        summary["noc"] = {k: None for k in noc_mean}
        summary["nof"] = {k: None for k in nof_count}
    if config.protocol == "ntclick":
        summary["tolerant_offset"] = config.tolerant_offset
        summary["tolerant_click_fraction"] = (
            sum(1 for r in results for c in r.clicks if c[2] == "tol") / total_clicks if total_clicks else None)
    if config.protocol not in ("standard", "ntclick") or config.merge:
        summary["protocol_params"] = config.protocol_params()
    if config.protocol in ("box", "coarse"):
        summary["final_miou"] = float(np.mean([r.ious[-1] for r in results])) if n else None
    if config.protocol == "coarse":
        init_ious = [r.init_iou for r in results if r.init_iou is not None]
        lo, hi = config.coarse_band or (0.0, 1.0)
        summary["coarse_out_of_band"] = sum(1 for v in init_ious if not lo - 1e-9 <= v <= hi + 1e-9)
    if config.protocol == "correction":
        init_ious = [r.init_iou for r in results if r.init_iou is not None]
        lo, hi = config.init_band
        summary["init_out_of_band"] = sum(1 for v in init_ious if not lo - 1e-9 <= v <= hi + 1e-9)
    alpha = [r.extra["alpha"] for r in results if isinstance(r.extra.get("alpha"), dict)]
    if alpha:
        sources = {a.get("source") for a in alpha}
        summary["alpha"] = {
            "num_samples": len(alpha),
            "source": sources.pop() if len(sources) == 1 else "mixed",
            **{k: float(np.mean([a[k] for a in alpha])) for k in ("sad", "mse", "grad")},
            **{k: float(np.mean([a[k] for a in alpha])) for k in ("mask_sad", "mask_mse", "mask_grad")
               if all(k in a for a in alpha)},
        }
    if all("violations" in r.extra for r in results):
        summary["click_violations"] = int(sum(r.extra["violations"] for r in results))
    init = [r.init_iou for r in results if r.init_iou is not None]
    if init:
        summary["mean_init_iou"] = float(np.mean(init))
    if any(r.extra.get("region") for r in results):
        summary["region"] = True
    return summary


def miou_at(summary: dict[str, Any], k: int) -> float | None:
    """mIoU after ``k`` clicks from a summary, or None where not available."""
    curve = summary.get("miou")
    if not curve or k < 1 or k > len(curve):
        return None
    return float(curve[k - 1])
