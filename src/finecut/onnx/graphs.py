"""What each exported ONNX graph is: the torch module traced for it, its inputs and outputs.

A method's pipeline keeps every crop, resize, paste and threshold in Python / NumPy; only the networks become graphs,
each with dynamic height and width, so any crop size works:

============  ==========================================================  ===========================================
graph         inputs                                                      outputs
============  ==========================================================  ===========================================
segmentor     ``image`` (1, 3, h, w), ``prompt_maps`` (1, P, h, w)        ``logits`` (1, 1, h, w), ``features``
                                                                          (1, C, h/4, w/4)
refiner       ``image`` (1, 3, rh, rw), ``prompt_maps`` (1, P, rh, rw),   ``logits`` (1, 1, rh, rw)
              ``coarse_logits`` (1, 1, rh, rw), ``features``
              (1, C, rh/2, rw/2) — all RoIAligned to the Focus Crop
ecp           ``image`` (1, 3, h, w), ``prompt_maps`` (1, P, h, w);       ``logits`` (1, 3, h, w): background,
              sides multiples of 32                                       foreground, uncertain
hrr_body      ``image`` (1, 3, H, W), ``fbu`` (1, 3, H, W); sides         ``x2`` (1, F, H/2, W/2): the decoder's map
              multiples of 128 (padding: zero image, background FBU)     before its full-resolution stage
hrr_final     ``x2`` (1, F, h, w), ``image`` (1, 3, 2h, 2w): a stripe     ``logits`` (1, 1, 2h, 2w)
context_net   ``image`` (1, 3, H, W): the whole image, resized and padded   ``features`` (1, C, H/16, W/16)
object_FORM   ``image``, ``prompt_maps`` (1, 3, h, w), ``context``          ``logits`` (1, 1, h, w)
              (1, C, H/16, W/16), ``boxes`` (1, 4) in context pixels
detail_net    ``image`` (N, 3, p, q), ``trimap`` (N, T, p, q)               ``alpha`` (N, 1, p, q)
============  ==========================================================  ===========================================

Images are ImageNet-normalised RGB, NCHW float32; prompt maps are in the network's prompt layout (``model.json``).

FocalClick-XL exports one Object-Net graph per interaction form (``object_clicks``, ``object_box``, ...: the form's
prompting layer baked in) and RoIAligns the context features to the patch inside it (``grid_sample``, opset 16+);
its graphs' specs depend on the checkpoint (:func:`xl_specs`: a SAM-style context encoder takes one fixed square
size, the forms are the checkpoint's).

NTClick's HRR is split in two so that its full-resolution stage can run in horizontal stripes with a halo, as the
PyTorch module does with autograd off (:meth:`~finecut.models.ntclick.NTClickHRR._final_stage_striped`): memory stays
bounded on large images. Its neighborhood attention is traced through :func:`neighborhood_attention_gather`, a
gather-based form with the same result whose shapes all follow the input (the tiled PyTorch path loops over tiles
in Python, which a trace would freeze at one size).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn

from finecut.models import attention


@dataclass(frozen=True)
class Tensor:
    """One input or output of a graph: its name, symbolic shape and meaning."""

    name: str
    shape: tuple[str | int, ...]
    description: str

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "shape": list(self.shape), "dtype": "float32", "description": self.description}


@dataclass(frozen=True)
class GraphSpec:
    """A graph's inputs and outputs (in order) and what it is for."""

    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    description: str

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """torch.onnx's ``dynamic_axes``: every named (non-integer) dimension."""
        return {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
                for t in (*self.inputs, *self.outputs)}

    def to_json(self) -> dict[str, object]:
        return {"description": self.description, "inputs": [t.to_json() for t in self.inputs],
                "outputs": [t.to_json() for t in self.outputs]}


IMAGE = "ImageNet-normalised RGB: (x / 255 - mean) / std"
SPECS: dict[str, GraphSpec] = {
    "segmentor": GraphSpec(
        "segmentor",
        (Tensor("image", (1, 3, "height", "width"), f"the target crop resized to the network size; {IMAGE}"),
         Tensor("prompt_maps", (1, "prompt_channels", "height", "width"),
                "the crop's prompt maps in the model's prompt_layout")),
        (Tensor("logits", (1, 1, "height", "width"), "object logits"),
         Tensor("features", (1, "feature_channels", "feature_height", "feature_width"),
                "the head's last feature map (the refiner's input)")),
        "coarse segmentation of the target crop",
    ),
    "refiner": GraphSpec(
        "refiner",
        (Tensor("image", (1, 3, "height", "width"), f"the Focus Crop of the full-resolution image; {IMAGE}"),
         Tensor("prompt_maps", (1, "prompt_channels", "height", "width"), "the Focus Crop of the prompt maps"),
         Tensor("coarse_logits", (1, 1, "height", "width"), "the Focus Crop of the segmentor's logits"),
         Tensor("features", (1, "feature_channels", "half_height", "half_width"),
                "the Focus Crop of the segmentor's features, at half the refiner's size")),
        (Tensor("logits", (1, 1, "height", "width"), "refined object logits over the Focus Crop"),),
        "FocalClick's refiner on the Focus Crop (inputs RoIAligned outside the graph)",
    ),
    "ecp": GraphSpec(
        "ecp",
        (Tensor("image", (1, 3, "height", "width"), f"the target crop, sides multiples of 32; {IMAGE}"),
         Tensor("prompt_maps", (1, "prompt_channels", "height", "width"),
                "the crop's prompt maps in the model's prompt_layout")),
        (Tensor("logits", (1, 3, "height", "width"), "FBU logits: background, foreground, uncertain"),),
        "NTClick's Explicit Coarse Perception",
    ),
    "hrr_body": GraphSpec(
        "hrr_body",
        (Tensor("image", (1, 3, "height", "width"), f"full-resolution region, sides multiples of 128; {IMAGE}"),
         Tensor("fbu", (1, 3, "height", "width"), "one-hot FBU map (background, foreground, uncertain)")),
        (Tensor("x2", (1, "channels", "half_height", "half_width"), "the decoder's stride-2 map"),),
        "NTClick's HRR up to its full-resolution stage",
    ),
    "hrr_final": GraphSpec(
        "hrr_final",
        (Tensor("x2", (1, "channels", "rows", "width"), "rows of the stride-2 map (hrr_body's x2)"),
         Tensor("image", (1, 3, "full_rows", "full_width"), "the matching full-resolution rows (2x)")),
        (Tensor("logits", (1, 1, "full_rows", "full_width"), "mask logits of those rows"),),
        "NTClick's HRR full-resolution stage, run stripe by stripe",
    ),
}


#: ``hrr_body`` of an HRR with a click input (``click_channels``, a departure from the paper): the click maps too.
HRR_BODY_WITH_CLICKS = GraphSpec(
    "hrr_body",
    (*SPECS["hrr_body"].inputs,
     Tensor("clicks", (1, "click_channels", "height", "width"),
            "click disks [positive, negative, tolerant] (padding: zero)")),
    SPECS["hrr_body"].outputs,
    "NTClick's HRR (with its click input) up to its full-resolution stage",
)


def xl_specs(forms: tuple[str, ...], context_size: int | None) -> dict[str, GraphSpec]:
    """FocalClick-XL's graphs: ``context_net``, ``object_<form>`` per form, ``detail_net``. ``context_size``: the
    context encoder's one input side (a SAM-style encoder, padded to a square), None when any size works."""
    side: tuple[str | int, str | int] = (context_size, context_size) if context_size else ("height", "width")
    context = Tensor("context", (1, "context_channels", "context_height", "context_width"),
                     "the context_net's features of the image (computed once per image)")
    specs = {"context_net": GraphSpec(
        "context_net",
        (Tensor("image", (1, 3, *side), f"the whole image, long side networks.context_net.input_size, zero-padded at "
                                        f"the bottom / right (to a square or to a multiple of 16); {IMAGE}"),),
        (Tensor("features", (1, "context_channels", "context_height", "context_width"),
                "context features at stride networks.context_net.stride"),),
        "FocalClick-XL's Context-Net, once per image")}
    for form in forms:
        name = f"object_{form}"
        specs[name] = GraphSpec(
            name,
            (Tensor("image", (1, 3, "height", "width"), f"the target crop resized to the Object-Net size; {IMAGE}"),
             Tensor("prompt_maps", (1, "prompt_channels", "height", "width"),
                    f"the crop's prompt maps of the {form} form (inputs.forms), in inputs.prompt_layout"),
             context,
             Tensor("boxes", (1, 4), "the crop's box (x0, y0, x1, y1; pixel edges) in the context input's pixels")),
            (Tensor("logits", (1, 1, "height", "width"), "the primitive mask's logits"),),
            f"FocalClick-XL's Object-Net with the {form} prompting layer (context RoIAligned inside)")
    specs["detail_net"] = GraphSpec(
        "detail_net",
        (Tensor("image", ("patches", 3, "height", "width"), f"the detail patches, resized; {IMAGE}"),
         Tensor("trimap", ("patches", "trimap_channels", "height", "width"),
                "each patch's trimap (inputs.trimap)")),
        (Tensor("alpha", ("patches", 1, "height", "width"), "alpha in [0, 1] of each patch"),),
        "FocalClick-XL's Detail-Net on a batch of patches")
    return specs


class SegmentorGraph(nn.Module):
    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        self.net = segmentor

    def forward(self, image: torch.Tensor, prompt_maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(image, prompt_maps)
        return out["logits"], out["features"]


class RefinerGraph(nn.Module):
    def __init__(self, refiner: nn.Module) -> None:
        super().__init__()
        self.net = refiner

    def forward(self, image: torch.Tensor, prompt_maps: torch.Tensor, coarse_logits: torch.Tensor,
                features: torch.Tensor) -> torch.Tensor:
        return self.net(image, prompt_maps, coarse_logits, features)["logits"]


class ECPGraph(nn.Module):
    def __init__(self, ecp: nn.Module) -> None:
        super().__init__()
        self.net = ecp

    def forward(self, image: torch.Tensor, prompt_maps: torch.Tensor) -> torch.Tensor:
        return self.net(image, prompt_maps)["logits"]


class HRRBodyGraph(nn.Module):
    """:meth:`NTClickHRR.encode` and the decoder's stages at strides 8, 4 and 2 on a padded input."""

    def __init__(self, hrr: nn.Module) -> None:
        super().__init__()
        self.net = hrr

    def forward(self, image: torch.Tensor, fbu: torch.Tensor, clicks: torch.Tensor | None = None) -> torch.Tensor:
        hrr = self.net
        x = hrr.encode(image, fbu, clicks)
        for stage, low in zip(hrr.stages[:3], (hrr.low[3], hrr.low[2], hrr.low[1])):
            x = stage(x, low(image))
        return x


class HRRFinalGraph(nn.Module):
    """The HRR's stride-1 stage and head on rows of the stride-2 map and the matching image rows."""

    def __init__(self, hrr: nn.Module) -> None:
        super().__init__()
        self.net = hrr

    def forward(self, x2: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        hrr = self.net
        return hrr.head(hrr.stages[3](x2, hrr.low[0](image)))


class XLContextGraph(nn.Module):
    """FocalClick-XL's Context-Net (:meth:`FocalClickXLNet.encode_context`)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net.encode_context(image)


class XLObjectGraph(nn.Module):
    """FocalClick-XL's Object-Net with one form's prompting layer (:meth:`FocalClickXLNet.forward_object`)."""

    def __init__(self, net: nn.Module, form: str) -> None:
        super().__init__()
        self.net = net
        self.form = form

    def forward(self, image: torch.Tensor, prompt_maps: torch.Tensor, context: torch.Tensor,
                boxes: torch.Tensor) -> torch.Tensor:
        return self.net.forward_object(image, prompt_maps, self.form, context, boxes)["logits"]


class XLDetailGraph(nn.Module):
    """FocalClick-XL's Detail-Net (:meth:`FocalClickXLNet.forward_detail`)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, trimap: torch.Tensor) -> torch.Tensor:
        return self.net.forward_detail(image, trimap)["alpha"]


def neighborhood_attention_gather(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int,
                                  rpb: torch.Tensor | None = None, scale: float | None = None,
                                  **_: object) -> torch.Tensor:
    """Neighborhood attention (:func:`finecut.models.attention.neighborhood_attention_torch`'s semantics) with index
    gathers whose sizes follow the input, for tracing. Both grid sides must be at least ``kernel_size`` (the HRR's
    are: its input is padded to 128 pixels = 8 tokens, window 7).

    Per axis, query ``i`` sees keys ``s(i) + a`` (``a < k``, ``s(i) = clamp(i - k // 2, 0, L - k)``); keys and values
    are gathered row-window first (``k`` times the memory), then one column offset at a time."""
    ks = int(kernel_size)
    batch, heads, height, width, dim = q.shape
    scale = dim ** -0.5 if scale is None else float(scale)

    def windows(ones: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = ones.cumsum(0) - 1  # arange(L) from a slice of the input: traced with the input's size
        last = index[-1:]
        starts = torch.minimum((index - ks // 2).clamp(min=0), last - (ks - 1))
        keys = starts[:, None] + torch.arange(ks, dtype=index.dtype)[None, :]  # (L, k)
        return keys, keys - index[:, None] + (ks - 1)  # key indices, bias-table indices

    ones = torch.ones_like(q[0, 0, :, 0, 0], dtype=torch.int64)
    rows, rel_rows = windows(ones)
    cols, rel_cols = windows(torch.ones_like(q[0, 0, 0, :, 0], dtype=torch.int64))
    q = q * scale
    k_rows = k.index_select(2, rows.reshape(-1)).reshape(batch, heads, height, ks, width, dim)
    logits = []
    for b in range(ks):
        k_rb = k_rows.index_select(4, cols[:, b])  # (B, heads, H, k, W, d)
        logits.append((q.unsqueeze(3) * k_rb).sum(-1))  # (B, heads, H, k, W)
    attn = torch.stack(logits, dim=-1)  # (B, heads, H, k(a), W, k(b))
    if rpb is not None:
        table = rpb.to(q.dtype).index_select(1, rel_rows.reshape(-1))  # (heads, H*k, 2k-1)
        table = table.reshape(heads, height, ks, 2 * ks - 1).index_select(3, rel_cols.reshape(-1))
        attn = attn + table.reshape(heads, height, ks, width, ks)
    attn = attn.permute(0, 1, 2, 4, 3, 5).reshape(batch, heads, height, width, ks * ks).softmax(dim=-1)
    attn = attn.reshape(batch, heads, height, width, ks, ks).permute(0, 1, 2, 4, 3, 5)  # (B, h, H, a, W, b)
    v_rows = v.index_select(2, rows.reshape(-1)).reshape(batch, heads, height, ks, width, dim)
    out = None
    for b in range(ks):
        term = (attn[..., b].unsqueeze(-1) * v_rows.index_select(4, cols[:, b])).sum(3)  # (B, h, H, W, d)
        out = term if out is None else out + term
    assert out is not None
    return out


@contextlib.contextmanager
def traceable_attention() -> Iterator[None]:
    """While exporting: :class:`~finecut.models.attention.TokenAttention2d` uses :func:`neighborhood_attention_gather`
    (same result; the tiled path's Python loops would be frozen by the trace)."""
    original = attention.neighborhood_attention
    attention.neighborhood_attention = neighborhood_attention_gather  # type: ignore[assignment]
    try:
        yield
    finally:
        attention.neighborhood_attention = original  # type: ignore[assignment]


def xl_net(networks: dict[str, nn.Module | None]) -> nn.Module:
    """The FocalClick-XL net behind an XL engine's network calls (:class:`~finecut.pipelines.focalclick_xl.
    XLObjectNetwork` and its siblings hold it as ``net``)."""
    return networks["object_net"].net  # type: ignore[union-attr]


def graph_specs(networks: dict[str, nn.Module | None]) -> dict[str, GraphSpec]:
    """The specs of the graphs :func:`graph_modules` gives for ``networks`` (by graph name)."""
    if "object_net" not in networks:
        if getattr(getattr(networks.get("hrr"), "config", None), "click_channels", 0):
            return {**SPECS, "hrr_body": HRR_BODY_WITH_CLICKS}
        return SPECS
    net = xl_net(networks)
    encoder = net.context
    return xl_specs(tuple(net.forms), int(encoder.input_size) if getattr(encoder, "pad_square", False) else None)


def graph_modules(networks: dict[str, nn.Module | None]) -> dict[str, nn.Module]:
    """The traceable wrappers of a method's networks (``networks``: an engine's sub-networks by attribute name:
    ``segmentor`` and ``refiner`` (None for a net without one), ``ecp`` and ``hrr``, or FocalClick-XL's
    ``context_net``, ``object_net`` and ``detail_net``)."""
    if "object_net" in networks:
        net = xl_net(networks)
        objects = {f"object_{form}": XLObjectGraph(net, form) for form in net.forms}
        return {"context_net": XLContextGraph(net), **objects, "detail_net": XLDetailGraph(net)}
    if "ecp" in networks:
        return {"ecp": ECPGraph(networks["ecp"]), "hrr_body": HRRBodyGraph(networks["hrr"]),
                "hrr_final": HRRFinalGraph(networks["hrr"])}
    graphs: dict[str, nn.Module] = {"segmentor": SegmentorGraph(networks["segmentor"])}
    if networks.get("refiner") is not None:
        graphs["refiner"] = RefinerGraph(networks["refiner"])
    return graphs


__all__ = [
    "SPECS",
    "GraphSpec",
    "Tensor",
    "XLContextGraph",
    "XLDetailGraph",
    "XLObjectGraph",
    "graph_modules",
    "graph_specs",
    "neighborhood_attention_gather",
    "traceable_attention",
    "xl_net",
    "xl_specs",
]
