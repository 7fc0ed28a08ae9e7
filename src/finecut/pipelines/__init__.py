"""Inference pipelines: per-method logic turning (image, prompts, previous prediction) into probabilities."""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from finecut.engines.base import Engine
from finecut.errors import FinecutError


def build_engine(model: nn.Module, doc: dict[str, Any], **kwargs: Any) -> Engine:
    """Wrap a loaded network in the inference engine named by its checkpoint (``doc["engine"]``)."""
    kind = doc.get("engine", "focalclick")
    kwargs = {**doc.get("pipeline", {}), **kwargs}  # pipeline options stored with the checkpoint, then the caller's
    if kind == "focalclick":
        from finecut.pipelines.focalclick import FocalClickEngine

        return FocalClickEngine(model, name=doc.get("name", "focalclick"), checkpoint=doc, **kwargs)
    if kind in ("simpleclick", "ritm"):
        from finecut.pipelines.focalclick import FocalClickEngine

        # SimpleClick / RITM: zoom-in on a single network, no refiner, no progressive merge
        options = {"progressive_merge": False, **kwargs}
        return FocalClickEngine(model, name=doc.get("name", kind), checkpoint=doc, **options)
    if kind == "ntclick":
        from finecut.pipelines.ntclick import NTClickEngine

        return NTClickEngine(model, name=doc.get("name", "ntclick"), checkpoint=doc, **kwargs)
    raise FinecutError(f"checkpoint names an unknown engine {kind!r}")
