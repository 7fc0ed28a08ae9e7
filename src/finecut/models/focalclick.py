"""FocalClick networks: a Segmentor (backbone + click fusion after the stem + head) and a light Refiner.

The inference pipeline (Target Crop, Focus Crop, Progressive Merge) lives in :mod:`finecut.pipelines.focalclick`;
these modules only map tensors to logits.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from finecut.errors import FinecutError
from finecut.model_inputs import IMAGENET_MEAN, IMAGENET_STD, PROMPT_CHANNELS, InputSpec, leading_layout
from finecut.models.backbones import build_backbone
from finecut.models.heads import build_head
from finecut.models.layers import ClickFusion, ConvBNReLU, SeparableConvBNReLU

#: The canonical prompt channel order (:data:`finecut.model_inputs.PROMPT_CHANNELS`, under its older name).
PROMPT_ORDER = PROMPT_CHANNELS


class FocalClickSegmentor(nn.Module):
    """Backbone whose stem output receives the encoded prompt maps (Conv1S), then a decoder head.

    ``forward(image, prompt_maps)``: image (B,3,H,W) ImageNet-normalized, prompt maps (B,P,H,W) in the layout
    :attr:`input_spec` declares (the first ``prompt_channels`` of :data:`~finecut.model_inputs.PROMPT_CHANNELS`).
    Returns ``logits`` (B,1,H,W), ``logits_lowres`` at the head's stride and ``features`` (the head's last feature
    map).

    Options for the official layouts (defaults keep finecut's own): ``backbone_options`` (constructor arguments of the
    backbone), ``click_fusion`` (``"stem"``: Conv1S after the stem; ``"side"``: the MiT side branch of ClickSEG,
    added after stage 1), ``fusion_activation`` (``"leaky_relu"`` or ``"relu"`` in the Conv1S encoder),
    ``input_scale`` (image and maps resized by this factor, bilinear with aligned corners, before the network, as
    FocalClick's S1 pipeline's 0.5) and ``align_corners`` (of the final upsampling of the logits).
    """

    def __init__(self, backbone: str = "efficientnet_lite0", head: str = "fpn", head_channels: int = 64,
                 prompt_channels: int = 4, backbone_options: dict[str, Any] | None = None,
                 click_fusion: str = "stem", fusion_activation: str = "leaky_relu", input_scale: float = 1.0,
                 align_corners: bool = False) -> None:
        super().__init__()
        if click_fusion not in ("stem", "side"):
            raise FinecutError(f"click_fusion must be 'stem' or 'side', got {click_fusion!r}")
        if not 0 < float(input_scale) <= 1:
            raise FinecutError(f"input_scale must be in (0, 1], got {input_scale}")
        self.prompt_channels = prompt_channels
        self.input_scale = float(input_scale)
        self.align_corners = bool(align_corners)
        options = dict(backbone_options or {})
        self.side_fusion = click_fusion == "side"
        if self.side_fusion:
            options["side_in_chans"] = prompt_channels
        self.backbone = build_backbone(backbone, **options)
        if self.side_fusion:
            if not hasattr(self.backbone, "embed_side"):
                raise FinecutError(f"backbone {backbone!r} has no side branch for click_fusion='side'")
            self.click_fusion = None
        else:
            self.click_fusion = ClickFusion(prompt_channels, self.backbone.stem_channels, self.backbone.stem_stride,
                                            activation=fusion_activation)
        self.head = build_head(head, list(self.backbone.out_channels), head_channels)
        self.feature_channels = head_channels

    @property
    def input_spec(self) -> InputSpec:
        """The prompt maps are the first ``prompt_channels`` of ``[previous_mask, positive, negative, tolerant]``."""
        return InputSpec(leading_layout(self.prompt_channels))

    def forward(self, image: torch.Tensor, prompt_maps: torch.Tensor) -> dict[str, torch.Tensor]:
        if prompt_maps.shape[1] != self.prompt_channels:
            raise ValueError(f"expected {self.prompt_channels} prompt channels, got {prompt_maps.shape[1]}")
        size = image.shape[-2:]
        if self.input_scale != 1.0:
            image = F.interpolate(image, scale_factor=self.input_scale, mode="bilinear", align_corners=True)
            prompt_maps = F.interpolate(prompt_maps, scale_factor=self.input_scale, mode="bilinear",
                                        align_corners=True)
        if self.click_fusion is None:
            feats = self.backbone.forward_body(self.backbone.forward_stem(image),
                                               side=self.backbone.embed_side(prompt_maps))
        else:
            feats = self.backbone.forward_body(self.backbone.forward_stem(image) + self.click_fusion(prompt_maps))
        logits_low, features = self.head(feats)
        logits = F.interpolate(logits_low, size=size, mode="bilinear", align_corners=self.align_corners)
        return {"logits": logits, "logits_lowres": logits_low, "features": features}


class FocalClickRefiner(nn.Module):
    """FocalClick's Refiner: Xception-style depthwise convs over the Focus Crop plus RoIAligned segmentor features.

    Inputs (all cropped to the Focus Crop): image (B,3,h,w) normalized, prompt maps (B,P,h,w), coarse logits (B,1,h,w),
    segmentor features (B,C,h',w'). Two heads give a detail map ``d`` and a boundary map ``b``; the refined logit is
    ``sigmoid(b) * d + (1 - sigmoid(b)) * coarse`` (FocalClick Eq. 1).
    """

    def __init__(self, feature_channels: int = 64, prompt_channels: int = 4, channels: int = 32,
                 click_channels: list[int] | tuple[int, ...] | None = None, bias: bool = False,
                 project_first: bool = False, align_corners: bool = False, unit_rgb: bool = False) -> None:
        """``click_channels`` picks the prompt channels the refiner sees (all by default; ClickSEG's official
        refiner sees positive and negative only, ``[1, 2]``); ``bias`` gives every conv a bias (official layout);
        ``project_first`` projects the segmentor features before resizing them (official order); ``align_corners``
        is used by every resize inside the refiner when ``project_first`` is set, and by the output upsampling;
        ``unit_rgb`` turns the ImageNet-normalised image back into [0, 1] RGB first (the official refiner is fed
        the raw image)."""
        super().__init__()
        self.unit_rgb = bool(unit_rgb)
        self.click_channels = None if click_channels is None else [int(c) for c in click_channels]
        if self.click_channels is not None and any(not 0 <= c < prompt_channels for c in self.click_channels):
            raise FinecutError(f"refiner click_channels {self.click_channels} out of range for {prompt_channels}")
        seen = prompt_channels if self.click_channels is None else len(self.click_channels)
        self.project_first = bool(project_first)
        self.align_corners = bool(align_corners)
        self.image_conv = nn.Sequential(
            ConvBNReLU(3 + seen + 1, channels, 3, stride=2, bias=bias),
            SeparableConvBNReLU(channels, channels, bias=bias),
            SeparableConvBNReLU(channels, channels, bias=bias),
        )
        self.feature_proj = ConvBNReLU(feature_channels, channels, 1, bias=bias)
        self.fusion = nn.Sequential(SeparableConvBNReLU(channels, channels, bias=bias),
                                    SeparableConvBNReLU(channels, channels, bias=bias))
        self.detail_head = nn.Conv2d(channels, 1, 3, 1, 1)
        self.boundary_head = nn.Conv2d(channels, 1, 3, 1, 1)

    def forward(self, image: torch.Tensor, prompt_maps: torch.Tensor, coarse_logits: torch.Tensor,
                features: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.click_channels is not None:
            prompt_maps = prompt_maps[:, self.click_channels]
        if self.unit_rgb:
            mean = image.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            std = image.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
            image = image * std + mean
        x = self.image_conv(torch.cat([image, prompt_maps, torch.sigmoid(coarse_logits)], dim=1))
        if self.project_first:
            f = F.interpolate(self.feature_proj(features), size=x.shape[-2:], mode="bilinear",
                              align_corners=self.align_corners)
        else:
            f = self.feature_proj(F.interpolate(features, size=x.shape[-2:], mode="bilinear", align_corners=False))
        x = self.fusion(x + f)
        size = image.shape[-2:]
        ac = self.align_corners
        detail = F.interpolate(self.detail_head(x), size=size, mode="bilinear", align_corners=ac)
        boundary = F.interpolate(self.boundary_head(x), size=size, mode="bilinear", align_corners=ac)
        gate = torch.sigmoid(boundary)
        logits = gate * detail + (1.0 - gate) * coarse_logits
        return {"logits": logits, "detail": detail, "boundary": boundary}


class FocalClickNet(nn.Module):
    """Segmentor + Refiner pair, saved and loaded as one checkpoint."""

    def __init__(self, backbone: str = "efficientnet_lite0", head: str = "fpn", head_channels: int = 64,
                 prompt_channels: int = 4, refiner_channels: int = 32,
                 segmentor_options: dict[str, Any] | None = None, refiner_options: dict[str, Any] | None = None,
                 **pipeline: Any) -> None:
        """``segmentor_options`` / ``refiner_options``: the extra :class:`FocalClickSegmentor` /
        :class:`FocalClickRefiner` arguments of the official layouts (absent for finecut's own models)."""
        super().__init__()
        self.prompt_channels = prompt_channels
        self.segmentor = FocalClickSegmentor(backbone, head, head_channels, prompt_channels,
                                             **(segmentor_options or {}))
        self.refiner = FocalClickRefiner(head_channels, prompt_channels, refiner_channels, **(refiner_options or {}))
        #: Inference-pipeline settings stored with the architecture (target size, expansions, ...).
        self.pipeline = dict(pipeline)

    @property
    def input_spec(self) -> InputSpec:
        """The segmentor's inputs (the refiner sees the same maps, or the channels ``click_channels`` picks)."""
        return self.segmentor.input_spec

    def forward(self, image: torch.Tensor, prompt_maps: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.segmentor(image, prompt_maps)


def build_focalclick(**config: Any) -> FocalClickNet:
    return FocalClickNet(**config)


def build_focalclick_segmentor(**config: Any) -> FocalClickSegmentor:
    return FocalClickSegmentor(**config)
