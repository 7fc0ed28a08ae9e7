"""Reports: one run's Markdown table and mIoU plot, and a comparison table merged from many runs' summaries."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from finecut.errors import FinecutError
from finecut.evaluation.formatting import number, percent
from finecut.evaluation.report_protocols import is_click_run, protocol_sections
from finecut.evaluation.summary import miou_at
from finecut.io import atomic_write_bytes, read_own_file

#: The first line of every results table :func:`write_results_table` writes (what marks a file it may replace).
TABLE_TITLE = "# Evaluation results"
#: mIoU@k columns of the tables.
MIOU_COLUMNS: tuple[int, ...] = (1, 5, 10)
#: Benchmarks first in this order in merged tables (others follow in the order first seen).
DATASET_ORDER: tuple[str, ...] = ("GrabCut", "Berkeley", "DAVIS", "COCO-MVal", "SBD", "PascalVOC", "DRIVE", "CrackForest")


def _fmt_spc(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if value >= 0.01 else f"{value:.2g}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary_markdown(summary: dict[str, Any], config: dict[str, Any] | None = None) -> str:
    """One run's results as Markdown: NoC/NoF/mIoU/speed table, the full mIoU@k row and the protocol settings."""
    protocol = str(summary.get("protocol", "standard"))
    title = f"# {summary.get('model', '?')} on {summary.get('dataset', '?')}"
    if protocol != "standard":
        title += f" ({protocol} protocol)"
    parts = [title, ""]
    if summary.get("not_supported"):
        parts += [f"Not supported: {summary['not_supported']}", ""]
    elif protocol in ("box", "coarse"):
        header = ["samples"] + (["coarse mIoU"] if protocol == "coarse" else []) + ["mIoU", "s/step"]
        row = [str(summary["num_samples"])]
        if protocol == "coarse":
            row.append(percent(summary.get("mean_init_iou")))
        row += [percent(summary.get("final_miou")), _fmt_spc(summary["seconds_per_click"])]
        parts += [_table(header, [row]), ""]
    else:
        unit = "NoS" if protocol == "scribble" else "NoC"
        step = "scribble" if protocol == "scribble" else "click"
        keys = list(summary["noc"])
        header = ["samples"] + [f"{unit}{k}" for k in keys] + [f"NoF{k}" for k in keys]
        header += [f"mIoU@{k}" for k in (*MIOU_COLUMNS, summary["max_clicks"])] + [f"s/{step}"]
        row = [str(summary["num_samples"])]
        row += [number(summary["noc"][k]) for k in keys] + [number(summary["nof"][k]) for k in keys]
        row += [percent(miou_at(summary, k)) for k in (*MIOU_COLUMNS, summary["max_clicks"])]
        row += [_fmt_spc(summary["seconds_per_click"])]
        parts += [_table(header, [row]), ""]
        if summary.get("miou"):
            curve = summary["miou"]
            parts += [
                f"mIoU (%) after k {step}s:",
                "",
                _table(["k"] + [str(k) for k in range(1, len(curve) + 1)], [["mIoU"] + [percent(v) for v in curve]]),
                "",
            ]
        else:
            parts += ["mIoU@k is not reported: the run stopped each sample at the target IoU.", ""]
        if summary.get("mean_init_iou") is not None:
            parts += [f"Mask correction: mean IoU of the initial masks {percent(summary['mean_init_iou'])}%.", ""]
    if isinstance(summary.get("alpha"), dict):
        a = summary["alpha"]
        parts += [f"Alpha ({a.get('source')} scored, {a.get('num_samples')} samples): SAD {a.get('sad', 0):.3f}, "
                  f"MSE {a.get('mse', 0):.5f}, Grad {a.get('grad', 0):.3f}.", ""]
    settings = [
        f"max {'scribbles' if protocol == 'scribble' else 'clicks'} {summary['max_clicks']}",
        f"threshold {summary['threshold']}",
        f"target IoU {summary['target_iou'] if summary['target_iou'] is not None else 'none (full runs)'}",
        f"mask correction {'on' if summary['mask_correction'] else 'off'}",
        f"scored inside region: {'yes' if summary.get('region') else 'no'}",
    ]
    if summary.get("protocol_params"):
        settings.append("protocol parameters " + json.dumps(summary["protocol_params"], sort_keys=True))
    settings.append(f"seed {summary.get('seed', 0)}")
    names = {"standard": "standard (RITM) click simulation", "ntclick": "NTClick's tolerant-click simulation",
             "scribble": "FocalClick-XL's deterministic scribble simulation", "box": "one box (FocalClick-XL)",
             "coarse": "one coarse mask (FocalClick-XL)",
             "correction": "mask correction from simulated DAVIS-585-style initial masks, standard clicks"}
    parts += [f"Protocol: {names.get(protocol, protocol)}; " + ", ".join(settings) + "."]
    if config is not None:
        model = config.get("model", {})
        dataset = config.get("dataset", {})
        parts += [
            "",
            f"Model: `{json.dumps(model.get('config', {}), sort_keys=True)}`",
            "",
            f"Dataset: {dataset.get('name')} ({dataset.get('count')} of {dataset.get('total')} samples)"
            + (f" from `{dataset.get('root')}`" if dataset.get("root") else ""),
            "",
            f"Run: finecut {config.get('finecut_version')}, commit {config.get('git_commit') or 'unknown'}, "
            f"{config.get('date')}, {config.get('host', {}).get('cpu', 'unknown CPU')}.",
        ]
    return "\n".join(parts) + "\n"


def plot_miou(
    curves: dict[str, Sequence[float]],
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Plot mIoU (%) against the number of clicks, one line per label, as a PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 3.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for label, curve in curves.items():
        ks = list(range(1, len(curve) + 1))
        ax.plot(ks, [100 * v for v in curve], marker="o", markersize=3, label=label)
    ax.set_xlabel("number of clicks")
    ax.set_ylabel("mIoU (%)")
    if curves:
        ax.set_xticks(range(0, max(len(c) for c in curves.values()) + 1, 2))
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if curves:
        ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, out)
    return out


def load_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Read one ``summary.json`` (or a run folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "summary.json"
    if not p.is_file():
        raise FinecutError(f"{p}: summary file not found")
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FinecutError(f"{p}: not a readable summary JSON ({exc})") from exc
    if not isinstance(data, dict) or "noc" not in data or "num_samples" not in data:
        raise FinecutError(f"{p}: not a finecut evaluation summary (no 'noc'/'num_samples')")
    data.setdefault("_path", str(p))
    return data


def find_summaries(root: str | os.PathLike) -> list[Path]:
    """Every ``summary.json`` below ``root`` (sorted)."""
    base = Path(root)
    if not base.is_dir():
        raise FinecutError(f"{base}: results folder not found")
    return sorted(base.rglob("summary.json"))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def run_label(summary: dict[str, Any]) -> str:
    """The model name, with the protocol variant when it is not the standard one."""
    notes = []
    if summary.get("mask_correction"):
        notes.append("mask correction")
    if summary.get("target_iou") is not None:
        notes.append(f"stop at {summary['target_iou']}")
    if summary.get("protocol", "standard") != "standard":
        notes.append(f"{summary['protocol']} protocol")
    if summary.get("honour_clicks") is False:
        notes.append("raw masks")
    return str(summary.get("model")) + (f" ({', '.join(notes)})" if notes else "")


def published_markdown(published: dict[str, Any], datasets: Sequence[str]) -> list[str]:
    """A table of published NoC numbers (``published.json``: ``{"source_note", "rows": [{"model", "source",
    DATASET: {"85": x, "90": y}}], "not_reproduced": [{"what", "why"}]}``), clearly separated from what finecut
    measured; ``not_reproduced`` lists published results that cannot be measured here, and why."""
    header = ["published (not measured here)"]
    for ds in datasets:
        header += [f"{ds} NoC85", f"{ds} NoC90"]
    header.append("source")
    rows = []
    for row in published.get("rows", []):
        cells = [str(row.get("model"))]
        for ds in datasets:
            values = row.get(ds, {})
            cells += [number(values.get("85")), number(values.get("90"))]
        cells.append(str(row.get("source", "")))
        rows.append(cells)
    note = str(published.get("source_note", ""))
    lines = ["## Published numbers for comparison", "", note, "", _table(header, rows), ""]
    missing = published.get("not_reproduced") or []
    if missing:
        lines += ["Published results that cannot be reproduced here:", ""]
        lines += [f"* **{item.get('what')}**: {item.get('why')}" for item in missing]
        lines.append("")
    return lines


def _spread(values: Sequence[float | int | None], scale: float = 1.0, digits: int = 2) -> str:
    """One value as is; several (one per seed) as ``mean ± std`` (population std); "–" when any is missing."""
    if not values or any(v is None for v in values):
        return "–"
    if len(values) == 1 and scale == 1.0:
        return number(values[0], digits)
    arr = [scale * float(v) for v in values]  # type: ignore[arg-type]
    if len(arr) == 1:
        return f"{arr[0]:.{digits}f}"
    mean = sum(arr) / len(arr)
    std = (sum((a - mean) ** 2 for a in arr) / len(arr)) ** 0.5
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def group_runs(summaries: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Runs keyed by (label, dataset), in first-seen order; runs that differ only by seed share a key."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in summaries:
        groups.setdefault((run_label(s), str(s.get("dataset"))), []).append(s)
    for runs in groups.values():
        runs.sort(key=lambda r: int(r.get("seed", 0) or 0))
    return groups


def mean_curve(runs: Sequence[dict[str, Any]]) -> list[float] | None:
    """The mIoU@k curve of one run, or the mean curve of several seeds (None when a run has none)."""
    curves = [r.get("miou") for r in runs]
    if not curves or any(not c for c in curves) or len({len(c) for c in curves}) != 1:  # type: ignore[arg-type]
        return None
    return [sum(values) / len(values) for values in zip(*curves)]  # type: ignore[misc]


def results_markdown(summaries: Sequence[dict[str, Any]], base: str | os.PathLike | None = None,
                     published: dict[str, Any] | None = None) -> str:
    """Merge run summaries into one Markdown comparison: a NoC90 overview (rows model, columns dataset) and, per
    dataset, rows model with NoC85 / NoC90 / NoF90 / mIoU@1/5/10 / seconds per click and a link to the run.

    Runs of one model, dataset and protocol that differ only by seed (``finecut evaluate --seed 0 1 2 3 4``) are one
    row of ``mean ± std`` over the seeds, and a robustness table lists each seed's NoC90 and mIoU@5.
    """
    if not summaries:
        raise FinecutError("no evaluation summaries to merge")
    base_dir = Path(base) if base is not None else None
    all_summaries = list(summaries)
    summaries = [s for s in all_summaries if is_click_run(s)]
    groups = group_runs(summaries)
    datasets: list[str] = []
    models: list[str] = []
    for label, ds in groups:
        if ds not in datasets:
            datasets.append(ds)
        if label not in models:
            models.append(label)
    datasets.sort(key=lambda d: DATASET_ORDER.index(d) if d in DATASET_ORDER else len(DATASET_ORDER))

    def link(s: dict[str, Any]) -> str:
        path = Path(s.get("_path", ""))
        label = path.parent.name or str(s.get("model"))
        target = path.parent / "summary.md"
        if base_dir is not None:
            try:
                return f"[{label}]({os.path.relpath(target, base_dir)})"
            except ValueError:
                pass
        return f"[{label}]({target})"

    def links(runs: Sequence[dict[str, Any]]) -> str:
        if len(runs) == 1:
            return link(runs[0])
        return f"{len(runs)} seeds: " + ", ".join(link(r) for r in runs)

    if not summaries:  # only FocalClick-XL protocol runs
        parts = [TABLE_TITLE, "", *protocol_sections(all_summaries, link)]
        return "\n".join(_hosts(all_summaries, parts))
    max_clicks = sorted({int(s.get("max_clicks", 20)) for s in summaries})
    thresholds = sorted({float(s.get("threshold", 0.49)) for s in summaries})
    n_clicks = str(max_clicks[0]) if len(max_clicks) == 1 else "N (see each run)"
    threshold = f"{thresholds[0]:g}" if len(thresholds) == 1 else "as recorded in each run"
    parts = [
        TABLE_TITLE,
        "",
        "Standard (RITM) protocol: the simulated user clicks at the point farthest from the error boundary "
        f"(exact L2 distance, 1 px zero pad, ties negative), up to {n_clicks} clicks, prediction threshold "
        f"{threshold}, IoU ignoring unlabelled pixels. NoC@t: mean clicks to reach IoU t ({n_clicks} when never "
        f"reached); NoF@t: samples that never reach t in {n_clicks} clicks; mIoU@k in %; s/click: engine seconds "
        "(set_image included) per click. Each run folder holds its full config, per-sample results and plot.",
        "",
        "Rows marked *ntclick protocol* use NTClick's simulated user: where the click would land in the ground "
        "truth's uncertain band (the mask's boundary band, kernel 5, 3 iterations), it is a *tolerant* click at a "
        "seeded random offset inside that band. Several seeds are shown as mean ± std over the seeds.",
        "",
        "Masks are scored as the `Predictor` returns them, with its click-honour rule (`finecut.click_honour`: every "
        "positive click's pixel inside the mask, every negative one outside). Rows marked *raw masks* score the "
        "engine's own masks without that rule (`finecut evaluate --raw-masks`). *Clicks not honoured* counts, over "
        "every step of every sample, the clicks so far that the step's mask does not honour; – marks runs made before "
        "the rule and the count existed, which scored the engines' raw masks.",
        "",
        "## NoC90 overview",
        "",
    ]
    overview = []
    for model in models:
        row = [str(model)]
        for ds in datasets:
            runs = groups.get((model, ds), [])
            row.append(_spread([r["noc"].get("90") for r in runs]) if runs else "–")
        overview.append(row)
    parts += [_table(["model"] + [str(d) for d in datasets], overview), ""]
    if published:
        parts += published_markdown(published, [str(d) for d in datasets])
    for ds in datasets:
        ds_groups = [(label, runs) for (label, d), runs in groups.items() if d == ds]
        parts += [f"## {ds}", ""]
        header = ["model", "samples", "NoC85", "NoC90", "NoF90"] + [f"mIoU@{k}" for k in MIOU_COLUMNS]
        header += ["s/click", "clicks not honoured", "run"]
        rows = []
        for label, runs in ds_groups:
            violations = [r.get("click_violations") for r in runs]
            rows.append(
                [label, str(runs[0]["num_samples"]), _spread([r["noc"].get("85") for r in runs]),
                 _spread([r["noc"].get("90") for r in runs]), _spread([r["nof"].get("90") for r in runs], digits=1)]
                + [_spread([miou_at(r, k) for r in runs], scale=100) for k in MIOU_COLUMNS]
                + [_spread([r.get("seconds_per_click") for r in runs], digits=3) if len(runs) > 1
                   else _fmt_spc(runs[0].get("seconds_per_click")),
                   "–" if any(v is None for v in violations) else str(sum(violations)), links(runs)]
            )
        parts += [_table(header, rows), ""]
        seeded = [(label, runs) for label, runs in ds_groups if len(runs) > 1]
        if seeded:
            parts += [f"Robustness over seeds on {ds} (each seed's NoC90 / mIoU@5 / share of tolerant clicks):", ""]
            seed_rows = []
            for label, runs in seeded:
                for r in runs:
                    frac = r.get("tolerant_click_fraction")
                    seed_rows.append([label, str(r.get("seed")), number(r["noc"].get("90")),
                                      percent(miou_at(r, 5)), "–" if frac is None else f"{100 * frac:.1f} %"])
            parts += [_table(["model", "seed", "NoC90", "mIoU@5", "tolerant clicks"], seed_rows), ""]
        if any(mean_curve(runs) for _, runs in ds_groups):
            parts += [f"![mIoU vs clicks on {ds}](miou-{_slug(str(ds))}.png)", ""]
    parts += protocol_sections(all_summaries, link)
    return "\n".join(_hosts(all_summaries, parts))


def _hosts(summaries: Sequence[dict[str, Any]], parts: list[str]) -> list[str]:
    hosts = sorted({s.get("host_cpu") for s in summaries if s.get("host_cpu")})
    if hosts:
        parts += ["Timings measured on: " + "; ".join(hosts) + ".", ""]
    return parts


def write_results_table(
    out_path: str | os.PathLike,
    summaries: Sequence[dict[str, Any]] | None = None,
    root: str | os.PathLike | None = None,
) -> Path:
    """Write the merged Markdown table to ``out_path`` (and one mIoU plot per dataset beside it).

    Give the summaries directly, or a ``root`` folder whose ``*/summary.json`` files are merged. A ``published.json``
    beside ``out_path`` adds a table of published numbers. The table is a generated file, replaced on every call; a
    file at ``out_path`` that is not such a table (another first line) is refused, never overwritten.
    """
    if summaries is None:
        if root is None:
            raise FinecutError("write_results_table needs summaries or a root folder")
        summaries = [load_summary(p) for p in find_summaries(root)]
        if not summaries:
            raise FinecutError(f"{root}: no summary.json found below this folder")
    out = Path(out_path)
    published_path = out.parent / "published.json"
    published = json.loads(published_path.read_text()) if published_path.exists() else None
    text = results_markdown(summaries, base=out.parent, published=published)
    read_own_file(out, TABLE_TITLE, "a results table written by finecut")
    atomic_write_bytes(out, text.encode(), overwrite=True)
    datasets: dict[str, dict[str, Sequence[float]]] = {}
    for (label, ds), runs in group_runs([s for s in summaries if is_click_run(s)]).items():
        curve = mean_curve(runs)
        if curve:
            datasets.setdefault(ds, {})[label] = curve
    for ds, curves in datasets.items():
        plot_miou(curves, out.parent / f"miou-{_slug(ds)}.png", title=f"{ds}: mIoU vs clicks")
    return out
