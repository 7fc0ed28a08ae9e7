"""finecut's pipelines on ONNX Runtime: the exported graphs in the place of the PyTorch networks.

``finecut.load_model("default:runtime=onnx")`` builds the engine as usual, then :func:`attach` replaces each network
the engine names in :attr:`~finecut.pipelines.skeleton.CropPipeline.networks` by an adapter with the module's call
signature (torch tensors in, a dict of torch tensors out: NumPy arrays shared, not copied) that runs the graph in an
``onnxruntime.InferenceSession``. Everything around the networks — target crop, prompt maps, Focus Crop, pasting,
Progressive Merge, NTClick's FBU rules — is the same pipeline code for both runtimes. The graphs come from
``onnx_dir`` (written by ``finecut export-onnx``; its ``model.json`` must name the same weights) or are exported once
into a cache folder (:func:`finecut.onnx.use_onnx`, :func:`finecut.onnx.export.cached_export`).

Three steps around the networks change with the runtime, for speed, not for their result (the same up to float32
rounding): a FocalClick engine keeps the uint8 image as its refiner's source instead of normalising it whole at
``set_image`` (:func:`keep_image`); the refiner's RoIAlign is computed separably (:func:`roi_align`: on network maps
two small matrix products over the rows and columns the samples touch, on the image only the pixels the samples read,
normalised afterwards) instead of with ``grid_sample``; and NTClick's HRR runs as two graphs, the full-resolution
stage in stripes with a halo as the PyTorch module does. FocalClick-XL's Object-Net call takes the interaction form
as a string: :class:`OnnxXLObject` runs that form's graph (``object_<form>``).

ONNX Runtime uses the engine's thread count (:func:`finecut.threads.inference_threads`, one by default) with
spinning off, so a click does not busy-wait against other processes.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from finecut.errors import FinecutError
from finecut.model_inputs import DEFAULT_INPUTS, InputSpec
from finecut.models.ntclick import NTClickHRR, padded_size, working_size
from finecut.onnx.format import network_digest, read_model_json
from finecut.onnx.ops import axis_weights, cell_taps
from finecut.threads import inference_threads


def onnxruntime() -> Any:
    """The ``onnxruntime`` module, or a :class:`FinecutError` that says how to install it."""
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        raise FinecutError("the ONNX runtime needs onnxruntime: pip install 'finecut[onnx]'") from None


def session_options(threads: int | None = None) -> Any:
    """Session options: all graph optimisations, ``threads`` intra-op threads (:func:`inference_threads`), sequential
    execution, no spinning (a waiting worker would take a core from the other processes of a busy machine)."""
    ort = onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = inference_threads(threads)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


class OnnxGraph:
    """One graph in an ``onnxruntime.InferenceSession``: positional float32 arrays in, a list of arrays out."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        ort = onnxruntime()
        self.path = Path(path)
        self.session = ort.InferenceSession(str(self.path), session_options(threads),
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        if len(arrays) != len(self.input_names):
            raise FinecutError(f"{self.path.name} takes {len(self.input_names)} inputs, got {len(arrays)}")
        feed = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in zip(self.input_names, arrays)}
        return self.session.run(None, feed)


def _array(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A contiguous float32 array of ``x`` (a torch tensor's memory is shared when it already is one)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


class OnnxNetwork:
    """A graph with a network's call signature: tensors in, ``{output name: tensor}`` out. ``config`` is the
    PyTorch module's (what a pipeline reads from its network, e.g. NTClick's ``ecp.config.img_size``)."""

    def __init__(self, graph: OnnxGraph, config: Any = None) -> None:
        self.graph = graph
        self.config = config

    def __call__(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.graph(*(_array(x) for x in inputs))
        return {name: torch.from_numpy(out) for name, out in zip(self.graph.output_names, outputs)}


class OnnxECP(OnnxNetwork):
    """NTClick's ECP graph; an input whose sides are not multiples of the ECP's ``input_multiple`` is zero-padded
    and the logits cropped back, as the PyTorch module does inside (the pipeline's inputs need none)."""

    def __call__(self, image: torch.Tensor, prompt_maps: torch.Tensor) -> dict[str, torch.Tensor]:
        height, width = image.shape[-2:]
        multiple = int(self.config.input_multiple)
        ph, pw = -height % multiple, -width % multiple
        img, maps = _array(image), _array(prompt_maps)
        if ph or pw:
            img = np.pad(img, ((0, 0), (0, 0), (0, ph), (0, pw)))
            maps = np.pad(maps, ((0, 0), (0, 0), (0, ph), (0, pw)))
        (logits,) = self.graph(img, maps)
        return {"logits": torch.from_numpy(np.ascontiguousarray(logits[:, :, :height, :width]))}


class OnnxXLObject:
    """FocalClick-XL's ``object_net`` call (:class:`~finecut.pipelines.focalclick_xl.XLObjectNetwork`'s signature)
    on one graph per interaction form: ``(image, prompt_maps, form, context, boxes) -> {"logits"}``."""

    def __init__(self, graphs: dict[str, OnnxNetwork]) -> None:
        self.graphs = graphs

    @property
    def forms(self) -> tuple[str, ...]:
        return tuple(self.graphs)

    def __call__(self, image: torch.Tensor, prompt_maps: torch.Tensor, form: str, context: torch.Tensor,
                 boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        graph = self.graphs.get(form)
        if graph is None:
            raise FinecutError(f"no Object-Net graph for interaction form {form!r}; exported: {', '.join(self.graphs)}")
        return graph(image, prompt_maps, context, boxes)


class OnnxHRR:
    """NTClick's HRR as two graphs (``hrr_body`` to the stride-2 map, ``hrr_final`` for the full-resolution stage)
    with :meth:`NTClickHRR.forward`'s steps around them: a region longer than ``max_side`` downsampled (and the
    logits upsampled back), padding to ``pad_multiple`` (zero image, background FBU), the full-resolution stage in
    stripes of :meth:`stripe_rows` rows with a halo of :attr:`NTClickHRR.STRIPE_HALO`."""

    def __init__(self, body: OnnxGraph, final: OnnxGraph, config: Any) -> None:
        self.body = body
        self.final = final
        self.config = config

    def stripe_rows(self, width: int) -> int:
        """Rows per stripe of the full-resolution stage (the PyTorch module's rule)."""
        cfg = self.config
        if not cfg.stripe_inference:
            return 1 << 30
        if cfg.stripe_rows > 0:
            return int(cfg.stripe_rows)
        per_row = width * (3 * cfg.fuse_channels[3] + 2 * cfg.low_channels[0] + 3)
        return max(16, NTClickHRR.STRIPE_ELEMENTS // max(per_row, 1))

    def _final_stage(self, x2: np.ndarray, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[-2:]
        rows = self.stripe_rows(width)
        if rows >= height:
            return self.final(x2, image)[0]
        halo, coarse_h = NTClickHRR.STRIPE_HALO, x2.shape[-2]
        out = np.empty((image.shape[0], 1, height, width), np.float32)
        for r0 in range(0, height, rows):
            r1 = min(height, r0 + rows)
            c0, c1 = max(0, r0 - halo) // 2, min(coarse_h, -(-min(height, r1 + halo) // 2))
            (logits,) = self.final(x2[:, :, c0:c1], image[:, :, 2 * c0:2 * c1])
            out[:, :, r0:r1] = logits[:, :, r0 - 2 * c0:r1 - 2 * c0]
        return out

    def __call__(self, image: torch.Tensor, fbu: torch.Tensor, region: torch.Tensor | None = None,
                 clicks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``region`` is the module's argument, accepted and not used: the exported graphs decode every pixel, a
        superset of the module's region-restricted pass (equal logits inside ``region``). ``clicks``: the click maps
        of an HRR with a click input (zeros when None), as the module takes them."""
        del region
        channels = int(getattr(self.config, "click_channels", 0))
        if clicks is not None and not channels:
            raise FinecutError("this HRR has no click input (click_channels 0): pass clicks=None")
        if channels and clicks is None:
            clicks = torch.zeros(image.shape[0], channels, *image.shape[-2:])
        cfg = self.config
        height, width = image.shape[-2:]
        work_h, work_w = working_size(height, width, cfg.max_side)
        resized = (work_h, work_w) != (height, width)
        if resized:  # as the module: bilinear, antialiased
            image = F.interpolate(image, size=(work_h, work_w), mode="bilinear", align_corners=False, antialias=True)
            fbu = F.interpolate(fbu.to(image.dtype), size=(work_h, work_w), mode="bilinear", align_corners=False,
                                antialias=True)
            if clicks is not None:
                clicks = F.interpolate(clicks.to(image.dtype), size=(work_h, work_w), mode="bilinear",
                                       align_corners=False, antialias=True)
        pad_h, pad_w = padded_size(work_h, work_w, cfg.pad_multiple)
        img = np.zeros((image.shape[0], 3, pad_h, pad_w), np.float32)
        img[:, :, :work_h, :work_w] = _array(image)
        fbu_in = np.zeros((image.shape[0], 3, pad_h, pad_w), np.float32)
        fbu_in[:, :, :work_h, :work_w] = _array(fbu)
        fbu_in[:, 0, work_h:, :] = 1.0  # padding counts as background
        fbu_in[:, 0, :, work_w:] = 1.0
        extra = []
        if clicks is not None:
            clicks_in = np.zeros((image.shape[0], channels, pad_h, pad_w), np.float32)
            clicks_in[:, :, :work_h, :work_w] = _array(clicks)
            extra.append(clicks_in)
        (x2,) = self.body(img, fbu_in, *extra)
        logits = torch.from_numpy(np.ascontiguousarray(self._final_stage(x2, img)[:, :, :work_h, :work_w]))
        if resized:
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return {"logits": logits}


def roi_align(features: torch.Tensor | np.ndarray, boxes: torch.Tensor, output_size: tuple[int, int],
              spatial_scale: float = 1.0, sampling_ratio: int = 2, *, inputs: InputSpec | None = None) -> torch.Tensor:
    """:func:`finecut.models.roi_align.roi_align` for one box, separably (:mod:`finecut.onnx.ops`), equal to the
    ``grid_sample`` version up to float32 rounding: on a network map, the interpolation matrices applied to the rows
    and columns the samples touch (torch's matmul, which keeps to the engine's thread count); on the uint8 (H, W, 3)
    image itself (the engine's features on this runtime, :func:`keep_image`), :func:`roi_align_image`."""
    if boxes.shape[0] != 1:
        raise ValueError(f"one box, got boxes {tuple(boxes.shape)}")
    x0, y0, x1, y1 = (float(v) * spatial_scale for v in boxes[0].tolist())
    if isinstance(features, np.ndarray):
        return roi_align_image(features, (x0, y0, x1, y1), output_size, inputs or DEFAULT_INPUTS, sampling_ratio)
    if features.shape[0] != 1:
        raise ValueError(f"one map, got features {tuple(features.shape)}")
    height, width = features.shape[-2:]
    oh, ow = (int(v) for v in output_size)
    s = max(1, int(sampling_ratio))
    rows, row_matrix = axis_weights(y0, y1, height, oh, s)
    cols, col_matrix = axis_weights(x0, x1, width, ow, s)
    top, left = int(rows[0]), int(cols[0])
    window = features[0, :, top:int(rows[-1]) + 1, left:int(cols[-1]) + 1]
    if rows.size < window.shape[1]:
        window = window[:, torch.from_numpy(rows - top)]
    if cols.size < window.shape[2]:
        window = window[:, :, torch.from_numpy(cols - left)]
    out = torch.matmul(torch.matmul(torch.from_numpy(row_matrix), window.float()), torch.from_numpy(col_matrix).T)
    return out[None].contiguous()


def roi_align_image(image: np.ndarray, box: tuple[float, float, float, float], output_size: tuple[int, int],
                    inputs: InputSpec, sampling_ratio: int = 2) -> torch.Tensor:
    """RoIAlign of the normalised uint8 (H, W, 3) ``image`` -> (1, 3, oh, ow), reading only the pixels its samples
    touch (at most ``4 * oh`` rows and ``4 * ow`` columns, however large the box): those pixels gathered, the taps
    of :func:`finecut.onnx.ops.cell_taps` applied one axis at a time, and then the mean / std of ``inputs`` — the
    same as normalising first, because each output cell's weights sum to one."""
    oh, ow = (int(v) for v in output_size)
    s = max(1, int(sampling_ratio))
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box
    row_index, row_weight = cell_taps(y0, y1, height, oh, s)
    col_index, col_weight = cell_taps(x0, x1, width, ow, s)
    rows, row_index = np.unique(row_index, return_inverse=True)
    cols, col_index = np.unique(col_index, return_inverse=True)
    window = torch.from_numpy(image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])
    if rows.size < window.shape[0]:
        window = window.index_select(0, torch.from_numpy(rows - rows[0]))
    if cols.size < window.shape[1]:
        window = window.index_select(1, torch.from_numpy(cols - cols[0]))
    pixels = window.float()  # (rows, cols, 3): only the pixels the taps read

    def taps(x: torch.Tensor, dim: int, index: np.ndarray, weight: np.ndarray) -> torch.Tensor:
        shape = [1, 1, 1]
        shape[dim] = weight.shape[1]
        out = None
        for idx, w in zip(torch.from_numpy(index.reshape(weight.shape)), torch.from_numpy(weight)):
            term = x.index_select(dim, idx).mul_(w.view(shape))
            out = term if out is None else out.add_(term)
        assert out is not None
        return out

    if oh * cols.size <= rows.size * ow:  # rows first reads less
        out = taps(taps(pixels, 0, row_index, row_weight), 1, col_index, col_weight)
    else:
        out = taps(taps(pixels, 1, col_index, col_weight), 0, row_index, row_weight)
    mean = torch.tensor(inputs.mean, dtype=torch.float32) * 255
    std = torch.tensor(inputs.std, dtype=torch.float32) * 255
    return ((out - mean) / std).permute(2, 0, 1)[None].contiguous()


def keep_image(image: np.ndarray) -> np.ndarray:
    """A FocalClick engine's refiner source on ONNX Runtime (``FocalClickEngine.refiner_source``): the uint8 image
    itself (its Focus Crops are normalised when :func:`roi_align` cuts them out; ``set_image`` normalises nothing)."""
    return image


class OnnxModel:
    """An exported folder: ``model.json`` and its graphs, in sessions."""

    def __init__(self, directory: str | Path, threads: int | None = None) -> None:
        self.directory = Path(directory)
        self.doc = read_model_json(self.directory)
        self.threads = threads
        self.graphs: dict[str, OnnxGraph] = {}

    def graph(self, name: str) -> OnnxGraph:
        if name not in self.graphs:
            entry = self.doc["graphs"].get(name)
            if entry is None:
                raise FinecutError(f"{self.directory / 'model.json'} has no {name!r} graph")
            self.graphs[name] = OnnxGraph(self.directory / entry["file"], self.threads)
        return self.graphs[name]

    def adapter(self, name: str, module: Any) -> Any:
        """The callable that replaces the engine's network ``name`` (``module``: the PyTorch one)."""
        config = getattr(module, "config", None)
        if name == "ecp":
            return OnnxECP(self.graph("ecp"), config)
        if name == "hrr":
            return OnnxHRR(self.graph("hrr_body"), self.graph("hrr_final"), config)
        if name == "object_net":  # FocalClick-XL: one graph per form
            return OnnxXLObject({form: OnnxNetwork(self.graph(f"object_{form}")) for form in module.forms})
        return OnnxNetwork(self.graph(name), config)


def attach(engine: Any, directory: str | Path) -> Any:
    """Run ``engine``'s networks on ONNX Runtime with the graphs of ``directory`` (in place; returns ``engine``);
    the folder's ``model.json`` must name the engine's weights (:func:`~finecut.onnx.format.network_digest`)."""
    onnxruntime()
    names = tuple(getattr(engine, "networks", ()))
    if not names:
        raise FinecutError(f"engine {getattr(engine, 'name', type(engine).__name__)!r} has no networks to run on "
                           "ONNX Runtime (runtime=onnx is for learned models)")
    digest = network_digest(engine)
    directory = Path(directory)
    found = read_model_json(directory).get("digest")
    if found != digest:
        raise FinecutError(f"{directory}: its graphs were exported from other weights than {engine.name!r} "
                           f"({found} != {digest}); export them again: finecut export-onnx MODEL {directory}")
    model = OnnxModel(directory, getattr(engine, "threads", None))
    adapters: dict[str, Callable[..., Any]] = {}
    for name in names:
        module = getattr(engine, name)
        if module is not None:  # a FocalClick-style engine without a refiner
            adapters[name] = model.adapter(name, module)
    for name, adapter in adapters.items():
        setattr(engine, name, adapter)
    if "segmentor" in adapters:  # FocalClick-style: the image is normalised only where the refiner reads it
        engine.refiner_source = keep_image
        engine.roi_align = functools.partial(roi_align, inputs=engine.inputs)
    engine.runtime = "onnx"
    engine.onnx_dir = str(directory)
    return engine


__all__ = ["OnnxECP", "OnnxGraph", "OnnxHRR", "OnnxModel", "OnnxNetwork", "OnnxXLObject",
           "attach", "keep_image", "onnxruntime", "roi_align", "roi_align_image", "session_options"]
