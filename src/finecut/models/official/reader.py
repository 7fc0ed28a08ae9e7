"""Reading an official release file: a torch pickle holding ``{"config": ..., "state_dict": ...}`` or a bare state
dict (``.pth`` / ``.pt`` / ``.pth.tar``), or a ``.safetensors`` file.

The released RITM / FocalClick / SimpleClick checkpoints pickle their model config (``model._config``), and
SimpleClick's holds an instance of a loss class of its own code base, which is not installed here. Loading tries
``weights_only=True`` first; when that refuses the file, it loads it again (the user chose this local file) with an
unpickler that stands in a placeholder for every class whose module cannot be imported, so the weights and the
plain parts of the config still come through.
"""

from __future__ import annotations

import os
import pickle
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from finecut.errors import FinecutError

_CONTAINER_KEYS = ("state_dict", "model", "net", "module")


class OpaqueObject:
    """Placeholder for an object whose class lives in a code base that is not installed (e.g. ``isegm``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<opaque {type(self).__module__}.{type(self).__qualname__}>"


_OPAQUE_CLASSES: dict[tuple[str, str], type] = {}


def _opaque_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _OPAQUE_CLASSES:
        _OPAQUE_CLASSES[key] = type(name, (OpaqueObject,), {"__module__": module, "__qualname__": name})
    return _OPAQUE_CLASSES[key]


class _TolerantUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return _opaque_class(module, name)


def _tolerant_load(file: Any, **kwargs: Any) -> Any:
    return _TolerantUnpickler(file, **kwargs).load()


#: A ``pickle_module`` for :func:`torch.load` that tolerates classes of absent code bases.
TOLERANT_PICKLE = types.ModuleType("finecut_tolerant_pickle")
TOLERANT_PICKLE.Unpickler = _TolerantUnpickler  # type: ignore[attr-defined]
TOLERANT_PICKLE.load = _tolerant_load  # type: ignore[attr-defined]
TOLERANT_PICKLE.__dict__["UnpicklingError"] = pickle.UnpicklingError


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - refused by the safe loader: retry as the checkpoint's own code would
        pass
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=TOLERANT_PICKLE)
    except Exception as exc:  # noqa: BLE001 - any failure means an unreadable file
        raise FinecutError(f"{path}: cannot read torch checkpoint ({type(exc).__name__}: {exc})") from exc


def config_params(config: Any) -> dict[str, Any]:
    """The constructor arguments in an official ``model._config`` (``{"class": ..., "params": {name: {"value":
    ...}}}``), as ``{name: value}``; ``{}`` for anything else."""
    if not isinstance(config, Mapping) or not isinstance(config.get("params"), Mapping):
        return {}
    out: dict[str, Any] = {}
    for name, param in config["params"].items():
        out[str(name)] = param.get("value") if isinstance(param, Mapping) and "value" in param else param
    return out


def read_official_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, config params)`` of an official release file; the params are ``{}`` when the file has none.

    A ``module.`` (DataParallel) prefix is removed. A missing, unreadable or tensor-less file raises
    :class:`FinecutError`."""
    path = Path(path)
    if not path.is_file():
        raise FinecutError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001
            raise FinecutError(f"{path}: cannot read safetensors weights ({exc})") from exc
    else:
        obj = _torch_load(path)
    if not isinstance(obj, Mapping):
        raise FinecutError(f"{path}: does not hold a state dict (found {type(obj).__name__})")
    params = config_params(obj.get("config"))
    state_obj: Any = obj
    for key in _CONTAINER_KEYS:
        if isinstance(obj.get(key), Mapping):
            state_obj = obj[key]
            break
    state = {str(k): v for k, v in state_obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise FinecutError(f"{path}: holds no tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, params


__all__ = ["OpaqueObject", "TOLERANT_PICKLE", "config_params", "read_official_checkpoint"]
