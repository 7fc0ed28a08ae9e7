"""Starting a new network from the trained default's segmentor: what FocalClick-XL's Object-Net and NTClick's
EfficientNet ECP share — reading a FocalClick checkpoint with its prompt layout, taking a prompt-fusion conv's input
columns by channel name, and reporting what was copied."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from finecut.errors import FinecutError
from finecut.model_inputs import check_layout, leading_layout
from finecut.models.pretrained import (
    checkpoint_paths,
    read_checkpoint_config,
    read_state_dict,
)

#: The architectures whose checkpoints hold a FocalClick segmentor.
FOCALCLICK_ARCHS = ("focalclick", "focalclick_segmentor")


@dataclass
class WarmStartReport:
    """Target tensors copied as they are, target tensors derived from a selection of the source (``sliced``: prompt
    columns picked by channel name, a classifier reshaped), target tensors left at init, and source tensors unused."""

    copied: list[str] = field(default_factory=list)
    sliced: list[str] = field(default_factory=list)
    left_at_init: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"copied {len(self.copied)} tensors, {len(self.sliced)} sliced (prompt channels by name), "
                f"{len(self.left_at_init)} left at init, {len(self.unused)} source tensors unused")

    def to_json(self) -> dict[str, Any]:
        return {"copied": len(self.copied), "sliced": len(self.sliced), "left_at_init": list(self.left_at_init),
                "unused": len(self.unused)}


def read_focalclick_segmentor(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """A FocalClick checkpoint's tensors and its prompt layout (stored in the JSON, else derived from
    ``prompt_channels``), from ``NAME`` / ``NAME.json`` / ``NAME.safetensors``."""
    doc = read_checkpoint_config(path)
    json_path, weights_path = checkpoint_paths(path)
    model = doc["model"]
    if model.get("arch") not in FOCALCLICK_ARCHS:
        raise FinecutError(f"{json_path}: not a FocalClick checkpoint (arch {model.get('arch')!r})")
    inputs = doc.get("inputs")
    if isinstance(inputs, dict) and "prompt_layout" in inputs:
        layout = check_layout(inputs["prompt_layout"])
    else:
        layout = leading_layout(int(model.get("prompt_channels", 4)))
    return read_state_dict(weights_path), layout


def focalclick_source(source: str | os.PathLike[str] | Mapping[str, torch.Tensor],
                      layout: Sequence[str] | None = None) -> tuple[dict[str, torch.Tensor], tuple[str, ...], str]:
    """What a warm start from a FocalClick segmentor reads: its tensors, its prompt layout (``layout`` when given,
    else the checkpoint's, else the four canonical channels for a state dict) and the key prefix of its segmentor
    (``"segmentor."`` in a full FocalClick net, ``""`` in a bare segmentor). ``source`` is a checkpoint path
    (``NAME`` / ``NAME.json`` / ``NAME.safetensors``) or a state dict."""
    if isinstance(source, Mapping):
        state = dict(source)
        source_layout = check_layout(layout) if layout is not None else leading_layout(4)
    else:
        state, source_layout = read_focalclick_segmentor(source)
        if layout is not None:
            source_layout = check_layout(layout)
    prefix = "segmentor." if any(k.startswith("segmentor.") for k in state) else ""
    return state, source_layout, prefix


def prompt_columns(value: torch.Tensor, init: torch.Tensor, source_layout: Sequence[str],
                   target_layout: Sequence[str]) -> torch.Tensor | None:
    """A prompt-fusion conv weight for ``target_layout``: ``init`` with each input column whose channel the source
    has taken from ``value`` (laid out as ``source_layout``); None when the shapes do not fit or no channel is shared
    (the target keeps its init)."""
    if (value.ndim != 4 or value.shape[1] != len(source_layout) or value.shape[0] != init.shape[0]
            or value.shape[2:] != init.shape[2:]):
        return None
    picked = [i for i, channel in enumerate(target_layout) if channel in source_layout]
    if not picked:
        return None
    out = init.clone()
    for i in picked:
        out[:, i] = value[:, list(source_layout).index(target_layout[i])]
    return out


__all__ = ["FOCALCLICK_ARCHS", "WarmStartReport", "prompt_columns", "read_focalclick_segmentor"]
