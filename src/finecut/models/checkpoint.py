"""Checkpoints: ``NAME.safetensors`` (weights) + ``NAME.json`` (architecture config, inputs, training recipe, scores).

The JSON holds everything needed to rebuild the model (``{"model": {"arch": ..., ...}}``), so loading needs no code
edit and survives refactors of the Python classes as long as the registry keeps the architecture name. It also
records the network's inputs (``"inputs"``: prompt layout and image normalisation, :mod:`finecut.model_inputs`);
older checkpoints without that field get the inputs their network declares. Wrapping a loaded network in its
inference engine (the JSON's ``"engine"`` and ``"pipeline"``) is the loader's job (:func:`finecut.registry.load_model`),
not this module's: the network layer knows nothing of pipelines.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from finecut.errors import FinecutError
from finecut.io import atomic_write_bytes, refuse_existing
from finecut.model_inputs import InputSpec
from finecut.models.pretrained import checkpoint_paths, first_line, read_checkpoint_config
from finecut.models.registry import build_model

FORMAT_VERSION = 1


def refuse_existing_checkpoint(path: str | os.PathLike) -> None:
    """Raise :class:`FinecutError` when the JSON or the weights of a checkpoint at ``path`` already exist."""
    refuse_existing(checkpoint_paths(path), "refusing to overwrite a checkpoint; remove it, choose another output "
                    "name, or pass --overwrite")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, model_config: dict[str, Any],
                    metadata: dict[str, Any] | None = None, overwrite: bool = True) -> tuple[Path, Path]:
    """Write weights (float32, contiguous) and the JSON config; both atomically.

    The JSON gets the network's declared inputs (``"inputs"``) unless ``metadata`` gives them. With ``overwrite``
    False, an existing JSON or weights file at ``path`` is refused before either is written."""
    if not overwrite:
        refuse_existing_checkpoint(path)
    json_path, weights_path = checkpoint_paths(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = weights_path.with_name(f".{weights_path.name}.tmp")
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(tmp), metadata={"format": "finecut", "version": str(FORMAT_VERSION)})
    os.replace(tmp, weights_path)
    doc: dict[str, Any] = {"format_version": FORMAT_VERSION, "model": model_config}
    declared = getattr(model, "input_spec", None)
    if isinstance(declared, InputSpec):
        doc["inputs"] = declared.to_json()
    doc.update(metadata or {})
    atomic_write_bytes(json_path, (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode(), overwrite=overwrite)
    return json_path, weights_path


#: What building a model from a hostile config raises (bad types, negative or huge sizes, ...).
_BUILD_ERRORS = (TypeError, ValueError, RuntimeError, KeyError, IndexError, AttributeError, AssertionError,
                 OverflowError, ZeroDivisionError, RecursionError, NotImplementedError)


def _build(config: dict[str, Any], json_path: Path) -> nn.Module:
    try:
        return build_model(config)
    except FinecutError as exc:
        raise FinecutError(f"{json_path}: {exc}") from None
    except _BUILD_ERRORS as exc:
        raise FinecutError(f"{json_path}: the model config does not build a model "
                           f"({type(exc).__name__}: {first_line(exc)})") from None


def _stored_shapes(weights_path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from the safetensors header (no tensor is read)."""
    try:
        with safe_open(str(weights_path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise FinecutError(f"{weights_path}: corrupt checkpoint weights ({first_line(exc)})") from None


def _check_shapes(expected: dict[str, tuple[int, ...]], stored: dict[str, tuple[int, ...]], weights_path: Path,
                  json_path: Path) -> None:
    """The config's architecture must have exactly the stored tensors, shape for shape."""
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    wrong = sorted(k for k in set(expected) & set(stored) if expected[k] != stored[k])
    if missing or unexpected or wrong:
        if wrong:
            k = wrong[0]
            what = f"{k} is {list(stored[k])} in the weights, {list(expected[k])} in the config's architecture"
        elif missing:
            what = f"{len(missing)} tensor(s) missing from the weights, e.g. {missing[0]}"
        else:
            what = f"{len(unexpected)} tensor(s) the architecture does not have, e.g. {unexpected[0]}"
        raise FinecutError(f"{weights_path}: weights do not match the architecture of {json_path.name} ({what})")


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from its JSON config and load the weights; returns (model in eval mode, config doc).

    The architecture is first built on PyTorch's ``meta`` device (no memory) and its tensor shapes compared with the
    weights file's header, so a corrupt or hostile config (wrong sizes, huge widths) is refused with a
    :class:`FinecutError` before anything is allocated."""
    doc = read_checkpoint_config(path)
    json_path, weights_path = checkpoint_paths(path)
    if not weights_path.exists():
        raise FinecutError(f"{weights_path}: checkpoint weights not found")
    stored = _stored_shapes(weights_path)
    with torch.device("meta"):
        skeleton = _build(doc["model"], json_path)
    _check_shapes({k: tuple(v.shape) for k, v in skeleton.state_dict().items()}, stored, weights_path, json_path)
    del skeleton
    model = _build(doc["model"], json_path)
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise FinecutError(f"{weights_path}: corrupt checkpoint weights ({first_line(exc)})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "shape/key mismatch"
        raise FinecutError(f"{weights_path}: weights do not match the config's architecture ({first})") from exc
    model.eval()
    return model, doc
