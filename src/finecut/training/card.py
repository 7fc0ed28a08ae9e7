"""Model cards: a Markdown page describing a trained checkpoint (``finecut card CHECKPOINT --out FILE``).

Rerunning it over an existing card keeps that card's hand-written ``## Notes`` section (heading to end of file) and
refuses a file that is not a model card.

The card is built from what a checkpoint carries (``NAME.json``: architecture config, engine, the trainer's record of
the run; ``NAME.safetensors``: the weights, read lazily for tensor shapes) plus every evaluation summary
(``summary.json`` written by ``finecut evaluate``) under a results folder whose ``model`` names this checkpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from finecut.errors import FinecutError
from finecut.io import atomic_write_bytes, read_own_file
from finecut.models.checkpoint import checkpoint_paths, read_checkpoint_config
from finecut.training.config import flat_config

#: How a rendered card begins.
CARD_TITLE = "# Model card: "
#: The heading of a card's hand-written section (alone or followed by a space and more words): everything from it to
#: the end survives regeneration.
NOTES_HEADING = "## Notes"
#: mIoU@k columns of the evaluation table.
MIOU_CLICKS: tuple[int, ...] = (1, 5, 10)


def weight_stats(weights_path: str | os.PathLike) -> dict[str, int]:
    """``{"tensors", "values", "bytes"}`` of a safetensors file, from its header only (no tensor is loaded)."""
    path = Path(weights_path)
    if not path.exists():
        raise FinecutError(f"{path}: checkpoint weights not found")
    values = 0
    tensors = 0
    try:
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open handles are not containers
                count = 1
                for dim in fh.get_slice(key).get_shape():
                    count *= int(dim)
                values += count
                tensors += 1
    except (SafetensorError, OSError, ValueError) as exc:
        raise FinecutError(f"{path}: corrupt checkpoint weights ({exc})") from exc
    return {"tensors": tensors, "values": values, "bytes": path.stat().st_size}


def parameter_count(weights_path: str | os.PathLike, model_config: dict[str, Any]) -> int:
    """Learnable parameters stored in the weights file: tensors whose names are parameters of the architecture
    (built on the meta device, so nothing is allocated); buffers such as BatchNorm statistics are not counted.
    Falls back to every stored value when the architecture cannot be built."""
    import torch

    from finecut.models.registry import build_model

    try:
        with torch.device("meta"):
            names = {name for name, _ in build_model(model_config).named_parameters()}
    except Exception:  # noqa: BLE001 - an unknown/legacy architecture still gets a card
        return weight_stats(weights_path)["values"]
    total = 0
    path = Path(weights_path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open handles are not containers
                if key in names:
                    count = 1
                    for dim in fh.get_slice(key).get_shape():
                        count *= int(dim)
                    total += count
    except (SafetensorError, OSError, ValueError) as exc:
        raise FinecutError(f"{path}: corrupt checkpoint weights ({exc})") from exc
    return total


def _names_for(json_path: Path) -> set[str]:
    """Model labels an evaluation of this checkpoint may carry (``finecut evaluate --model`` spec or its stem)."""
    stem = json_path.with_suffix("")
    names = {stem.name, str(stem), str(json_path), str(json_path.with_suffix(".safetensors"))}
    try:
        resolved = stem.resolve()
        names |= {str(resolved), str(resolved) + ".json", str(resolved) + ".safetensors"}
    except OSError:
        pass
    return names


def _matches(model: str, names: set[str]) -> bool:
    if model in names:
        return True
    p = Path(model)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    try:
        return str(p.resolve()) in names
    except OSError:
        return False


def find_summaries(results_root: str | os.PathLike, model_names: Iterable[str]) -> list[tuple[Path, dict[str, Any]]]:
    """Every ``summary.json`` under ``results_root`` (recursively) whose ``model`` is one of ``model_names``."""
    root = Path(results_root)
    if not root.is_dir():
        raise FinecutError(f"{root}: results folder not found")
    names = set(model_names)
    found: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(root.rglob("summary.json")):
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
            raise FinecutError(f"{path}: unreadable evaluation summary ({exc})") from exc
        if isinstance(doc, dict) and _matches(str(doc.get("model", "")), names):
            found.append((path, doc))
    return found


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = round(float(seconds))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _evaluation_row(path: Path, summary: dict[str, Any], root: Path) -> list[str]:
    noc = summary.get("noc") or {}
    nof = summary.get("nof") or {}
    miou = summary.get("miou") or []
    protocol = str(summary.get("protocol", "standard"))
    if protocol != "standard":
        protocol += f", seed {summary.get('seed', 0)}"
    cells = [str(summary.get("dataset", "?")), protocol, _fmt(summary.get("num_samples")),
             _fmt(noc.get("85")), _fmt(noc.get("90")), _fmt(nof.get("90"))]
    for k in MIOU_CLICKS:
        cells.append(f"{100 * float(miou[k - 1]):.1f}" if len(miou) >= k else "–")
    spc = summary.get("seconds_per_click")
    cells.append(f"{float(spc):.3f}" if spc is not None else "–")
    cells.append(f"`{path.parent.relative_to(root)}`" if path.parent != root else "`.`")
    return cells


def _crop_schedule(cfg: dict[str, Any]) -> str:
    """The "crop size" row: the full crop (refiner crop, hi factor), then the small-crop stage when there is one."""
    text = (f"{_fmt(cfg.get('size'))}² ("
            + (f"refiner {_fmt(cfg.get('refiner_size'))}², " if "refiner_size" in cfg else "")
            + f"hi factor {_fmt(cfg.get('hi_factor'))})")
    if not cfg.get("small_size"):
        return text
    text += f"; {cfg['small_size']}² until step {cfg.get('full_size_from')}"
    if cfg.get("small_refiner_size"):
        text += f" (refiner {cfg['small_refiner_size']}²)"
    if cfg.get("small_every"):
        text += f", then one step in {cfg['small_every']}"
    return text


def _training_section(training: dict[str, Any]) -> list[str]:
    """Markdown lines describing one ``finecut train`` record (steps, samples, recipe, data sources)."""
    cfg = flat_config(training.get("config") or {})
    out: list[str] = []
    if not training:
        out += ["No training record in this checkpoint (weights saved outside `finecut train`).", ""]
    else:
        data = cfg.get("data") or {}
        sources = list(data.get("sources") or [])
        weights = list(data.get("weights") or [])
        steps = training.get("step")
        batch = cfg.get("batch_size")
        processes = training.get("processes", 1)
        samples = training.get("samples_seen")
        if samples is None and steps is not None and batch is not None:
            samples = int(steps) * int(batch) * int(processes)
        rows = [
            ["steps", f"{_fmt(steps)} of {_fmt(cfg.get('steps'))} configured"],
            ["samples seen", f"{samples:,}" if isinstance(samples, int) else _fmt(samples)],
            ["train time", _duration(training.get("train_seconds"))],
            ["processes", _fmt(processes)],
            ["threads per process", _fmt(cfg.get("threads"))],
            ["batch size (per process)", _fmt(batch)],
            ["crop size", _crop_schedule(cfg)],
            *([["distillation", f"soft targets from `{cfg['distill_checkpoint']}`'s segmentor, weight "
                                f"{_fmt(cfg.get('distill_weight'))}"]] if cfg.get("distill_checkpoint") else []),
            ["initialisation", f"`{cfg.get('pretrained', '?')}`"
                               + (f", all weights from `{cfg['init_checkpoint']}` (warm start"
                                  + _start_name(training, str(cfg["init_checkpoint"])) + ")"
                                  if cfg.get("init_checkpoint") else "")
                               + (f", every tensor that fits from the segmentor of `{cfg['ecp_init_segmentor']}`"
                                  if cfg.get("ecp_init_segmentor") and not cfg.get("init_checkpoint") else "")],
            *([["ECP loss", f"3-class cross-entropy + {_fmt(cfg['ecp_binary_weight'])} × binary "
                            "(BCE of sigmoid(logit_fg − logit_bg) against the mask)"]]
              if cfg.get("ecp_binary_weight") else []),
            ["optimizer", (f"Adam, lr {cfg.get('lr', '?')} (backbone × {_fmt(cfg.get('backbone_lr_mult'))}), "
                          f"warm-up {_fmt(cfg.get('warmup_steps'))} + cosine")],
            ["iterative clicks", (f"up to {_fmt(cfg.get('max_iterative_clicks'))} on "
                                 f"{100 * float(cfg.get('iterative_probability', 0)):.0f} % of batches")],
            ["prior-mask samples", f"{100 * float(cfg.get('prior_mask_probability', 0)):.0f} %"],
            ["synthetic fraction", f"{100 * float(data.get('synthetic_thin', 0) or 0):.0f} %"],
            ["held-out fraction", f"{100 * float(data.get('val_fraction', 0) or 0):.0f} % of the images"],
        ]
        out += _table(["", ""], rows) + [""]
        if sources:
            total = sum(float(w) for w in weights[: len(sources)]) or 1.0
            src_rows = []
            for i, name in enumerate(sources):
                w = float(weights[i]) if i < len(weights) else 1.0
                options = (data.get("options") or {}).get(name)
                label = name + (f" ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else "")
                src_rows.append([label, _fmt(w), f"{100 * w / total:.0f} %"])
            out += ["Data sources (object bank `" + str(data.get("bank", "?")) + "`):", ""]
            out += _table(["source", "weight", "share of real samples"], src_rows) + [""]
    return out


def _start_name(training: dict[str, Any], init: str) -> str:
    """``; at the time `v19`, the run history's last row`` when the warm start's recorded name differs from what the
    config named (a shipped name such as ``simpleclick-xtiny`` means another checkpoint once the next one ships)."""
    runs = training.get("history") or []
    name = str(runs[-1].get("name") or "") if runs and isinstance(runs[-1], dict) else ""
    return f"; at the time `{name}`, the run history's last row" if name and name != init else ""


def _average_text(average: dict[str, Any]) -> str:
    """``of `A` × 0.50 (step 10), `B` × 0.50 (step 20)`` for a ``weight_average`` record."""
    of = list(average.get("of") or [])
    steps = list(average.get("steps") or [None] * len(of))
    sources = ", ".join(f"`{src}` × {float(w):.2f}" + (f" (step {step})" if step is not None else "")
                        for src, w, step in zip(of, average.get("weights") or [], steps))
    return f"of {sources}"


def _history_section(training: dict[str, Any], heading: str = "##") -> list[str]:
    """Every run that went into the weights (warm starts, oldest first) and this run's held-out curve; ``heading``
    the Markdown level of its title (deeper for one network of an assembled checkpoint)."""
    from finecut.training.history import cpu_hours, run_summary

    runs = list(training.get("history") or [])
    curve = training.get("validation_curve") or []
    if not runs and not curve:
        return []
    out: list[str] = []
    if runs:
        rows = []
        for i, record in enumerate(runs + [run_summary(training, "this checkpoint")], 1):
            cfg = record.get("config") or {}
            hours = cpu_hours(record)
            crop = f"{cfg.get('small_size')}→{cfg.get('size')}" if cfg.get("small_size") else _fmt(cfg.get("size"))
            val = (record.get("validation") or {}).get("val_noc90@10")
            source = (record.get("name") or "–") + (f" (stage `{record['stage']}`)" if record.get("stage") else "")
            if record.get("rebase"):
                source += f", Object-Net rebased on `{record['rebase']}`"
            if isinstance(record.get("weight_average"), dict):
                source += f" (a weight average {_average_text(record['weight_average'])})"
            rows.append([str(i), source, _fmt(record.get("step")),
                         f"{record['samples_seen']:,}" if isinstance(record.get("samples_seen"), int) else "–",
                         _duration(record.get("train_seconds")), "–" if hours is None else f"{hours:.1f}",
                         crop, ", ".join(cfg.get("sources") or []) or "–", _fmt(val)])
        out += [f"{heading} Run history", "", "Every training run the weights went through, oldest first (each later "
                "run starts from the one before; CPU-hours = wall time × processes × threads):", ""]
        out += _table(["run", "from", "steps", "samples", "wall time", "CPU-hours", "crop", "sources",
                       "held-out NoC90@10"], rows) + [""]
    if curve:
        keys = [k for k in curve[-1] if str(k).startswith("val_")]
        out += ["Held-out curve of this run (validation split of its object bank; earlier runs' numbers came from "
                "their own banks):", ""]
        out += _table(["step"] + keys, [[_fmt(r.get("step"))] + [_fmt(r.get(k), 4) for k in keys] for r in curve])
        out += [""]
    return out


def render_model_card(doc: dict[str, Any], json_path: Path, weights_path: Path,
                      evaluations: Sequence[tuple[Path, dict[str, Any]]] = (),
                      results_root: Path | None = None) -> str:
    """The card's Markdown for a checkpoint config ``doc`` (see :func:`write_model_card`)."""
    model = dict(doc["model"])
    stats = weight_stats(weights_path)
    params = parameter_count(weights_path, model)
    training = doc.get("training") or {}
    title = json_path.parent.name if json_path.stem in ("last", "best") else json_path.stem
    out = [f"{CARD_TITLE}{title}", ""]
    out += [(f"* Checkpoint: `{json_path.with_suffix('')}` (`.json` + `.safetensors`, format "
            f"{doc.get('format_version', '?')})"),
            f"* Engine: `{doc.get('engine', '?')}`",
            f"* Architecture: `{model.get('arch', '?')}`"
            + (f", backbone `{model['backbone']}`" if "backbone" in model else "")
            + (f", head `{model['head']}`" if "head" in model else "")
            + (f", variant `{model['variant']}`" if "variant" in model else ""),
            (f"* Parameters: {params:,} ({params / 1e6:.2f} M); weights file {stats['bytes'] / 2**20:.1f} MiB, "
            f"{stats['tensors']} tensors, {stats['values']:,} values (incl. buffers)"), ""]
    out += ["## Architecture config", ""]
    out += _table(["key", "value"], [[f"`{k}`", f"`{json.dumps(v)}`"] for k, v in model.items()]) + [""]

    out += ["## Training", ""]
    average = training.get("weight_average")
    if isinstance(average, dict):  # finecut.training.average: no training of its own
        out += [f"**A weight average** (`finecut train --average`) {_average_text(average)}: every float tensor the "
                "weighted mean, no training of its own. The training record below is the last checkpoint's.", ""]
    parts = {k: v for k, v in training.items() if k in ("ecp", "hrr") and isinstance(v, dict)}
    if parts:  # an assembled NTClick checkpoint: one training record per network
        for key, record in parts.items():
            out += [f"### {key.upper()}", ""] + _training_section(record) + _history_section(record, "####")
    else:
        out += _training_section(training)
    out += _history_section(training)
    validation = training.get("validation") or {}
    out += ["## Validation (held-out training images, segmentor only)", ""]
    if validation:
        out += _table(["metric", "value"], [[k, f"{float(v):.4f}"] for k, v in validation.items()]) + [""]
    elif int((training.get("config") or {}).get("val_every", -1)) == 0:
        out += ["None recorded: in-training validation was off for this run (`val_every = 0`).", ""]
    else:
        out += ["No validation scores recorded yet.", ""]

    out += ["## Evaluation", ""]
    if results_root is None:
        out += ["No results folder given.", ""]
    elif not evaluations:
        out += [f"No evaluation summary under `{results_root}` names this model.", ""]
    else:
        header = ["dataset", "protocol", "samples", "NoC85", "NoC90", "NoF90"] + [f"mIoU@{k}" for k in MIOU_CLICKS]
        header += ["s/click", "run"]
        rows = [_evaluation_row(p, s, results_root) for p, s in evaluations]
        out += [f"From `{results_root}` (mIoU in %; *ntclick* rows use NTClick's tolerant-click user):", ""]
        out += _table(header, rows) + [""]
        out += _pipeline_lines([p for p, _ in evaluations], results_root)
    return "\n".join(out)


def _run_pipeline(summary_path: Path) -> str | None:
    """The inference-pipeline options recorded in a run's ``config.json`` (beside its summary), as compact JSON."""
    try:
        config = json.loads((summary_path.parent / "config.json").read_text())
        pipeline = config["model"]["config"]["pipeline"]
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return None
    return json.dumps(pipeline, sort_keys=True) if isinstance(pipeline, dict) else None


def _pipeline_lines(summary_paths: Sequence[Path], root: Path) -> list[str]:
    """Which inference options produced the evaluation rows (the engine's defaults can change between runs)."""
    found: dict[str, list[str]] = {}
    for path in summary_paths:
        options = _run_pipeline(path)
        if options is not None:
            found.setdefault(options, []).append(f"`{path.parent.relative_to(root)}`")
    if not found:
        return []
    if len(found) == 1:
        return [f"Inference options of these runs: `{next(iter(found))}`", ""]
    lines = ["Inference options differ between these runs:", ""]
    lines += [f"* `{options}`: {', '.join(runs)}" for options, runs in found.items()]
    return lines + [""]


def write_model_card(checkpoint_json: str | os.PathLike, out_md: str | os.PathLike,
                     results_root: str | os.PathLike | None = None,
                     model_names: Iterable[str] = ()) -> Path:
    """Render the Markdown model card of a checkpoint into ``out_md``; returns its path.

    ``checkpoint_json``: ``NAME.json`` (or ``NAME.safetensors`` / the stem). Evaluation summaries under
    ``results_root`` are included when their ``model`` is the checkpoint's stem or path (what ``finecut evaluate
    --model PATH`` records), or one of ``model_names``.
    """
    json_path, weights_path = checkpoint_paths(checkpoint_json)
    doc = read_checkpoint_config(json_path)
    root = Path(results_root) if results_root is not None else None
    evaluations = find_summaries(root, _names_for(json_path) | set(model_names)) if root is not None else []
    text = render_model_card(doc, json_path, weights_path, evaluations, root) + "\n"
    out = Path(out_md)
    notes = kept_notes(out)
    if notes:
        text = text.rstrip("\n") + "\n\n" + notes
    atomic_write_bytes(out, text.encode("utf-8"), overwrite=True)
    return out


def kept_notes(card: Path) -> str:
    """The hand-written ``## Notes`` section (heading to end of file) of an existing card at ``card``, or "" — what a
    regenerated card keeps, so rerunning ``finecut card`` never loses what a person wrote."""
    lines = read_own_file(card, CARD_TITLE, "a model card").splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.rstrip() == NOTES_HEADING or line.startswith(NOTES_HEADING + " "):  # "## Notes (by hand)" too
            notes = "".join(lines[i:])
            return notes if notes.endswith("\n") else notes + "\n"
    return ""
