"""Renaming an official state dict onto a finecut model's keys, with every key accounted for.

A :class:`Plan` lists prefix renames (official prefix -> finecut prefix, first match wins), the official keys that the
official forward never uses (with the reason), and per-key value transforms. :func:`convert_state` applies it and
checks the result against the finecut model's own state dict: any official key that is neither renamed nor known to
be unused, any finecut key left empty, and any shape mismatch raise one :class:`FinecutError` naming them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from finecut.errors import FinecutError

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Plan:
    """How one official layout maps onto a finecut model (built by the per-family planners)."""

    layout: str  # e.g. "simpleclick-vit-b"
    model_config: dict[str, Any]  # {"arch": ..., ...} for finecut.models.registry.build_model
    engine: str  # inference engine kind for finecut.registry.build_engine (an ENGINES entry)
    pipeline: dict[str, Any]  # engine options matching the official inference
    renames: list[tuple[str, str]]
    unused: list[tuple[str, str]] = field(default_factory=list)  # (official prefix, why the official code ignores it)
    transforms: dict[str, Transform] = field(default_factory=dict)  # finecut key -> value transform
    notes: list[str] = field(default_factory=list)


@dataclass
class ConversionReport:
    """What :func:`convert_state` did: ``pairs`` (finecut key -> official key), ``unused`` (official key -> why it
    was left out), ``filled`` (finecut BatchNorm step counters absent from the file, set to 0)."""

    layout: str
    pairs: dict[str, str] = field(default_factory=dict)
    unused: dict[str, str] = field(default_factory=dict)
    filled: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.layout}: {len(self.pairs)} tensors mapped, {len(self.unused)} official tensors unused by the "
                f"official forward, {len(self.filled)} BatchNorm counters filled")


def _rename(key: str, renames: list[tuple[str, str]]) -> str | None:
    for old, new in renames:
        if key == old or (old.endswith(".") and key.startswith(old)):
            return new + key[len(old):]
    return None


def _unused_reason(key: str, unused: list[tuple[str, str]]) -> str | None:
    for prefix, why in unused:
        if key == prefix or (prefix.endswith(".") and key.startswith(prefix)):
            return why
    return None


def _listing(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def convert_state(
    state: dict[str, torch.Tensor],
    plan: Plan,
    target: dict[str, torch.Tensor],
    source: str | os.PathLike[str] = "checkpoint",
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Rename ``state`` by ``plan`` onto the keys and shapes of ``target`` (a finecut model's state dict, may live
    on the meta device). Floating tensors become float32. Raises :class:`FinecutError` naming every unmapped
    official key, every finecut key left empty and every shape mismatch."""
    report = ConversionReport(plan.layout)
    mapped: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    unknown: list[str] = []
    mismatched: list[str] = []
    duplicated: list[str] = []
    for key, value in state.items():
        why = _unused_reason(key, plan.unused)
        if why is not None:
            report.unused[key] = why
            continue
        new = _rename(key, plan.renames)
        if new is None:
            unmapped.append(key)
            continue
        if new not in target:
            unknown.append(f"{key} -> {new}")
            continue
        if new in plan.transforms:
            value = plan.transforms[new](value)
        if value.is_floating_point():
            value = value.float()
        if tuple(value.shape) != tuple(target[new].shape):
            mismatched.append(f"{key} {tuple(value.shape)} vs finecut {new} {tuple(target[new].shape)}")
            continue
        if new in mapped:
            duplicated.append(f"{key} -> {new}")
            continue
        mapped[new] = value
        report.pairs[new] = key
    missing = []
    for key, like in target.items():
        if key in mapped:
            continue
        if key.endswith("num_batches_tracked"):
            mapped[key] = torch.zeros(like.shape, dtype=like.dtype)
            report.filled.append(key)
        else:
            missing.append(key)
    problems = []
    if unmapped:
        problems.append(f"{len(unmapped)} official key(s) with no finecut counterpart: {_listing(unmapped)}")
    if unknown:
        problems.append(f"{len(unknown)} key(s) renamed to names finecut's model lacks: {_listing(unknown)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_listing(mismatched)}")
    if duplicated:
        problems.append(f"{len(duplicated)} key(s) mapped twice: {_listing(duplicated)}")
    if missing:
        problems.append(f"{len(missing)} finecut key(s) missing from the checkpoint: {_listing(missing)}")
    if problems:
        raise FinecutError(f"{source}: not a loadable {plan.layout} checkpoint; " + "; ".join(problems))
    return mapped, report


__all__ = ["ConversionReport", "Plan", "Transform", "convert_state"]
