"""A checkpoint's training history: the runs it descends from (warm starts) and its held-out validation curve.

Every ``finecut train`` checkpoint records its own run under ``training``; a run started from another checkpoint
(``init_checkpoint``) also carries that checkpoint's record, and its history, under ``training.history`` (oldest
first), so a model card can list every run that went into the weights. ``training.validation_curve`` holds the
held-out validation records of the run's ``log.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finecut.training.config import flat_config

#: Keys of a run's training record kept in a descendant's history (the config is reduced to the recipe's essentials;
#: ``weight_average``: the run's weights were an average, :mod:`finecut.training.average`, not its last step alone).
RECORD_KEYS = ("step", "samples_seen", "train_seconds", "processes", "validation", "validation_curve", "weight_average")
CONFIG_KEYS = ("steps", "batch_size", "size", "small_size", "full_size_from", "small_every", "small_refiner_size", "lr",
               "backbone_lr_mult", "threads", "pretrained", "init_checkpoint", "seed", "distill_checkpoint")


def training_stage(config: dict[str, Any]) -> str:
    """What part of a staged network a run trained, from its recorded config: FocalClick-XL's ``object`` (Object-Net,
    clicks prompting layer, context adapters; ``object+box+...`` when it trained other forms jointly), ``detail``
    (Detail-Net) or ``prompting:FORM`` (one prompting layer); "" for a run that trains its whole network."""
    xl = config.get("focalclick_xl")
    if not isinstance(xl, dict) or not xl.get("stage"):
        return ""
    stage = str(xl["stage"])
    if stage == "prompting":
        return f"prompting:{xl.get('form', '?')}"
    joint = [str(form) for form in xl.get("joint_forms") or {}]
    return "+".join([stage, *joint])  # e.g. object+box: the object stage that also trained the box form


def run_summary(training: dict[str, Any], name: str = "") -> dict[str, Any]:
    """The parts of one run's training record that a history keeps (with its :func:`training_stage`, if any)."""
    cfg = flat_config(training.get("config") or {})
    data = cfg.get("data") or {}
    out: dict[str, Any] = {"name": name} if name else {}
    stage = training_stage(training.get("config") or {})
    if stage:
        out["stage"] = stage
    xl = (training.get("config") or {}).get("focalclick_xl")
    if isinstance(xl, dict) and xl.get("rebase_object"):
        out["rebase"] = str(xl["rebase_object"])  # the run replaced its start's Object-Net by this segmentor
    out.update({k: training[k] for k in RECORD_KEYS if k in training})
    out["config"] = {k: cfg[k] for k in CONFIG_KEYS if k in cfg}
    out["config"]["sources"] = list(data.get("sources") or [])
    out["config"]["weights"] = list(data.get("weights") or [])
    return out


def inherited_history(init_doc: dict[str, Any] | None, init_name: str = "") -> list[dict[str, Any]]:
    """The history a run started from ``init_doc`` (a checkpoint's JSON) inherits: its runs, then itself."""
    if not init_doc:
        return []
    training = init_doc.get("training") or {}
    if not training:
        return []
    earlier = list(training.get("history") or [])
    return earlier + [run_summary(training, init_name or str(init_doc.get("name", "")))]


def validation_curve(log_path: str | Path) -> list[dict[str, Any]]:
    """The held-out validation records (``val_*`` keys with their step) of a run's ``log.jsonl``."""
    path = Path(log_path)
    if not path.is_file():
        return []
    curve = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if isinstance(record, dict) and any(str(k).startswith("val_") for k in record):
            curve.append(record)
    return curve


def cpu_hours(record: dict[str, Any]) -> float | None:
    """Core-hours of a run: wall training time x processes x threads per process."""
    seconds = record.get("train_seconds")
    if seconds is None:
        return None
    threads = (record.get("config") or {}).get("threads", 1) or 1
    return float(seconds) * int(record.get("processes", 1) or 1) * int(threads) / 3600.0
