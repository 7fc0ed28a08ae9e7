"""The merged results table's sections for FocalClick-XL's protocols: scribbles (NoS), box mIoU, coarse masks (coarse
vs refined per level), mask correction (NoC with / without Progressive Merge) and alpha mattes (SAD / MSE / Grad)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from finecut.evaluation.config import COARSE_LEVELS, CLICK_PROTOCOLS
from finecut.evaluation.formatting import number, percent
from finecut.evaluation.summary import miou_at

Link = Callable[[dict[str, Any]], str]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def protocol_of(summary: dict[str, Any]) -> str:
    return str(summary.get("protocol", "standard"))


def is_click_run(summary: dict[str, Any]) -> bool:
    """Runs that belong in the click tables (standard / NTClick protocol, with or without initial masks)."""
    return protocol_of(summary) in CLICK_PROTOCOLS and not summary.get("not_supported")


def params(summary: dict[str, Any]) -> dict[str, Any]:
    return dict(summary.get("protocol_params") or {})


def model_label(summary: dict[str, Any]) -> str:
    """The model, with the variants that change what is measured (raw masks, a seed other than 0)."""
    notes = []
    if summary.get("honour_clicks") is False:
        notes.append("raw masks")
    if int(summary.get("seed", 0) or 0) != 0:
        notes.append(f"seed {summary['seed']}")
    return str(summary.get("model")) + (f" ({', '.join(notes)})" if notes else "")


def _unsupported(runs: Sequence[dict[str, Any]]) -> list[str]:
    lines = [f"- {model_label(r)} on {r.get('dataset')}: {r['not_supported']}" for r in runs if r.get("not_supported")]
    return (["Not supported:", "", *lines, ""]) if lines else []


def scribble_section(runs: Sequence[dict[str, Any]], link: Link) -> list[str]:
    rows = []
    for r in runs:
        if r.get("not_supported"):
            continue
        p = params(r)
        first = "simulated"
        if p.get("scribble_start"):
            first = "human (" + str(p["scribble_start"]).rstrip("/").split("/")[-1] + ")"
        rows.append([model_label(r), str(r.get("dataset")), first, str(r["num_samples"]),
                     number(r["noc"].get("85")), number(r["noc"].get("90")),
                     number(r["nof"].get("85")), number(r["nof"].get("90")),
                     percent(miou_at(r, 1)), percent(miou_at(r, 5)), number(r.get("seconds_per_click"), 3), link(r)])
    max_steps = sorted({int(r.get("max_clicks", 20)) for r in runs})
    n = str(max_steps[0]) if len(max_steps) == 1 else "N"
    parts = [
        "## Scribbles (NoS)", "",
        "FocalClick-XL's scribble protocol: each step the simulated user draws one scribble in the largest error "
        "region (medial axis → radius-neighbour graph → spanning forest → longest path → Bézier curve; positive "
        f"on missed object, negative on wrong background), up to {n} scribbles. NoS@t: mean scribbles to reach "
        f"IoU t ({n} when never reached); NoF@t: samples that never reach it; mIoU@k in %. *human* rows take the "
        "first interaction from a human scribble set (all its strokes count as one scribble), the rest simulated.",
        "",
    ]
    if rows:
        parts += _table(["model", "dataset", "first scribble", "samples", "NoS85", "NoS90", "NoF85", "NoF90",
                         "mIoU@1", "mIoU@5", "s/scribble", "run"], rows)
    return parts + _unsupported(runs)


def box_section(runs: Sequence[dict[str, Any]], link: Link) -> list[str]:
    jitters = sorted({float(params(r).get("box_jitter", 0.0)) for r in runs})
    groups: dict[tuple[str, str], dict[float, dict[str, Any]]] = {}
    for r in runs:
        if r.get("not_supported"):
            continue
        groups.setdefault((model_label(r), str(r.get("dataset"))), {})[float(params(r).get("box_jitter", 0.0))] = r
    header = ["model", "dataset", "samples"]
    header += ["mIoU, GT box" if j == 0 else f"mIoU, jittered ±{100 * j:g} %" for j in jitters] + ["runs"]
    rows = []
    for (label, ds), by_jitter in groups.items():
        first = next(iter(by_jitter.values()))
        rows.append([label, ds, str(first["num_samples"])]
                    + [percent(by_jitter[j].get("final_miou")) if j in by_jitter else "–" for j in jitters]
                    + [", ".join(link(by_jitter[j]) for j in jitters if j in by_jitter)])
    parts = [
        "## Box", "",
        "One box per sample, the only prompt: the ground truth's bounding box, and the same box with each side moved "
        "by a seeded uniform offset of up to the stated fraction of the box's side. mIoU in % of that one prediction.",
        "",
    ]
    if rows:
        parts += _table(header, rows)
    return parts + _unsupported(runs)


def _level(band: Sequence[float] | None) -> str:
    if not band:
        return "?"
    key = (round(float(band[0]), 6), round(float(band[1]), 6))
    for i, level in enumerate(COARSE_LEVELS, 1):
        if (round(level[0], 6), round(level[1], 6)) == key:
            return str(i)
    return "–"


def coarse_section(runs: Sequence[dict[str, Any]], link: Link) -> list[str]:
    rows = []
    ordered = sorted((r for r in runs if not r.get("not_supported")),
                     key=lambda r: (model_label(r), str(r.get("dataset")), -float((params(r).get("coarse_band")
                                                                                   or [0, 0])[0])))
    for r in ordered:
        band = params(r).get("coarse_band")
        coarse, refined = r.get("mean_init_iou"), r.get("final_miou")
        gain = None if coarse is None or refined is None else refined - coarse
        rows.append([model_label(r), str(r.get("dataset")), _level(band),
                     "[" + ", ".join(f"{v:.2f}" for v in band or []) + "]", str(r["num_samples"]),
                     percent(coarse), percent(refined), "–" if gain is None else f"{100 * gain:+.2f}",
                     str(r.get("coarse_out_of_band", "–")), link(r)])
    parts = [
        "## Coarse masks", "",
        "One coarse mask per sample, the only prompt (as the prior mask): the ground truth perturbed by seeded small "
        "erosions, dilations and down-up samplings until its IoU falls in the level's band. *coarse*: mIoU of those "
        "masks; *refined*: mIoU of the engine's mask from them (in %). An engine that cannot refine a mask alone "
        "returns it unchanged (gain 0).", "",
    ]
    if rows:
        parts += _table(["model", "dataset", "level", "IoU band", "samples", "coarse", "refined", "gain",
                         "out of band", "run"], rows)
    return parts + _unsupported(runs)


def correction_section(runs: Sequence[dict[str, Any]], link: Link) -> list[str]:
    groups: dict[tuple[str, str], dict[bool, dict[str, Any]]] = {}
    for r in runs:
        if r.get("not_supported"):
            continue
        groups.setdefault((model_label(r), str(r.get("dataset"))), {})[bool(params(r).get("merge", False))] = r
    keys = ("85", "90", "95")
    header = ["model", "dataset", "samples", "initial mIoU"]
    header += [f"NoC{k}" for k in keys] + [f"NoC{k} + PM" for k in keys] + ["NoF90", "NoF90 + PM", "runs"]
    rows = []
    for (label, ds), by_merge in groups.items():
        first = next(iter(by_merge.values()))
        cells = [label, ds, str(first["num_samples"]), percent(first.get("mean_init_iou"))]
        for merged in (False, True):
            run = by_merge.get(merged)
            cells += [number(run["noc"].get(k)) if run else "–" for k in keys]
        cells += [number(by_merge[m]["nof"].get("90")) if m in by_merge else "–" for m in (False, True)]
        cells.append(", ".join(link(by_merge[m]) for m in (False, True) if m in by_merge))
        rows.append(cells)
    parts = [
        "## Mask correction (DAVIS-585 style)", "",
        "Standard clicks starting from a seeded flawed initial mask per sample: superpixel (SLIC) defects on the "
        "ground truth — boundary error / external false positive / internal false negative with probabilities "
        "0.65 / 0.25 / 0.10 — until its IoU is in [0.75, 0.85]; the engine gets it as the prior mask. *+ PM*: the "
        "evaluator applies Progressive Merge (only the changed region that holds the new click is updated); without, "
        "every step's mask is the engine's (any merge of the engine's own is switched off for both).", "",
    ]
    if rows:
        parts += _table(header, rows)
    return parts + _unsupported(runs)


def alpha_section(runs: Sequence[dict[str, Any]], link: Link) -> list[str]:
    rows = []
    for r in runs:
        a = r["alpha"]
        rows.append([model_label(r), str(r.get("dataset")), protocol_of(r), str(a.get("num_samples")),
                     str(a.get("source")), number(a.get("sad"), 3), number(a.get("mse"), 5), number(a.get("grad"), 3),
                     number(a.get("mask_sad"), 3), number(a.get("mask_mse"), 5), number(a.get("mask_grad"), 3),
                     link(r)])
    return [
        "## Alpha mattes", "",
        "Runs on an alpha set (images + ground-truth alphas): the last prediction of each sample scored against the "
        "alpha. *scored*: the engine's predicted alpha, or its binary mask when it gives none; the *mask* columns "
        "score the same predictions' binary masks. SAD and Grad are sums over the scored region / 1000, MSE a mean "
        "(Grad: Gaussian-derivative gradients, sigma 1.4); the region is the set's trimap unknown band when it has "
        "trimaps, else the whole image.", "",
        *_table(["model", "dataset", "protocol", "samples", "scored", "SAD", "MSE", "Grad", "mask SAD", "mask MSE",
                 "mask Grad", "run"], rows),
    ]


SECTIONS = (("scribble", scribble_section), ("box", box_section), ("coarse", coarse_section),
            ("correction", correction_section))


def protocol_sections(summaries: Sequence[dict[str, Any]], link: Link) -> list[str]:
    """Markdown lines of every protocol section that has runs (in a fixed order)."""
    parts: list[str] = []
    for name, section in SECTIONS:
        runs = [s for s in summaries if protocol_of(s) == name]
        if runs:
            parts += section(runs, link)
    alpha_runs = [s for s in summaries if isinstance(s.get("alpha"), dict)]
    if alpha_runs:
        parts += alpha_section(alpha_runs, link)
    click_unsupported = [s for s in summaries if protocol_of(s) in CLICK_PROTOCOLS and s.get("not_supported")]
    parts += _unsupported(click_unsupported)
    return parts
