"""Evaluate one engine on one dataset: the loop over samples, the run folder, resume, and the reports.

A run folder holds ``config.json`` (everything needed to reproduce the run), ``samples.jsonl`` (one line per sample,
appended as the run goes so an interrupted run keeps its work), ``summary.json``, ``summary.md`` and ``miou.png``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finecut.engines.base import Engine
from finecut.errors import FinecutError
from finecut.evaluation.config import EvalConfig, pct
from finecut.evaluation.loop import PromptNotSupported, SampleResult, evaluate_sample
from finecut.evaluation.perturb import CoarseMasks, SimulatedInitMasks
from finecut.evaluation.scribbles import HumanScribbles
from finecut.evaluation.report import plot_miou, summary_markdown
from finecut.evaluation.runinfo import run_info
from finecut.evaluation.summary import summarize
from finecut.io import atomic_write_bytes
from finecut.predictor import Predictor

if TYPE_CHECKING:
    from finecut.datasets.base import Sample

CONFIG_FILE = "config.json"
SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.json"
SUMMARY_MD = "summary.md"
PLOT_FILE = "miou.png"
RUN_FILES = (CONFIG_FILE, SAMPLES_FILE, SUMMARY_FILE, SUMMARY_MD, PLOT_FILE)

InitMaskSource = Callable[["Sample"], np.ndarray]


@dataclass
class RunResult:
    """A finished run: its folder (None when nothing was written), summary and per-sample results in dataset order."""

    out_dir: Path | None
    summary: dict[str, Any]
    results: list[SampleResult]
    config: dict[str, Any]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _dump(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=False) + "\n").encode()


def _sample_names(dataset: Sequence[Sample], count: int) -> list[str] | None:
    refs = getattr(dataset, "refs", None)
    if refs is None:
        return None
    return [str(ref.name) for ref in list(refs)[:count]]


def _prepare_dir(out_dir: Path, identity: dict[str, Any], resume: bool, overwrite: bool) -> dict[str, SampleResult]:
    """Create or check the run folder; return the results already done there (on resume)."""
    check_run_dir(out_dir, resume, overwrite)
    if not (out_dir.is_dir() and any(out_dir.iterdir())):
        out_dir.mkdir(parents=True, exist_ok=True)
        return {}
    if overwrite:
        for name in RUN_FILES:
            (out_dir / name).unlink(missing_ok=True)
        return {}
    config_path = out_dir / CONFIG_FILE
    if not config_path.is_file():
        raise FinecutError(f"{out_dir}: cannot resume, it holds no {CONFIG_FILE}")
    try:
        previous = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FinecutError(f"{config_path}: unreadable run config ({exc})") from exc
    old = previous.get("identity")
    if old != identity:
        diff = _differences(old if isinstance(old, dict) else {}, identity)
        raise FinecutError(
            f"{out_dir}: cannot resume, the run there used a different {'; '.join(diff[:4]) or 'configuration'} "
            "(use another --out folder or --overwrite)"
        )
    return _read_done(out_dir / SAMPLES_FILE)


def check_run_dir(out_dir: str | os.PathLike, resume: bool = False, overwrite: bool = False) -> None:
    """Fail early, before any work, if ``out_dir`` holds files and neither ``resume`` nor ``overwrite`` is set."""
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise FinecutError(f"{path}: output path exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not (resume or overwrite):
        raise FinecutError(
            f"{path}: output folder is not empty (pass --resume to continue that run or --overwrite to replace it)"
        )


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differing leaves of two nested dicts: ``"protocol.threshold (0.49 there, 0.5 now)"``."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, name + ".")
        elif a != b:
            out.append(f"{name} ({json.dumps(a)} there, {json.dumps(b)} now)")
    return out


def _read_done(path: Path) -> dict[str, SampleResult]:
    """Results recorded in ``samples.jsonl``; a truncated last line (an interrupted write) is dropped."""
    if not path.is_file():
        return {}
    lines = path.read_text().splitlines()
    done: dict[str, SampleResult] = {}
    kept: list[str] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = SampleResult.from_json(json.loads(line))
        except (json.JSONDecodeError, FinecutError) as exc:
            if lineno == len(lines):
                break
            raise FinecutError(f"{path}:{lineno}: corrupt per-sample record ({exc})") from exc
        done[record.name] = record
        kept.append(line)
    if len(kept) != sum(1 for line in lines if line.strip()):
        atomic_write_bytes(path, "".join(k + "\n" for k in kept).encode(), overwrite=True)
    return done


def default_init_source(config: EvalConfig) -> InitMaskSource | None:
    """The initial-mask source a protocol brings itself: the coarse protocol's coarse masks, the correction
    protocol's seeded superpixel-defect masks; None for the others."""
    if config.protocol == "coarse":
        return CoarseMasks(config.seed, config.coarse_band or (0.0, 1.0))
    if config.protocol == "correction":
        return SimulatedInitMasks(config.seed, config.init_band, config.defect_probabilities)
    return None


def _init_mask_for(sample: Sample, config: EvalConfig, init_masks: InitMaskSource | None) -> np.ndarray | None:
    if init_masks is not None and (config.mask_correction or config.protocol == "coarse"):
        return init_masks(sample)
    if not config.mask_correction:
        return None
    if sample.init_mask is None:
        raise FinecutError(
            f"sample {sample.name}: mask correction needs an initial mask, and this dataset gives none "
            "(pass a folder of initial masks)"
        )
    return np.asarray(sample.init_mask, dtype=bool)


def run_evaluation(
    engine: Engine,
    dataset: Sequence[Sample],
    out_dir: str | os.PathLike | None = None,
    config: EvalConfig | None = None,
    *,
    model_name: str | None = None,
    dataset_name: str | None = None,
    dataset_root: str | os.PathLike | None = None,
    init_masks: InitMaskSource | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> RunResult:
    """Evaluate ``engine`` on ``dataset`` under the standard protocol and (if ``out_dir``) write the run folder.

    ``dataset`` is a :class:`finecut.datasets.base.Dataset` (or any sequence of samples). ``init_masks`` (a
    callable sample -> bool mask, e.g. :class:`~finecut.evaluation.init_masks.InitMaskFolder`) turns on mask
    correction; with ``config.mask_correction`` and no ``init_masks``, each sample's own ``init_mask`` is used.
    ``resume`` skips samples already in ``out_dir/samples.jsonl`` when the run there has the same configuration;
    ``overwrite`` replaces a previous run's files. Without either, a non-empty ``out_dir`` is refused.

    The FocalClick-XL protocols (``config.protocol``) bring their own sources: the coarse protocol its seeded coarse
    masks, the correction protocol its seeded superpixel-defect initial masks (an ``init_masks`` source replaces
    either), the scribble protocol the human first scribbles of ``config.scribble_start``. When the engine refuses the
    protocol's prompt type on the first sample (:class:`~finecut.evaluation.loop.PromptNotSupported`), the run stops
    and its summary says ``"not_supported"`` with the engine's reason.
    """
    config = config or EvalConfig()
    if init_masks is not None and not config.mask_correction and config.protocol != "coarse":
        config = replace(config, mask_correction=True)
    if init_masks is None:
        init_masks = default_init_source(config)
    human = HumanScribbles(config.scribble_start) if config.scribble_start else None
    name = str(dataset_name or getattr(dataset, "name", "dataset"))
    total = len(dataset)
    if total == 0:
        raise FinecutError(f"dataset {name}: no samples to evaluate")
    count = min(total, config.limit) if config.limit else total
    root = dataset_root if dataset_root is not None else getattr(dataset, "root", None)
    model = str(model_name or engine.name)
    names = _sample_names(dataset, count)
    if names is not None and len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise FinecutError(f"dataset {name}: two samples are named {dup!r}; sample names must be unique")

    protocol = config.to_dict()
    identity = _jsonable(
        {
            "model": {"name": model, "config": engine.config()},
            "dataset": name,
            "protocol": {k: v for k, v in protocol.items() if k != "limit"},
            "init_masks": repr(init_masks) if init_masks is not None else None,
        }
    )
    info = run_info()
    full_config = _jsonable(
        {
            "model": identity["model"],
            "dataset": {"name": name, "root": None if root is None else str(root), "count": count, "total": total},
            "protocol": protocol,
            "init_masks": identity["init_masks"],
            **info,
            "identity": identity,
        }
    )

    out = Path(out_dir) if out_dir is not None else None
    done: dict[str, SampleResult] = {}
    if out is not None:
        done = _prepare_dir(out, identity, resume, overwrite)
        atomic_write_bytes(out / CONFIG_FILE, _dump(full_config), overwrite=True)

    from tqdm import tqdm

    predictor = Predictor(engine, honour_clicks=config.honour_clicks)
    results: list[SampleResult] = []
    bar = tqdm(total=count, desc=f"{model} / {name}", unit="sample", disable=not progress, dynamic_ncols=True)
    samples_file = open(out / SAMPLES_FILE, "a", encoding="utf-8") if out is not None else None
    key90 = pct(0.90)
    not_supported: PromptNotSupported | None = None
    try:
        for index in range(count):
            known = names[index] if names is not None else None
            if known is not None and known in done:
                results.append(done[known])
                bar.update(1)
                continue
            sample = dataset[index]
            if sample.name in done:
                results.append(done[sample.name])
                bar.update(1)
                continue
            init = _init_mask_for(sample, config, init_masks)
            first = human(sample) if human is not None else None
            try:
                result = evaluate_sample(predictor, sample, config, index=index, init_mask=init, first_scribbles=first)
            except PromptNotSupported as exc:
                not_supported = exc
                break
            results.append(result)
            if samples_file is not None:
                samples_file.write(json.dumps(result.to_json(), separators=(",", ":")) + "\n")
                samples_file.flush()
                os.fsync(samples_file.fileno())
            nocs = [r.noc.get(key90) for r in results if r.noc.get(key90) is not None]
            clicks = sum(r.num_clicks for r in results)
            postfix = {"s/click": f"{sum(r.seconds for r in results) / max(clicks, 1):.3f}"}
            if nocs:
                postfix["NoC90"] = f"{np.mean(nocs):.2f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
    finally:
        bar.close()
        if samples_file is not None:
            samples_file.close()
        predictor.reset_image()

    if not_supported is not None:
        results = []
        if samples_file is not None:
            (out / SAMPLES_FILE).unlink(missing_ok=True)  # type: ignore[operator]
    summary = {"model": model, "dataset": name, **summarize(results, config)}
    if not_supported is not None:
        summary["not_supported"] = str(not_supported)
    summary["host_cpu"] = info["host"]["cpu"]
    summary["finecut_version"] = info["finecut_version"]
    summary["git_commit"] = info["git_commit"]
    summary["date"] = info["date"]
    if out is not None:
        summary["run"] = out.name
        atomic_write_bytes(out / SUMMARY_FILE, _dump(summary), overwrite=True)
        atomic_write_bytes(out / SUMMARY_MD, summary_markdown(summary, full_config).encode(), overwrite=True)
        if summary["miou"]:
            plot_miou({model: summary["miou"]}, out / PLOT_FILE, title=f"{model} on {name}")
        else:
            (out / PLOT_FILE).unlink(missing_ok=True)
    return RunResult(out_dir=out, summary=summary, results=results, config=full_config)
