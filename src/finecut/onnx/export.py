"""Export a finecut engine's networks as ONNX graphs with a ``model.json`` (``finecut export-onnx MODEL DIR``), and
the export cache behind ``load_model("NAME:runtime=onnx")``.

Each graph (:data:`finecut.onnx.graphs.SPECS`; FocalClick-XL's: :func:`finecut.onnx.graphs.xl_specs`) is traced with the legacy TorchScript exporter at opset
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
from finecut.io import refuse_existing
from finecut.models.detail_net import TRIMAP_CHANNELS
from finecut.models.focalclick_xl import context_input_geometry
from finecut.onnx.format import FORMAT, FORMAT_VERSION, engine_networks, network_digest
from finecut.onnx.graphs import (
    GraphSpec,
    graph_modules,
    graph_specs,
    traceable_attention,
)
from finecut.onnx.runtime import OnnxGraph

#: The ONNX opset of exported graphs (17 has LayerNormalization, GridSample and every op used).
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


def _multiple(value: float, multiple: int = 16) -> int:
    return max(multiple, round(value / multiple) * multiple)


def _context_box(gen: torch.Generator, context: torch.Tensor, stride: int) -> torch.Tensor:
    """A random (1, 4) box inside the context input that ``context`` (1, C, h, w) came from."""
    height, width = (side * stride for side in context.shape[-2:])
    start = torch.rand(2, generator=gen) * 0.5
    size = 0.2 + torch.rand(2, generator=gen) * 0.45
    x0, y0 = float(start[0]) * width, float(start[1]) * height
    return torch.tensor([[x0, y0, x0 + float(size[0]) * width, y0 + float(size[1]) * height]])


def _trimap(gen: torch.Generator, patches: int, h: int, w: int, channels: int, primitive: bool = False
            ) -> torch.Tensor:
    if channels == 3:
        trimap = torch.cat([_one_hot(gen, h, w) for _ in range(patches)])
    else:
        trimap = torch.randint(0, 3, (patches, 1, h, w), generator=gen).float() / 2
    if primitive:  # the primitive probabilities after the trimap
        trimap = torch.cat([trimap, torch.rand(patches, 1, h, w, generator=gen)], dim=1)
    return trimap


def xl_sample_inputs(engine: Any, gen: torch.Generator) -> dict[str, list[tuple[torch.Tensor, ...]]]:
    """FocalClick-XL's graphs: the context input at the sizes the pipeline makes (one size for a square-padded
    encoder), the Object-Net at ``object_size`` squared and two other multiples of 16 with context maps of several
    sizes and boxes, the Detail-Net on batches of 1 to 4 patches of several sizes."""
    networks = engine_networks(engine)
    context = networks["context_net"].export_config()  # type: ignore[union-attr]
    size, stride = int(context["input_size"]), int(context["stride"])
    if context["pad_square"]:
        shapes = [(size, size)] * 3
    else:
        shapes = [context_input_geometry(h, w, size).padded for h, w in ((3, 4), (4, 3), (1, 2))]
    samples: dict[str, list[tuple[torch.Tensor, ...]]] = {"context_net": [(_image(gen, h, w),) for h, w in shapes]}
    maps = [torch.randn(1, int(context["out_channels"]), -(-h // stride), -(-w // stride), generator=gen)
            for h, w in shapes]
    side = int(engine.options["object_size"])
    sizes = ((side, side), (_multiple(side * 0.75), side), (side, _multiple(side * 0.5)))
    prompts = int(engine.inputs.prompt_channels)
    for form in networks["object_net"].forms:  # type: ignore[union-attr]
        samples[f"object_{form}"] = [
            (_image(gen, h, w), _maps(gen, prompts, h, w), ctx, _context_box(gen, ctx, stride))
            for (h, w), ctx in zip(sizes, maps)]
    patch = int(engine.options["detail_size"])
    detail = networks["detail_net"]
    channels, primitive = int(detail.trimap_channels), bool(detail.primitive_input)  # type: ignore[union-attr]
    samples["detail_net"] = [(torch.cat([_image(gen, h, w) for _ in range(n)]),
                              _trimap(gen, n, h, w, channels, primitive))
                             for n, h, w in ((2, patch, patch), (1, patch + 8, max(8, patch // 2 + 3)), (4, 8, 8))]
    return samples


def sample_inputs(engine: Any, graphs: dict[str, nn.Module]) -> dict[str, list[tuple[torch.Tensor, ...]]]:
    """Per graph: the inputs it is traced with, then those it is verified on (other sizes)."""
    gen = torch.Generator().manual_seed(0)
    if "context_net" in graphs:
        return xl_sample_inputs(engine, gen)
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
        clicks = int(getattr(engine_networks(engine)["hrr"].config, "click_channels", 0))
        samples["hrr_body"] = [(_image(gen, h, w), _one_hot(gen, h, w))
                               + (((torch.rand(1, clicks, h, w, generator=gen) > 0.9).float(),) if clicks else ())
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


def _export_graph(spec: GraphSpec, module: nn.Module, sample: tuple[torch.Tensor, ...], path: Path,
                  opset: int) -> None:
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


def _annotate(path: Path, spec: GraphSpec, digest: str) -> None:
    """Check the graph with ``onnx`` and record where it came from in its metadata."""
    onnx = onnx_module()
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    for key, value in (("finecut_graph", spec.name), ("finecut_version", finecut_version()),
                       ("finecut_digest", digest)):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = spec.description
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
        if hasattr(module, "export_config"):  # FocalClick-XL's network calls say it themselves
            out[name] = module.export_config()
            continue
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


#: How each FocalClick-XL form draws its prompt maps (``finecut.pipelines.focalclick_xl.form_prompt_maps``).
XL_FORM_MAPS = {
    "clicks": "positive / negative: disks of radius pipeline.click_radius network pixels at the clicks",
    "scribbles": "positive / negative: the strokes (their width scaled to the network) and the click disks",
    "box": "positive: the box as a filled rectangle; negative: empty (clicks with a new box: a clicks pass after it)",
    "coarse_mask": "positive: the prior mask, cropped and resized like the image; negative: empty",
}


def _inputs(engine: Any) -> dict[str, Any]:
    """``model.json``'s ``inputs``: normalisation and prompt layout, and how to make each graph input."""
    doc: dict[str, Any] = {
        **engine.inputs.to_json(),
        "image": "RGB, NCHW float32 (1, 3, h, w): (pixel / 255 - mean) / std",
        "prompt_maps": "NCHW float32 (1, len(prompt_layout), h, w), channels in prompt_layout order: "
                       "previous_mask = the previous probabilities of the crop, resized; positive / negative / "
                       "tolerant = disks of radius click_radius network pixels (1 inside) at the clicks",
    }
    if "object_net" not in getattr(engine, "networks", ()):
        return doc
    detail = engine_networks(engine)["detail_net"]
    channels, primitive = int(detail.trimap_channels), bool(detail.primitive_input)  # type: ignore[union-attr]
    doc["prompt_maps"] = ("NCHW float32 (1, len(prompt_layout), h, w), channels in prompt_layout order: "
                          "previous_mask = the step's starting probabilities of the crop, resized; positive / "
                          "negative as the form draws them (forms)")
    doc["forms"] = {form: XL_FORM_MAPS.get(form, "as the checkpoint's training drew them")
                    for form in engine.forms}
    doc["trimap"] = {
        "channels": [*(TRIMAP_CHANNELS if channels == 3 else ["0 background, 0.5 unknown, 1 foreground"]),
                     *(["primitive: the Object-Net's probabilities on the patch"] if primitive else [])],
        "description": "per detail patch, from the primitive probabilities resized to it: foreground >= "
                       "pipeline.trimap_high or a positive click / stroke (disks of detail_click_radius), background "
                       "<= trimap_low or a negative one, else unknown; low-confidence pixels farther than "
                       "trimap_band patch pixels from the 0.5 boundary follow p > 0.5",
    }
    doc["context_boxes"] = ("object_FORM's boxes: the target crop's box (x0, y0, x1, y1; pixel edges) scaled by "
                            "(context input resized width / image width, resized height / image height); the "
                            "graph RoIAligns the context features to each backbone level (spatial scale 1 / "
                            "networks.context_net.stride, 2 x 2 bilinear samples per cell, border clamped)")
    return doc


def export_onnx(engine: Any, out_dir: str | Path, *, opset: int = OPSET, verify: bool = True,
                digest: str | None = None, overwrite: bool = False) -> Path:
    """Write ``engine``'s networks as ONNX graphs and ``model.json`` into ``out_dir``; returns the JSON's path. Files
    of an earlier export there (``model.json``, a graph of the same name) are refused before anything is written,
    unless ``overwrite``.

    ``verify`` (default) runs every graph on ONNX Runtime at other input sizes against PyTorch (needs
    ``onnxruntime``) and records the largest relative difference in ``model.json``."""
    onnx_module()
    digest = digest or network_digest(engine)
    networks = engine_networks(engine)
    graphs = graph_modules(networks)
    out = Path(out_dir)
    if not overwrite:
        refuse_existing([out / "model.json", *(out / f"{name}.onnx" for name in graphs)],
                        "refusing to overwrite an earlier export; pass --overwrite or choose another folder")
    specs = graph_specs(networks)
    for module in graphs.values():
        module.eval()
    samples = sample_inputs(engine, graphs)
    out.mkdir(parents=True, exist_ok=True)
    entries: dict[str, Any] = {}
    for name, module in graphs.items():
        path = out / f"{name}.onnx"
        _export_graph(specs[name], module, samples[name][0], path, opset)
        _annotate(path, specs[name], digest)
        entry: dict[str, Any] = {"file": path.name, **specs[name].to_json()}
        if verify:
            entry["verified_max_relative_difference"] = _verify(name, module, samples[name], path)
            entry["verified_sizes"] = [list(inputs[0].shape[-2:]) for inputs in samples[name]]
        entries[name] = entry
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": engine.name,
        "engine": getattr(engine, "checkpoint", {}).get("engine", type(engine).name),
        "digest": digest,
        "finecut_version": finecut_version(),
        "torch_version": torch.__version__,
        "opset": opset,
        "inputs": _inputs(engine),
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
        export_onnx(engine, temporary, digest=digest, overwrite=True)
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


__all__ = ["CACHE_ENV", "OPSET", "XL_FORM_MAPS", "cache_root", "cached_export", "export_onnx", "sample_inputs",
           "xl_sample_inputs"]
