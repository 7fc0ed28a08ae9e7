"""The model registry: ``@register_model("name")`` on a builder, ``build_model(config)`` to construct one.

A model config is a plain JSON-serialisable dict ``{"arch": NAME, ...kwargs}``; it is stored next to the weights in
every checkpoint, so loading needs no code edit.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch.nn as nn

from finecut.errors import FinecutError

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}

#: Modules that register architectures when imported.
_ARCH_MODULES: tuple[str, ...] = (
    "finecut.models.focalclick",
    "finecut.models.simpleclick",
    "finecut.models.ntclick",
)


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS and _BUILDERS[name] is not builder:
            raise ValueError(f"model {name!r} registered twice")
        _BUILDERS[name] = builder
        return builder

    return decorator


def _import_arch_modules() -> None:
    for module in _ARCH_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def list_models() -> list[str]:
    _import_arch_modules()
    return sorted(_BUILDERS)


def build_model(config: dict[str, Any]) -> nn.Module:
    """Build a model from ``{"arch": NAME, ...}``."""
    _import_arch_modules()
    cfg = dict(config)
    arch = cfg.pop("arch", None)
    if arch not in _BUILDERS:
        raise FinecutError(f"unknown model architecture {arch!r}; known: {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[arch](**cfg)
