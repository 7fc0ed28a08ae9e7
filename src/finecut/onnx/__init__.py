"""finecut's networks as ONNX graphs, and its pipelines on ONNX Runtime (the optional extra ``finecut[onnx]``).

* :mod:`.graphs` — which graphs a method exports (FocalClick: ``segmentor``, ``refiner``; NTClick: ``ecp``,
  ``hrr_body``, ``hrr_final``; FocalClick-XL: ``context_net``, ``object_<form>`` per interaction form,
  ``detail_net``), their inputs and outputs, and the traceable forms of the networks;
* :mod:`.export` — ``finecut export-onnx MODEL DIR``: the graphs, verified against PyTorch at other sizes, and a
  ``model.json`` that says how to drive them; the export cache of ``runtime=onnx``;
* :mod:`.format` — ``model.json``'s format and the digest tying graphs to the weights they came from;
* :mod:`.runtime` — ``load_model("NAME:runtime=onnx")`` (:func:`use_onnx`): the engine's networks replaced by ONNX
  Runtime sessions behind the same call signature, so the pipeline around them is unchanged;
* :mod:`.ops` — the NumPy forms of the operations a driver runs around the graphs (RoIAlign).

``docs/onnx.md`` describes the graphs and the per-click (per-interaction) loops for tools that run them without
finecut.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def use_onnx(engine: Any, onnx_dir: str | Path | None = None) -> Any:
    """Run ``engine``'s networks on ONNX Runtime (in place; returns it): the graphs of ``onnx_dir`` (from
    ``finecut export-onnx``, exported from the same weights), else those of the export cache, exported now when
    missing (:func:`finecut.onnx.export.cached_export`). What ``load_model("NAME:runtime=onnx")`` calls."""
    from finecut.onnx import export, runtime

    runtime.onnxruntime()  # say how to install it before spending seconds on an export
    directory = Path(onnx_dir) if onnx_dir is not None else export.cached_export(engine)
    return runtime.attach(engine, directory)


__all__ = ["use_onnx"]
