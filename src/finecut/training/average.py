"""Weight averaging ("model soup"): one checkpoint whose every tensor is the weighted mean of the same tensor in
several checkpoints of one architecture — typically checkpoints of one lineage (a run and its continuation), which lie
in one basin, so their average is a model of its own, often a better one than either (Wortsman et al., 2022).

``finecut train --average A B [...] --average-out OUT`` (:func:`average_checkpoints`). Floating-point tensors
(BatchNorm statistics included) are averaged; integer ones (BatchNorm's ``num_batches_tracked``) are taken from the
last checkpoint. The result keeps the last checkpoint's training record (its run history, for the model card) with a
``weight_average`` entry naming every source and weight, and the first checkpoint's engine and pipeline options.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from finecut.errors import FinecutError
from finecut.models.checkpoint import load_checkpoint, refuse_existing_checkpoint, save_checkpoint

#: Keys of a checkpoint's JSON that describe the network itself (rewritten by :func:`save_checkpoint`).
_OWN_KEYS = ("format_version", "model", "inputs")


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]],
                        weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """The weighted mean of ``states`` (same keys and shapes), floating tensors only; integer tensors from the last."""
    if len(states) != len(weights) or not states:
        raise FinecutError(f"{len(states)} checkpoints and {len(weights)} weights: give one weight per checkpoint")
    keys = list(states[0])
    for i, state in enumerate(states[1:], 1):
        if list(state) != keys:
            missing, extra = sorted(set(keys) - set(state)), sorted(set(state) - set(keys))
            raise FinecutError(f"checkpoint {i + 1} has other tensors than the first (missing {missing[:5]}, "
                               f"extra {extra[:5]})")
    out = {}
    for key in keys:
        tensors = [state[key] for state in states]
        if any(t.shape != tensors[0].shape for t in tensors):
            raise FinecutError(f"tensor {key!r} has shapes {[tuple(t.shape) for t in tensors]}")
        if tensors[0].is_floating_point():
            out[key] = sum(float(w) * t.double() for w, t in zip(weights, tensors)).to(tensors[0].dtype)
        else:
            out[key] = tensors[-1].clone()
    return out


def average_checkpoints(paths: Sequence[str | os.PathLike], out_path: str | os.PathLike,
                        weights: Sequence[float] | None = None, name: str | None = None,
                        overwrite: bool = False) -> Path:
    """Write the weighted average (uniform by default; ``weights`` are normalised to sum 1) of the checkpoints at
    ``paths`` (paths or shipped names, all of one architecture config) to ``out_path``; returns its JSON path. An
    existing checkpoint at ``out_path`` is refused (before any loading) unless ``overwrite``."""
    from finecut.registry import shipped_checkpoints

    if len(paths) < 2:
        raise FinecutError("averaging needs at least two checkpoints")
    if not overwrite:
        refuse_existing_checkpoint(out_path)
    weights = [1.0] * len(paths) if weights is None else [float(w) for w in weights]
    if len(weights) != len(paths) or not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise FinecutError(f"weights {weights}: one finite non-negative weight per checkpoint, not all zero")
    total = sum(weights)
    weights = [w / total for w in weights]
    shipped = shipped_checkpoints()
    nets, docs = [], []
    for path in paths:
        net, doc = load_checkpoint(shipped.get(str(path), path))
        nets.append(net)
        docs.append(doc)
    for path, doc in zip(paths[1:], docs[1:]):
        if doc["model"] != docs[0]["model"]:
            raise FinecutError(f"{path}: its model config {doc['model']} differs from {paths[0]}'s {docs[0]['model']}")
    net = nets[-1]
    net.load_state_dict(average_state_dicts([n.state_dict() for n in nets], weights))
    out_path = Path(out_path)
    meta: dict[str, Any] = {k: v for k, v in docs[0].items() if k not in _OWN_KEYS and k != "training"}
    meta["name"] = name or out_path.name.removesuffix(".json")
    training = dict(docs[-1].get("training") or {})
    training["weight_average"] = {"of": [str(p) for p in paths], "weights": weights,
                                  "steps": [d.get("training", {}).get("step") for d in docs]}
    meta["training"] = training
    meta.pop("card", None)
    json_path, _ = save_checkpoint(out_path, net, docs[0]["model"], meta, overwrite=overwrite)
    return json_path
