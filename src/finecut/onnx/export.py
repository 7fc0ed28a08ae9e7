"""Export a finecut engine's networks as ONNX graphs with a ``model.json`` (``finecut export-onnx MODEL DIR``), and
the export cache behind ``load_model("NAME:runtime=onnx")``.

Each graph (:data:`finecut.onnx.graphs.SPECS`) is traced with the legacy TorchScript exporter at opset
:data:`OPSET`, every spatial axis dynamic, and then **verified**: ONNX Runtime and PyTorch run it at sizes other than
the traced one, and the largest difference must stay within float32 noise — a network whose trace froze a size
(Python control flow on shapes) is refused instead of exported wrong. ``model.json`` beside the graphs says how to
drive them: image normalisation, the prompt-map channel layout, the pipeline's options, each graph's inputs and
outputs, and the digest of the weights they came from (:func:`network_digest`).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from finecut.errors import FinecutError
from finecut.onnx.format import FORMAT, FORMAT_VERSION, engine_networks, network_digest
from finecut.onnx.graphs import SPECS, graph_modules, traceable_attention
from finecut.onnx.runtime import OnnxGraph

#: The ONNX opset of exported graphs (GridSample-free graphs; 17 has LayerNormalization and every op used).
OPSET = 17
#: Environment variable naming the folder of exports made for ``runtime=onnx``.
CACHE_ENV = "FINECUT_ONNX_CACHE"

log = logging.getLogger(__name__)


def finecut_version() -> str:
    """The installed finecut's version (its package metadata)."""
    try:
        return importlib.metadata.version("finecut")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ------------------------------------------------------------------------------------------------ sample inputs


def _image(gen: torch.Generator, h: int, w: int, channels: int = 3) -> torch.Tensor:
    return torch.randn(1, channels, h, w, generator=gen)


def _maps(gen: torch.Generator, channels: int, h: int, w: int) -> torch.Tensor:
    maps = (torch.rand(1, channels, h, w, generator=gen) > 0.9).float()
    maps[:, 0] = torch.rand(h, w, generator=gen)  # a previous mask, or just another map: any values work
    return maps


def _one_hot(gen: torch.Generator, h: int, w: int) -> torch.Tensor:
    labels = torch.randint(0, 3, (h, w), generator=gen)
    return (labels[None, None] == torch.arange(3)[None, :, None, None]).float()


def sample_inputs(engine: Any, graphs: dict[str, nn.Module]) -> dict[str, list[tuple[torch.Tensor, ...]]]:
    """Per graph: the inputs it is traced with, then those it is verified on (other sizes)."""
    gen = torch.Generator().manual_seed(0)
    prompts = int(engine.inputs.prompt_channels)
    samples: dict[str, list[tuple[torch.Tensor, ...]]] = {}
    if "segmentor" in graphs:
        samples["segmentor"] = [(_image(gen, h, w), _maps(gen, prompts, h, w))
                                for h, w in ((192, 256), (256, 96), (48, 256))]
    if "refiner" in graphs:
        with torch.inference_mode():
            channels = graphs["segmentor"](*samples["segmentor"][0])[1].shape[1]
        samples["refiner"] = [(_image(gen, h, w), _maps(gen, prompts, h, w), torch.randn(1, 1, h, w, generator=gen),
                               torch.randn(1, channels, h // 2, w // 2, generator=gen))
                              for h, w in ((96, 64), (8, 8), (256, 198))]
    if "ecp" in graphs:
        ecp = engine_networks(engine)["ecp"]
        native = tuple(int(v) for v in np.atleast_1d(ecp.config.img_size))
        trace = (224, 160) if native[:2] != (224, 160) else (192, 160)  # not the native grid: the resize is traced
        samples["ecp"] = [(_image(gen, h, w), _maps(gen, prompts, h, w))
                          for h, w in (trace, (native[0], native[-1]), (96, 256))]
    if "hrr_body" in graphs:
        samples["hrr_body"] = [(_image(gen, h, w), _one_hot(gen, h, w))
                               for h, w in ((256, 384), (128, 128), (384, 256))]
        with torch.inference_mode():
            channels = graphs["hrr_body"](*samples["hrr_body"][0]).shape[1]
        samples["hrr_final"] = [(torch.randn(1, channels, h, w, generator=gen), _image(gen, 2 * h, 2 * w))
                                for h, w in ((40, 64), (21, 40), (64, 33))]
    return samples


# ------------------------------------------------------------------------------------------------------- export


def _outputs(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    with torch.inference_mode():
        out = module(*inputs)
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def _export_graph(name: str, module: nn.Module, sample: tuple[torch.Tensor, ...], path: Path, opset: int) -> None:
    spec = SPECS[name]
    module.eval()
    with torch.no_grad(), traceable_attention(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on shape checks, the exporter's deprecation notice
        torch.onnx.export(module, sample, str(path), dynamo=False, opset_version=opset, do_constant_folding=True,
                          input_names=spec.input_names, output_names=spec.output_names,
                          dynamic_axes=spec.dynamic_axes())


def onnx_module() -> Any:
    """The ``onnx`` package (torch's exporter needs it), or a :class:`FinecutError` that says how to install it."""
    try:
        return importlib.import_module("onnx")
    except ImportError:
        raise FinecutError("exporting ONNX graphs needs the onnx package: pip install 'finecut[onnx]'") from None


def _annotate(path: Path, name: str, digest: str) -> None:
    """Check the graph with ``onnx`` and record where it came from in its metadata."""
    onnx = onnx_module()
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    for key, value in (("finecut_graph", name), ("finecut_version", finecut_version()), ("finecut_digest", digest)):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = SPECS[name].description
    onnx.save(model, str(path))


def _verify(name: str, module: nn.Module, samples: list[tuple[torch.Tensor, ...]], path: Path) -> float:
    """The largest |ONNX Runtime - PyTorch| over every output of every sample, relative to the output's scale;
    refuses a graph that does not follow the input size."""
    graph = OnnxGraph(path, threads=1)
    worst = 0.0
    for inputs in samples:
        expected = _outputs(module, inputs)
        try:
            got = graph(*(x.numpy() for x in inputs))
        except Exception as exc:  # onnxruntime's errors have no common base class
            raise FinecutError(f"the {name} graph does not run at input size {tuple(inputs[0].shape[-2:])} "
                               f"(the trace froze a size): {str(exc).splitlines()[0][:300]}") from None
        for want, have in zip(expected, got):
            if want.shape != have.shape:
                raise FinecutError(f"the {name} graph gives shape {have.shape} instead of {want.shape} at input size "
                                   f"{tuple(inputs[0].shape[-2:])} (the trace froze a size)")
            diff = float(np.abs(want - have).max()) / max(1.0, float(np.abs(want).max()))
            worst = max(worst, diff)
    if worst > 1e-3:
        raise FinecutError(f"the {name} graph differs from PyTorch by {worst:.2g} (relative): not exported")
    return worst


def _network_configs(engine: Any) -> dict[str, Any]:
    """What a driver needs to know of each network beyond the pipeline options (NTClick's size rules)."""
    out: dict[str, Any] = {}
    for name, module in engine_networks(engine).items():
        config = getattr(module, "config", None)
        if config is None or not dataclasses.is_dataclass(config):
            continue
        entry = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
        for extra in ("input_multiple", "pad_multiple"):
            if hasattr(config, extra):
                entry[extra] = int(getattr(config, extra))
        if name == "hrr":
            entry["stripe_halo"] = int(type(module).STRIPE_HALO)
        out[name] = entry
    return out


def export_onnx(engine: Any, out_dir: str | Path, *, opset: int = OPSET, verify: bool = True,
                digest: str | None = None) -> Path:
    """Write ``engine``'s networks as ONNX graphs and ``model.json`` into ``out_dir``; returns the JSON's path.

    ``verify`` (default) runs every graph on ONNX Runtime at other input sizes against PyTorch (needs
    ``onnxruntime``) and records the largest relative difference in ``model.json``."""
    onnx_module()
    digest = digest or network_digest(engine)
    graphs = graph_modules(engine_networks(engine))
    for module in graphs.values():
        module.eval()
    samples = sample_inputs(engine, graphs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries: dict[str, Any] = {}
    for name, module in graphs.items():
        path = out / f"{name}.onnx"
        _export_graph(name, module, samples[name][0], path, opset)
        _annotate(path, name, digest)
        entry: dict[str, Any] = {"file": path.name, **SPECS[name].to_json()}
        if verify:
            entry["verified_max_relative_difference"] = _verify(name, module, samples[name], path)
            entry["verified_sizes"] = [list(inputs[0].shape[-2:]) for inputs in samples[name]]
        entries[name] = entry
    inputs = engine.inputs.to_json()
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": engine.name,
        "engine": getattr(engine, "checkpoint", {}).get("engine", type(engine).name),
        "digest": digest,
        "finecut_version": finecut_version(),
        "torch_version": torch.__version__,
        "opset": opset,
        "inputs": {
            **inputs,
            "image": "RGB, NCHW float32 (1, 3, h, w): (pixel / 255 - mean) / std",
            "prompt_maps": "NCHW float32 (1, len(prompt_layout), h, w), channels in prompt_layout order: "
                           "previous_mask = the previous probabilities of the crop, resized; positive / negative / "
                           "tolerant = disks of radius click_radius network pixels (1 inside) at the clicks",
        },
        "pipeline": {k: v for k, v in engine.options.items()},
        "networks": _network_configs(engine),
        "graphs": entries,
    }
    (out / "model.json").write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    return out / "model.json"


# -------------------------------------------------------------------------------------------------------- cache


def cache_root() -> Path:
    """Where ``runtime=onnx`` keeps its exports: ``$FINECUT_ONNX_CACHE``, else ``$XDG_CACHE_HOME/finecut/onnx``,
    else ``~/.cache/finecut/onnx``."""
    chosen = os.environ.get(CACHE_ENV, "").strip()
    if chosen:
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "finecut" / "onnx"


def cached_export(engine: Any, digest: str | None = None) -> Path:
    """The folder of ``engine``'s graphs in the cache (:func:`cache_root`), exported now when missing (once per set
    of weights: the folder is named by :func:`network_digest`; a half-written export is never used)."""
    digest = digest or network_digest(engine)
    root = cache_root()
    target = root / digest.split(":", 1)[-1][:32]
    if _valid_export(target, digest):
        return target
    root.mkdir(parents=True, exist_ok=True)
    temporary = root / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    log.info("exporting the ONNX graphs of %s into %s", engine.name, target)
    try:
        export_onnx(engine, temporary, digest=digest)
        if target.exists() and not _valid_export(target, digest):
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(temporary, target)
        except OSError:  # another process finished the same export first
            if not _valid_export(target, digest):
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return target


def _valid_export(directory: Path, digest: str) -> bool:
    path = directory / "model.json"
    if not path.is_file():
        return False
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    graphs = doc.get("graphs", {}) if isinstance(doc, dict) else {}
    return (doc.get("digest") == digest and doc.get("format_version") == FORMAT_VERSION
            and all((directory / g.get("file", "")).is_file() for g in graphs.values()))


__all__ = ["CACHE_ENV", "OPSET", "cache_root", "cached_export", "export_onnx", "sample_inputs"]
