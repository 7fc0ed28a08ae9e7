"""FocalClick-XL's networks: Context-Net, Object-Net with one Prompting Layer per interaction form, Detail-Net.

One checkpoint (``arch`` ``focalclick_xl``, :class:`FocalClickXLNet`) holds three subnets and the prompting layers;
the pipeline (Target Crop, progressive magnification, merge) lives in :mod:`finecut.pipelines`; these modules only
map tensors to tensors.

* **Context-Net** (``net.context``) — a whole-image encoder run once per image (:meth:`FocalClickXLNet.encode_context`),
  features at stride 16. Two encoders: :class:`ContextLite0Encoder` (EfficientNet-Lite0 from ImageNet weights + a
  small FPN neck; finecut's shipped default — a departure from the paper, which uses SAM's ViT, because no SAM
  weights exist offline) and :class:`~finecut.models.sam_vit.SamViTAdapterEncoder` (the paper's SAM ViT-B with a
  Conv-GELU-Conv adapter after each block; an official SAM checkpoint loads into it from a local path,
  :func:`~finecut.models.sam_vit.load_sam_image_encoder`). Both take the whole image resized so its longest side is
  ``input_size`` (:func:`context_input_geometry`; SAM also pads to a square).
* **Object-Net** (``net.object``, :class:`ObjectNet`) — the trained default's segmentor architecture
  (EfficientNet-Lite0 + FPN head, :mod:`finecut.models.focalclick`) on the zoomed-in object patch (256 x 256 in the
  paper). The interaction maps are encoded by the **Prompting Layer** of the current interaction form
  (``net.prompting[form]``, RITM's Conv1S: 1x1 conv, LeakyReLU, stride-2 3x3 conv, learnable 0.05 scale) and added
  to the stem features; the Context-Net's features, RoIAligned to the object patch, are projected by zero-initialised
  1x1 convs and added to the backbone's stride-16 and stride-32 features before the head. Output: the primitive
  mask's logits.
* **Detail-Net** (``net.detail``, :class:`~finecut.models.detail_net.DetailNet`) — a small U-Net on a batch of
  patches around low-confidence pixels (64 x 64 by default): RGB + trimap -> alpha.

**Inputs.** Every interaction form is the same bi-map (positive, negative) plus the previous mask: the prompt layout
is :data:`XL_PROMPT_LAYOUT` = ``previous_mask, positive, negative`` (declared as :attr:`FocalClickXLNet.input_spec`,
so pipelines and training build the maps with :mod:`finecut.model_inputs`). Clicks are disks, scribbles strokes
(width 3-7), a box a filled rectangle in the positive channel, a coarse mask the positive channel with an empty
negative one. Images are ImageNet-normalised (SAM's pixel statistics are ImageNet's).

**Transfer.** Train on clicks first (``prompting["clicks"]`` with everything else), then tune only the prompting
layer of each other form (:meth:`FocalClickXLNet.train_only_prompting`); each is ~4.7 k parameters (19 kB).

**Initialisation.** :func:`init_object_from_focalclick` copies the shipped ``focalclick-lite0-v2`` segmentor into the
Object-Net (backbone and head tensor for tensor; its click encoder into every prompting layer, keeping the input
channels of the XL layout) and reports what it copied; :meth:`FocalClickXLNet.load_imagenet` loads the Lite0 ImageNet
weights into the context encoder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from finecut.errors import FinecutError
from finecut.model_inputs import InputSpec
from finecut.models.backbones import build_backbone
from finecut.models.detail_net import DetailNet
from finecut.models.efficientnet import EfficientNetLite0
from finecut.models.heads import build_head
from finecut.models.layers import ClickFusion, ConvBNReLU, SeparableConvBNReLU
from finecut.models.roi_align import roi_align
from finecut.models.sam_vit import SamViTAdapterEncoder, sam_vit_config
from finecut.models.warm_start import (
    WarmStartReport,
    focalclick_source,
    prompt_columns,
    read_focalclick_segmentor,
)

#: The interaction forms, each with its own prompting layer; ``clicks`` is the one trained with the whole network.
FORMS: tuple[str, ...] = ("clicks", "scribbles", "box", "coarse_mask")
#: The prompt layout of every form: the previous mask and the bi-map.
XL_PROMPT_LAYOUT: tuple[str, ...] = ("previous_mask", "positive", "negative")
#: Patch sizes of progressive magnification (the paper's): the Object-Net's patch and the Detail-Net's patches.
OBJECT_SIZE = 256
DETAIL_SIZE = 64


# --------------------------------------------------------------------------------------------------- Context-Net


class ContextLite0Encoder(nn.Module):
    """EfficientNet-Lite0 over the whole image and a small top-down neck: ``out_channels`` at stride 16.

    ``forward(image) -> (B, out_channels, ceil(H/32)*2, ceil(W/32)*2)`` (the input is zero-padded at the bottom /
    right to a multiple of 32, so feature cell ``i`` covers input pixels ``16 i .. 16 i + 15`` exactly).
    ``input_size``: the longest side the pipeline resizes the whole image to (no square padding).
    """

    stride = 16
    pad_square = False

    def __init__(self, out_channels: int = 128, input_size: int = 512) -> None:
        super().__init__()
        if out_channels < 1 or input_size < 32:
            raise FinecutError(f"context encoder needs out_channels >= 1 and input_size >= 32, got "
                               f"{out_channels}, {input_size}")
        self.out_channels = int(out_channels)
        self.input_size = int(input_size)
        self.backbone = EfficientNetLite0()
        c16, c32 = self.backbone.out_channels[2], self.backbone.out_channels[3]
        self.lateral16 = ConvBNReLU(c16, self.out_channels, 1)
        self.lateral32 = ConvBNReLU(c32, self.out_channels, 1)
        self.smooth = SeparableConvBNReLU(self.out_channels, self.out_channels)

    def load_pretrained(self, path: str | os.PathLike[str] | None = None) -> None:
        """ImageNet weights of EfficientNet-Lite0 (the installed package's file by default)."""
        self.backbone.load_pretrained(path)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        pad_h, pad_w = (-h) % 32, (-w) % 32
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h))
        feats = self.backbone(image)
        x16, x32 = self.lateral16(feats[2]), self.lateral32(feats[3])
        x = x16 + F.interpolate(x32, size=x16.shape[-2:], mode="bilinear", align_corners=False)
        return self.smooth(x)


def build_context_encoder(type: str = "efficientnet_lite0", **options: Any) -> nn.Module:
    """A Context-Net by ``type``: ``efficientnet_lite0`` (:class:`ContextLite0Encoder`: ``out_channels``,
    ``input_size``) or ``sam_vit`` (:class:`SamViTAdapterEncoder`: ``variant`` ``b`` / ``l`` / ``h`` and any
    :class:`~finecut.models.sam_vit.SamViTConfig` field, e.g. ``adapter_dim``, or a tiny ``depth`` / ``embed_dim``
    for tests). Every encoder has ``stride``, ``out_channels``, ``input_size`` and ``pad_square``."""
    if type == "efficientnet_lite0":
        return ContextLite0Encoder(**options)
    if type == "sam_vit":
        options = dict(options)
        return SamViTAdapterEncoder(sam_vit_config(options.pop("variant", "b"), **options))
    raise FinecutError(f"unknown context encoder {type!r}; known: efficientnet_lite0, sam_vit")


@dataclass(frozen=True)
class ContextGeometry:
    """Where the whole image goes in the Context-Net's input: scaled by ``scale_xy`` to ``resized`` (h, w), then
    zero-padded at the bottom / right to ``padded`` (h, w)."""

    image_hw: tuple[int, int]
    resized: tuple[int, int]
    padded: tuple[int, int]

    @property
    def scale_xy(self) -> tuple[float, float]:
        return self.resized[1] / self.image_hw[1], self.resized[0] / self.image_hw[0]

    def map_box(self, box: Sequence[float]) -> tuple[float, float, float, float]:
        """An image box (x0, y0, x1, y1; pixel edges) in the context input's coordinates (the RoIAlign box)."""
        sx, sy = self.scale_xy
        x0, y0, x1, y1 = (float(v) for v in box)
        return x0 * sx, y0 * sy, x1 * sx, y1 * sy


def context_input_geometry(height: int, width: int, input_size: int, pad_square: bool = False,
                           multiple: int = 16) -> ContextGeometry:
    """The Context-Net input of an image of ``height`` x ``width``: the longest side resized to ``input_size``
    (SAM's ``ResizeLongestSide``: ``int(side * scale + 0.5)``), padded to ``input_size`` square (SAM) or to a
    multiple of ``multiple``."""
    if height < 1 or width < 1 or input_size < 1:
        raise FinecutError(f"bad context geometry {height}x{width} -> {input_size}")
    scale = input_size / max(height, width)
    rh, rw = max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))
    if pad_square:
        padded = (input_size, input_size)
    else:
        padded = (-(-rh // multiple) * multiple, -(-rw // multiple) * multiple)
    return ContextGeometry((int(height), int(width)), (rh, rw), padded)


# ---------------------------------------------------------------------------------------------------- Object-Net


class ObjectNet(nn.Module):
    """The Object-Net: a segmentor backbone whose stem output receives the prompting layer's encoding, the Context-Net
    features RoIAligned to the patch added at ``context_levels``, and a decoder head.

    ``forward(image, prompt_features, context=None, boxes=None, context_stride=16)``: image (B,3,H,W) normalised;
    ``prompt_features`` the prompting layer's output, the stem's shape; ``context`` (B or 1, C, h, w) the
    Context-Net features and ``boxes`` (B, 4) the patch's box (x0, y0, x1, y1) in the context input's pixels
    (None: the whole context map). Returns ``logits`` (B,1,H,W), ``logits_lowres`` at the head's stride and
    ``features`` (the head's last map) — the segmentor's outputs (:class:`~finecut.models.focalclick.FocalClickSegmentor`).
    """

    def __init__(self, backbone: str = "efficientnet_lite0", head: str = "fpn", head_channels: int = 64,
                 context_channels: int = 128, context_levels: Sequence[int] = (2, 3),
                 backbone_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, **(backbone_options or {}))
        if not hasattr(self.backbone, "forward_stem"):
            raise FinecutError(f"backbone {backbone!r} has no separate stem for the prompting layer")
        out_channels = list(self.backbone.out_channels)
        self.context_levels = tuple(int(level) for level in context_levels)
        if any(not 0 <= level < len(out_channels) for level in self.context_levels):
            raise FinecutError(f"context_levels {list(self.context_levels)} out of range for {len(out_channels)} "
                               "backbone levels")
        self.context_proj = nn.ModuleList(nn.Conv2d(context_channels, out_channels[level], 1)
                                          for level in self.context_levels)
        for conv in self.context_proj:  # the context starts with no effect: the initial net is the segmentor
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.head = build_head(head, out_channels, head_channels)
        self.stem_channels = int(self.backbone.stem_channels)
        self.stem_stride = int(self.backbone.stem_stride)
        self.feature_channels = head_channels

    def forward(self, image: torch.Tensor, prompt_features: torch.Tensor, context: torch.Tensor | None = None,
                boxes: torch.Tensor | None = None, context_stride: int = 16) -> dict[str, torch.Tensor]:
        feats = list(self.backbone.forward_body(self.backbone.forward_stem(image) + prompt_features))
        if context is not None and self.context_levels:
            batch = image.shape[0]
            if context.shape[0] not in (1, batch):
                raise FinecutError(f"context features of batch {context.shape[0]} for {batch} object patches")
            if context.shape[0] != batch:
                context = context.expand(batch, -1, -1, -1)
            if boxes is None:
                h, w = context.shape[-2:]
                boxes = context.new_tensor([0.0, 0.0, w * context_stride, h * context_stride]).expand(batch, 4)
            for proj, level in zip(self.context_proj, self.context_levels):
                target = feats[level]
                roi = roi_align(context, boxes.to(context.dtype), tuple(target.shape[-2:]),
                                spatial_scale=1.0 / context_stride, sampling_ratio=2)
                feats[level] = target + proj(roi)
        logits_low, features = self.head(feats)
        logits = F.interpolate(logits_low, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return {"logits": logits, "logits_lowres": logits_low, "features": features}


def prompting_layer(stem_channels: int, stem_stride: int, hidden: int = 16) -> ClickFusion:
    """One interaction form's Prompting Layer: RITM's Conv1S from the :data:`XL_PROMPT_LAYOUT` maps to the stem
    features (:class:`~finecut.models.layers.ClickFusion`, the trained default's click encoder)."""
    return ClickFusion(len(XL_PROMPT_LAYOUT), stem_channels, stem_stride, hidden=hidden)


# ------------------------------------------------------------------------------------------------ the whole model


class FocalClickXLNet(nn.Module):
    """FocalClick-XL's three subnets and its prompting layers, saved and loaded as one checkpoint.

    Config (``{"arch": "focalclick_xl", ...}``): ``context_net`` (:func:`build_context_encoder` options, ``type``
    first), ``object_net`` (:class:`ObjectNet` options; ``context_channels`` comes from the context encoder),
    ``detail_net`` (:class:`~finecut.models.detail_net.DetailNet` options), ``forms`` (the prompting layers),
    ``prompt_hidden`` (their hidden width) and any inference-pipeline settings (kept in :attr:`pipeline`, e.g.
    ``object_size``, ``detail_size``).

    Calls: :meth:`encode_context` once per image; :meth:`forward_object` (also ``forward``) per interaction on the
    object patch; :meth:`forward_detail` on a batch of detail patches.
    """

    def __init__(self, context_net: dict[str, Any] | None = None, object_net: dict[str, Any] | None = None,
                 detail_net: dict[str, Any] | None = None, forms: Sequence[str] = FORMS, prompt_hidden: int = 16,
                 **pipeline: Any) -> None:
        super().__init__()
        misnamed = sorted(set(pipeline) & {"context", "object", "detail"})
        if misnamed:
            raise FinecutError(f"FocalClick-XL options are context_net / object_net / detail_net, got {misnamed}")
        forms = tuple(str(f) for f in forms)
        if not forms or "clicks" not in forms or len(set(forms)) != len(forms):
            raise FinecutError(f"forms must be distinct names including 'clicks', got {list(forms)}")
        self.forms = forms
        self.context = build_context_encoder(**{"type": "efficientnet_lite0", **(context_net or {})})
        object_options = dict(object_net or {})
        object_options["context_channels"] = self.context.out_channels
        self.object = ObjectNet(**object_options)
        self.prompting = nn.ModuleDict(
            {form: prompting_layer(self.object.stem_channels, self.object.stem_stride, prompt_hidden)
             for form in forms})
        self.detail = DetailNet(**(detail_net or {}))
        #: Inference-pipeline settings stored with the architecture (patch sizes, thresholds, ...).
        self.pipeline = {"object_size": OBJECT_SIZE, "detail_size": DETAIL_SIZE, **pipeline}
        self._tuning_form: str | None = None

    @property
    def input_spec(self) -> InputSpec:
        """Every form's prompt maps: ``previous_mask, positive, negative`` (:data:`XL_PROMPT_LAYOUT`)."""
        return InputSpec(XL_PROMPT_LAYOUT)

    @property
    def prompt_channels(self) -> int:
        return len(XL_PROMPT_LAYOUT)

    # ---- the three calls
    def encode_context(self, image: torch.Tensor) -> torch.Tensor:
        """The Context-Net's features (B, C, h, w) at stride :attr:`context_stride` of the whole, normalised image
        (resized and padded as :func:`context_input_geometry` says). Run once per image."""
        return self.context(image)

    @property
    def context_stride(self) -> int:
        return int(self.context.stride)

    def prompt_features(self, prompt_maps: torch.Tensor, form: str = "clicks") -> torch.Tensor:
        if prompt_maps.shape[1] != len(XL_PROMPT_LAYOUT):
            raise FinecutError(f"FocalClick-XL takes {len(XL_PROMPT_LAYOUT)} prompt maps {list(XL_PROMPT_LAYOUT)}, "
                               f"got {prompt_maps.shape[1]}")
        return self.prompting_layer(form)(prompt_maps)

    def prompting_layer(self, form: str) -> nn.Module:
        if form not in self.prompting:
            raise FinecutError(f"no prompting layer for interaction form {form!r}; this model has {list(self.forms)}")
        return self.prompting[form]

    def forward_object(self, image: torch.Tensor, prompt_maps: torch.Tensor, form: str = "clicks",
                       context: torch.Tensor | None = None, boxes: torch.Tensor | None = None
                       ) -> dict[str, torch.Tensor]:
        """The primitive mask of the object patch: image (B,3,h,w) normalised, prompt maps (B,3,h,w) in
        :data:`XL_PROMPT_LAYOUT`, the form's prompting layer, and (optionally) the cached context features with
        the patch boxes (B, 4) in the context input's pixels."""
        return self.object(image, self.prompt_features(prompt_maps, form), context, boxes, self.context_stride)

    forward = forward_object

    def forward_detail(self, image: torch.Tensor, trimap: torch.Tensor) -> dict[str, torch.Tensor]:
        """Alpha of a batch of detail patches: image (N,3,p,p) normalised, trimap (N,3,p,p) one-hot."""
        return self.detail(image, trimap)

    # ---- training helpers
    def prompting_parameters(self, form: str) -> list[nn.Parameter]:
        return list(self.prompting_layer(form).parameters())

    def prompting_bytes(self, form: str) -> int:
        """Storage of one form's prompting layer in a checkpoint (float32)."""
        return sum(t.numel() * 4 for t in self.prompting_layer(form).state_dict().values())

    def train_only_prompting(self, form: str) -> list[nn.Parameter]:
        """The paper's transfer: every parameter frozen but ``form``'s prompting layer's (returned). From now on
        :meth:`train` keeps every other module in eval mode, so the shared subnets' BatchNorm statistics do not drift
        while one form is tuned (the other forms keep computing what they did); :meth:`unfreeze` ends this."""
        keep = {id(p) for p in self.prompting_parameters(form)}
        for p in self.parameters():
            p.requires_grad_(id(p) in keep)
        self._tuning_form = form
        self.train(self.training)
        return [p for p in self.parameters() if p.requires_grad]

    def unfreeze(self) -> None:
        """Every parameter trainable again and :meth:`train` back to normal."""
        for p in self.parameters():
            p.requires_grad_(True)
        self._tuning_form = None
        self.train(self.training)

    def train(self, mode: bool = True) -> FocalClickXLNet:
        super().train(mode)
        form = getattr(self, "_tuning_form", None)
        if mode and form is not None:
            for name, child in self.named_children():
                if name != "prompting":
                    child.eval()
            for name, layer in self.prompting.items():
                layer.train(name == form)
        return self

    def copy_prompting(self, source: str, target: str) -> None:
        """Start ``target``'s prompting layer from ``source``'s (e.g. scribbles from clicks before tuning)."""
        self.prompting_layer(target).load_state_dict(self.prompting_layer(source).state_dict())

    def load_imagenet(self, path: str | os.PathLike[str] | None = None) -> None:
        """EfficientNet-Lite0 ImageNet weights into the Lite0 context encoder."""
        if not isinstance(self.context, ContextLite0Encoder):
            raise FinecutError("ImageNet weights are for the EfficientNet-Lite0 context encoder; load SAM weights "
                               "with finecut.models.sam_vit.load_sam_image_encoder")
        self.context.load_pretrained(path)


def build_focalclick_xl(**config: Any) -> FocalClickXLNet:
    return FocalClickXLNet(**config)


# ----------------------------------------------------------------------------- initialising from the default model


#: What :func:`init_object_from_focalclick` did (kept under its old name).
XLInitReport = WarmStartReport


def init_object_from_focalclick(net: FocalClickXLNet, source: str | os.PathLike[str] | Mapping[str, torch.Tensor],
                                layout: Sequence[str] | None = None, context_backbone: bool = False,
                                forms: Sequence[str] | None = None, zero_context: bool = False) -> XLInitReport:
    """Initialise the Object-Net and every prompting layer from a trained FocalClick segmentor (finecut's
    ``focalclick-lite0-v2``: the best initialisation available here) where the shapes allow.

    ``source`` is a checkpoint path (``NAME`` / ``NAME.json`` / ``NAME.safetensors``) or a state dict (then
    ``layout`` is its prompt layout). Copied: ``segmentor.backbone.*`` -> ``object.backbone.*``, ``segmentor.head.*``
    -> ``object.head.*`` (same names, same shapes); ``segmentor.click_fusion.net.*`` -> ``prompting.<form>.net.*``
    for every form, the first conv's input channels picked by name (the source's ``previous_mask``, ``positive``,
    ``negative`` columns; a name the source lacks stays at init). The context projections stay at zero, so the
    initialised Object-Net computes the segmentor's logits exactly (with the source's tolerant channel empty).
    ``context_backbone=True`` also starts the Lite0 context encoder's backbone from the segmentor's (instead of
    ImageNet's). The refiner is not used (the Detail-Net is another network).

    ``forms`` limits which prompting layers take the segmentor's click encoder (None: every form); the others keep
    their weights. ``zero_context=True`` sets the context projections back to zero (a trained XL's projections were
    fitted to its old Object-Net), so that the clicks form again computes the segmentor's logits exactly."""
    if forms is not None:
        unknown = sorted(set(forms) - set(net.forms))
        if unknown:
            raise FinecutError(f"prompting layers {unknown}: the network has {list(net.forms)}")
    state, source_layout, prefix = focalclick_source(source, layout)
    target = net.state_dict()
    report = WarmStartReport()
    updates: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def copy(src: str, dst: str) -> None:
        if dst in target and tuple(target[dst].shape) == tuple(state[src].shape):
            updates[dst] = state[src]
            report.copied.append(dst)
            used.add(src)

    for key in state:
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name.startswith(("backbone.", "head.")):
            copy(key, f"object.{name}")
            if context_backbone and name.startswith("backbone.") and isinstance(net.context, ContextLite0Encoder):
                copy(key, f"context.{name}")
        elif name.startswith("click_fusion.net."):
            rest = name[len("click_fusion."):]
            for form in net.forms if forms is None else forms:
                dst = f"prompting.{form}.{rest}"
                if dst not in target:
                    continue
                if rest == "net.0.weight":
                    want = prompt_columns(state[key], target[dst], source_layout, XL_PROMPT_LAYOUT)
                    if want is not None:
                        updates[dst] = want
                        report.sliced.append(dst)
                        used.add(key)
                else:
                    copy(key, dst)
    if zero_context:
        for name, value in target.items():
            if name.startswith("object.context_proj."):
                updates[name] = torch.zeros_like(value)
    net.load_state_dict(updates, strict=False)
    touched = set(updates)
    report.copied = sorted(set(report.copied))
    report.sliced = sorted(set(report.sliced))
    report.left_at_init = sorted(k for k in target if k.startswith(("object.", "prompting.")) and k not in touched)
    report.unused = sorted(k for k in state if k not in used)
    return report


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_table(net: FocalClickXLNet) -> dict[str, int]:
    """Parameters per part: context, object, each prompting layer, detail, total."""
    table = {"context": count_parameters(net.context), "object": count_parameters(net.object)}
    for form in net.forms:
        table[f"prompting.{form}"] = count_parameters(net.prompting[form])
    table["detail"] = count_parameters(net.detail)
    table["total"] = count_parameters(net)
    return table


__all__ = [
    "DETAIL_SIZE",
    "FORMS",
    "OBJECT_SIZE",
    "XL_PROMPT_LAYOUT",
    "ContextGeometry",
    "ContextLite0Encoder",
    "FocalClickXLNet",
    "ObjectNet",
    "XLInitReport",
    "build_context_encoder",
    "build_focalclick_xl",
    "context_input_geometry",
    "count_parameters",
    "init_object_from_focalclick",
    "parameter_table",
    "prompting_layer",
    "read_focalclick_segmentor",
]
