"""Segmentor backbones for FocalClick-style models, built by name, plus local-checkpoint loading helpers.

A segmentor backbone exposes ``stem_channels``, ``stem_stride``, ``out_channels``, ``out_strides``,
``forward_stem(rgb)`` and ``forward_body(x) -> list[Tensor]`` so that click maps can be fused after the stem
(RITM "Conv1S"): ``feats = backbone.forward_body(backbone.forward_stem(rgb) + click_fusion(prompt_maps))``.

``build_backbone("efficientnet_lite0")`` (also ``_lite1``, ``_lite2``), ``"mit_b0"``, ``"mit_b3"``, ``"hrnet18s"``
(the :data:`BACKBONES` registry); the MiT and HRNet builders accept ``pretrained=PATH`` (a local file of official
weights; nothing is ever downloaded).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

from finecut.errors import FinecutError
from finecut.models.backbones.hrnet import HRNetW18Small
from finecut.models.backbones.mit import MixVisionTransformer
from finecut.models.efficientnet import EfficientNetLite, EfficientNetLite0
from finecut.models.pretrained import LoadReport, load_matching, read_state_dict, strip_prefix
from finecut.registration import Registry

def _lite(variant: str) -> Callable[..., nn.Module]:
    def build(**kwargs: Any) -> nn.Module:
        return EfficientNetLite(variant, **kwargs)

    build.__name__ = f"efficientnet_{variant}"
    return build


def _mit(variant: str) -> Callable[..., nn.Module]:
    def build(**kwargs: Any) -> nn.Module:
        return MixVisionTransformer(variant=variant, **kwargs)

    build.__name__ = f"mit_{variant}"
    return build


#: Segmentor backbones by name: ``BACKBONES[name](**kwargs)`` (a :class:`~finecut.registration.Registry`).
BACKBONES = Registry("backbone")
BACKBONES.add("efficientnet_lite0", EfficientNetLite0, "EfficientNet-Lite0 (finecut's FocalClick models)")
BACKBONES.add("efficientnet_lite1", _lite("lite1"), "EfficientNet-Lite1 (21 blocks; Lite0's channels)")
BACKBONES.add("efficientnet_lite2", _lite("lite2"), "EfficientNet-Lite2 (21 blocks; channels x1.1)")
BACKBONES.add("mit_b0", _mit("b0"), "SegFormer MiT-B0 (ClickSEG / FocalClick)")
BACKBONES.add("mit_b3", _mit("b3"), "SegFormer MiT-B3 (ClickSEG / FocalClick)")
BACKBONES.add("hrnet18s", HRNetW18Small, "HRNet-W18-small (RITM / FocalClick)")


def build_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build a segmentor backbone by name; unknown names or bad arguments raise :class:`FinecutError`."""
    entry = BACKBONES.entry(name)
    try:
        return entry.build(**kwargs)
    except TypeError as exc:
        raise FinecutError(f"bad arguments for backbone {name!r}: {exc}") from exc


__all__ = [
    "BACKBONES",
    "HRNetW18Small",
    "LoadReport",
    "MixVisionTransformer",
    "build_backbone",
    "load_matching",
    "read_state_dict",
    "strip_prefix",
]
