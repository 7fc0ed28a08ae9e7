"""What an exported folder is: ``model.json``'s format, and the digest that ties graphs to the weights they came
from (:func:`network_digest`: checked when ``runtime=onnx`` loads graphs from a folder, and naming the export cache's
folders)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from finecut.errors import FinecutError

#: What ``model.json``'s ``"format"`` says.
FORMAT = "finecut-onnx"
#: The layout of an exported folder and of its graphs; a reader refuses other versions.
FORMAT_VERSION = 1


def engine_networks(engine: Any) -> dict[str, nn.Module | None]:
    """The engine's PyTorch networks by attribute name (:attr:`~finecut.pipelines.skeleton.CropPipeline.networks`)."""
    names = tuple(getattr(engine, "networks", ()))
    if not names:
        raise FinecutError(f"engine {getattr(engine, 'name', type(engine).__name__)!r} has no networks to export")
    if getattr(engine, "runtime", "torch") != "torch":
        raise FinecutError(f"engine {engine.name!r} runs on {engine.runtime}; export from its PyTorch networks")
    networks = {name: getattr(engine, name) for name in names}
    for name, module in networks.items():
        if module is not None and not isinstance(module, nn.Module):
            raise FinecutError(f"engine {engine.name!r}: its {name} is not a PyTorch module")
    return networks


def network_digest(engine: Any) -> str:
    """``sha256:...`` of what the graphs depend on: the export format, the engine class, the checkpoint's model
    config and every parameter and buffer of the networks."""
    digest = hashlib.sha256()
    digest.update(f"{FORMAT}/{FORMAT_VERSION}/{type(engine).__name__}".encode())
    model = getattr(engine, "checkpoint", {}).get("model", {})
    digest.update(json.dumps(model, sort_keys=True, default=str).encode())
    for name, module in engine_networks(engine).items():
        digest.update(name.encode())
        if module is None:
            continue
        for key, value in module.state_dict().items():
            array = value.detach().cpu().contiguous()
            digest.update(f"{key}:{array.dtype}:{tuple(array.shape)}".encode())
            digest.update(array.numpy().tobytes() if array.dtype != torch.bfloat16 else array.float().numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def read_model_json(directory: str | Path) -> dict[str, Any]:
    """``DIR/model.json`` of an exported model, checked for its format."""
    path = Path(directory) / "model.json"
    if not path.is_file():
        raise FinecutError(f"{directory}: no model.json (export graphs with: finecut export-onnx MODEL DIR)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FinecutError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT or not isinstance(doc.get("graphs"), Mapping):
        raise FinecutError(f"{path}: not a finecut ONNX export (format {FORMAT!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise FinecutError(f"{path}: format version {doc.get('format_version')}, this finecut reads "
                           f"{FORMAT_VERSION}; export the graphs again")
    return dict(doc)


__all__ = ["FORMAT", "FORMAT_VERSION", "engine_networks", "network_digest", "read_model_json"]
