"""Loaders for the official released checkpoints of SimpleClick, FocalClick (ClickSEG) and RITM.

``load_official(path, arch=None)`` reads a release file (``{"config", "state_dict"}`` or a bare state dict), tells
the family and variant from its keys and shapes (``arch`` names or checks them, see :mod:`.spec`), builds the
matching finecut network (on the meta device, so even ViT-H is not initialised twice), renames every official key
onto it (:mod:`.convert`; anything unmapped, missing or misshaped is an error naming it), loads it with
``strict=True`` and returns ``(model, checkpoint doc, report)``. The doc is what a finecut checkpoint's JSON holds
(``model``, ``inputs``, ``engine``, ``pipeline``), so ``save_checkpoint(path, model, doc["model"], ...)`` turns the
release into a finecut checkpoint. Wrapping the model in its inference engine is the loader's job:
``finecut.load_model(PATH, arch=...)`` and ``NAME:checkpoint=PATH`` (:func:`finecut.registry.load_official_engine`).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn

from finecut.errors import FinecutError
from finecut.model_inputs import input_spec
from finecut.models.official.clickseg import is_clickseg, plan_clickseg
from finecut.models.official.convert import ConversionReport, Plan, convert_state
from finecut.models.official.hrnet import is_hrnet
from finecut.models.official.reader import read_official_checkpoint
from finecut.models.official.ritm import plan_ritm
from finecut.models.official.simpleclick import is_simpleclick, plan_simpleclick
from finecut.models.official.spec import OFFICIAL_ARCHS, ArchSpec, is_official_arch, parse_arch
from finecut.models.registry import build_model
from finecut.registration import Registry

#: The conversion planner of each official family.
PLANNERS = Registry("official family")
PLANNERS.add("simpleclick", plan_simpleclick, "SimpleClick releases (plain ViT)")
PLANNERS.add("focalclick", plan_clickseg, "ClickSEG / FocalClick releases (SegFormer, HRNet)")
PLANNERS.add("ritm", plan_ritm, "RITM releases (HRNet + OCR)")


def detect_family(state: dict[str, torch.Tensor]) -> str | None:
    """``"simpleclick"``, ``"focalclick"`` or ``"ritm"`` from an official state dict's keys; None if none fits."""
    if is_simpleclick(state):
        return "simpleclick"
    if is_clickseg(state):
        return "focalclick"
    if is_hrnet(state):
        return "ritm"
    return None


def plan_official(state: dict[str, torch.Tensor], params: dict[str, Any], arch: str | None = None,
                  source: str | os.PathLike[str] = "checkpoint") -> Plan:
    """The :class:`Plan` for an official state dict (``params``: the checkpoint's config, may be empty)."""
    source = str(source)
    spec: ArchSpec | None = parse_arch(arch) if arch else None
    family = detect_family(state)
    if family is None:
        sample = ", ".join(sorted(state)[:5])
        raise FinecutError(f"{source}: not an official SimpleClick / FocalClick / RITM checkpoint "
                           f"(keys: {sample}, ...)")
    if spec is not None and spec.family != family:
        raise FinecutError(f"{source}: arch {arch!r} names {spec.family}, but the weights are a {family} checkpoint")
    return PLANNERS[family](state, params, spec, source)


def convert_official(state: dict[str, torch.Tensor], params: dict[str, Any], arch: str | None = None,
                     source: str | os.PathLike[str] = "checkpoint",
                     ) -> tuple[nn.Module, dict[str, Any], ConversionReport]:
    """Build the finecut model for an official state dict and load it strictly; see :func:`load_official`."""
    plan = plan_official(state, params, arch, source)
    with torch.device("meta"):
        model = build_model(plan.model_config)
    mapped, report = convert_state(state, plan, model.state_dict(), source)
    model.load_state_dict(mapped, strict=True, assign=True)
    left = [name for name, tensor in list(model.named_parameters()) + list(model.named_buffers()) if tensor.is_meta]
    if left:
        raise FinecutError(f"{source}: finecut tensors left unfilled: {', '.join(left[:8])}")
    model.eval()
    doc: dict[str, Any] = {
        "format_version": 1,
        "name": plan.layout,
        "model": plan.model_config,
        "inputs": input_spec(model).to_json(),
        "engine": plan.engine,
        "pipeline": dict(plan.pipeline),
        "source": {"official": plan.layout, "checkpoint": str(source), "notes": list(plan.notes)},
    }
    return model, doc, report


def load_official(path: str | os.PathLike[str], arch: str | None = None,
                  ) -> tuple[nn.Module, dict[str, Any], ConversionReport]:
    """``(model in eval mode, checkpoint doc, report)`` for an official release file at ``path``."""
    state, params = read_official_checkpoint(path)
    return convert_official(state, params, arch, path)


__all__ = [
    "OFFICIAL_ARCHS",
    "ConversionReport",
    "Plan",
    "convert_official",
    "detect_family",
    "is_official_arch",
    "load_official",
    "parse_arch",
    "plan_official",
    "read_official_checkpoint",
]
