"""The network registry: one table of architecture names, ``build_model(config)`` to construct one.

A model config is a plain JSON-serialisable dict ``{"arch": NAME, ...kwargs}``; it is stored next to the weights in
every checkpoint, so loading needs no code edit. :data:`MODELS` is a :class:`~finecut.registration.Registry` whose
entries point lazily at the builders (``"module:function"``), so listing the architectures imports none of them.
A network declares its inputs itself (``input_spec``: prompt layout and image normalisation, see
:mod:`finecut.model_inputs`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

from finecut.errors import FinecutError
from finecut.registration import Registry

#: Network architectures by name: ``MODELS[arch](**config)``.
MODELS = Registry("model architecture")
MODELS.add("focalclick", "finecut.models.focalclick:build_focalclick", "FocalClick segmentor + refiner")
MODELS.add("focalclick_segmentor", "finecut.models.focalclick:build_focalclick_segmentor",
           "FocalClick segmentor alone (RITM layouts)")
MODELS.add("simpleclick", "finecut.models.simpleclick:build_simpleclick", "SimpleClick plain-ViT model")
MODELS.add("mae_vit", "finecut.models.mae:build_mae_vit",
           "masked-autoencoder pretraining of SimpleClick's plain ViT (encoder + light decoder)")
MODELS.add("ntclick", "finecut.models.ntclick:build_ntclick", "NTClick ECP + HRR in one checkpoint")
MODELS.add("ntclick_ecp", "finecut.models.ntclick:build_ntclick_ecp", "NTClick's coarse network (FBU map)")
MODELS.add("ntclick_ecp_effnet", "finecut.models.ntclick_ecp_effnet:build_ntclick_ecp_effnet",
           "NTClick's coarse network on the default's EfficientNet segmentor (a departure from the paper)")
MODELS.add("ntclick_hrr", "finecut.models.ntclick:build_ntclick_hrr", "NTClick's high-resolution refiner")
MODELS.add("focalclick_xl", "finecut.models.focalclick_xl:build_focalclick_xl",
           "FocalClick-XL: Context-Net + Object-Net with per-form prompting layers + Detail-Net")


def register_model(name: str, description: str = "") -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a builder defined elsewhere (an extension, a test) to :data:`MODELS`."""
    return MODELS.register(name, description)


def list_models() -> list[str]:
    return sorted(MODELS)


def build_model(config: dict[str, Any]) -> nn.Module:
    """Build a model from ``{"arch": NAME, ...}``."""
    cfg = dict(config)
    arch = cfg.pop("arch", None)
    if arch not in MODELS:
        raise FinecutError(f"unknown model architecture {arch!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[arch].build(**cfg)
