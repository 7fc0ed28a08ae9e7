"""The HRNet + OCR feature extractor shared by RITM and FocalClick (``modeling/hrnet_ocr.py``, ``ocr.py``).

Official layout under ``feature_extractor.``: ``conv1/bn1/conv2/bn2`` stem, ``layer1`` bottlenecks, ``transitionK``,
``stageK.M.branches`` / ``stageK.M.fuse_layers`` and the OCR head (``conv3x3_ocr``, ``aux_head``,
``ocr_distri_head.object_context_block.{f_pixel,f_object,f_down,f_up}``, ``ocr_distri_head.conv_bn_dropout``,
``cls_head``); the clicks enter through ``maps_transform`` (1x1 conv -> 16, activation, 3x3 stride-2 conv -> 64,
``ScaleLayer``) added after the first stem conv (``Conv1S``). finecut's :class:`~finecut.models.backbones.hrnet.
HRNetW18Small` (``stem_layers=1``) and :class:`~finecut.models.heads.OCRHead` use the same submodule names.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from finecut.errors import FinecutError

PREFIX = "feature_extractor."
_BACKBONE_PARTS = ("conv1.", "bn1.", "conv2.", "bn2.", "layer1.", "transition1.", "transition2.", "transition3.",
                   "stage2.", "stage3.", "stage4.")
_HEAD_PARTS = ("conv3x3_ocr.", "aux_head.", "ocr_distri_head.", "cls_head.")


def is_hrnet(state: dict[str, torch.Tensor]) -> bool:
    return f"{PREFIX}conv1.weight" in state and f"{PREFIX}layer1.0.conv1.weight" in state


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def hrnet_layout(state: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    """Width, blocks per unit, modules per stage and OCR widths read from the weights' shapes."""
    key = f"{PREFIX}transition1.0.0.weight"
    if key not in state:
        raise FinecutError(f"{source}: not an HRNet checkpoint (no {key!r})")
    if f"{PREFIX}conv3x3_ocr.0.weight" not in state:
        raise FinecutError(f"{source}: HRNet without the OCR head (ocr_width=0) is not supported; the released "
                           "RITM and FocalClick HRNets have it")
    width = int(state[key].shape[0])
    num_blocks = _count(state, rf"{PREFIX}layer1\.(\d+)\.")
    modules = [_count(state, rf"{PREFIX}stage{k}\.(\d+)\.") for k in (2, 3, 4)]
    mid = int(state[f"{PREFIX}conv3x3_ocr.0.weight"].shape[0])
    key_channels = int(state[f"{PREFIX}ocr_distri_head.object_context_block.f_pixel.0.weight"].shape[0])
    if key_channels != mid // 2:
        raise FinecutError(f"{source}: OCR key width {key_channels} is not half the mid width {mid} (ocr_width)")
    small = num_blocks == 2 and modules == [1, 3, 2]
    big = num_blocks == 4 and modules == [1, 4, 3]
    name = f"hrnet{width}" + ("s" if small else "") if (small or big) else f"hrnet{width}-custom"
    return {"width": width, "num_blocks": num_blocks, "stage_modules": modules, "ocr_mid": mid, "name": name}


def hrnet_renames(backbone: str, head: str) -> list[tuple[str, str]]:
    """Official ``feature_extractor.*`` prefixes -> finecut ``backbone`` / ``head`` prefixes."""
    renames = [(PREFIX + part, backbone + part) for part in _BACKBONE_PARTS]
    renames += [(PREFIX + part, head + part) for part in _HEAD_PARTS]
    return renames


def conv1s_renames(fusion: str) -> list[tuple[str, str]]:
    """``maps_transform`` (Conv1S) -> finecut's :class:`~finecut.models.layers.ClickFusion` ``net``."""
    return [(f"maps_transform.{i}.", f"{fusion}net.{i}.") for i in (0, 2, 3)]


def scale_value(value: torch.Tensor) -> torch.Tensor:
    """The official ``ScaleLayer`` multiplies by ``|scale|`` (a 1-element tensor); finecut's by a 0-d ``scale``."""
    return value.reshape(()).abs()


def segmentor_options(layout: dict[str, Any], activation: str) -> dict[str, Any]:
    return {
        "backbone_options": {"width": layout["width"], "num_blocks": layout["num_blocks"],
                             "stage_modules": layout["stage_modules"], "stem_layers": 1},
        "fusion_activation": activation,
        "align_corners": True,
    }


def fusion_activation(params: dict[str, Any]) -> str:
    """The Conv1S activation: the released configs all set ``use_leaky_relu=True``; a config saying otherwise wins."""
    return "relu" if params.get("use_leaky_relu") is False else "leaky_relu"


__all__ = ["PREFIX", "conv1s_renames", "fusion_activation", "hrnet_layout", "hrnet_renames", "is_hrnet",
           "scale_value", "segmentor_options"]
