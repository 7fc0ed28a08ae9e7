"""Checkpoints: ``NAME.safetensors`` (weights) + ``NAME.json`` (architecture config, training recipe, scores).

The JSON holds everything needed to rebuild the model (``{"model": {"arch": ..., ...}}``), so loading needs no code
edit and survives refactors of the Python classes as long as the registry keeps the architecture name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from finecut.errors import FinecutError
from finecut.io import atomic_write_bytes
from finecut.models.registry import build_model

FORMAT_VERSION = 1


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(json, safetensors) paths for a checkpoint given either file or the common stem."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".json", ".safetensors") else p
    return stem.with_suffix(".json"), stem.with_suffix(".safetensors")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, model_config: dict[str, Any],
                    metadata: dict[str, Any] | None = None, overwrite: bool = True) -> tuple[Path, Path]:
    """Write weights (float32, contiguous) and the JSON config; both atomically."""
    json_path, weights_path = checkpoint_paths(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = weights_path.with_name(f".{weights_path.name}.tmp")
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(tmp), metadata={"format": "finecut", "version": str(FORMAT_VERSION)})
    os.replace(tmp, weights_path)
    doc = {"format_version": FORMAT_VERSION, "model": model_config, **(metadata or {})}
    atomic_write_bytes(json_path, (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode(), overwrite=overwrite)
    return json_path, weights_path


def read_checkpoint_config(path: str | os.PathLike) -> dict[str, Any]:
    json_path, _ = checkpoint_paths(path)
    if not json_path.exists():
        raise FinecutError(f"{json_path}: checkpoint config not found (a checkpoint is NAME.json + NAME.safetensors)")
    try:
        doc = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FinecutError(f"{json_path}: corrupt checkpoint config ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict) or "arch" not in doc["model"]:
        raise FinecutError(f"{json_path}: not a finecut checkpoint config (needs a 'model' with an 'arch')")
    return doc


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from its JSON config and load the weights; returns (model in eval mode, config doc)."""
    doc = read_checkpoint_config(path)
    _, weights_path = checkpoint_paths(path)
    if not weights_path.exists():
        raise FinecutError(f"{weights_path}: checkpoint weights not found")
    model = build_model(doc["model"])
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise FinecutError(f"{weights_path}: corrupt checkpoint weights ({exc})") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "shape/key mismatch"
        raise FinecutError(f"{weights_path}: weights do not match the config's architecture ({first})") from exc
    model.eval()
    return model, doc


def load_engine(path: str | os.PathLike, **kwargs: Any):
    """Load a checkpoint and wrap it in the inference engine its config names (``doc["engine"]``)."""
    from finecut.pipelines import build_engine

    model, doc = load_checkpoint(path)
    return build_engine(model, doc, **kwargs)
