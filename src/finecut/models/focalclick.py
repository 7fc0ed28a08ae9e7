"""FocalClick networks: a Segmentor (backbone + click fusion after the stem + head) and a light Refiner.

The inference pipeline (Target Crop, Focus Crop, Progressive Merge) lives in :mod:`finecut.pipelines.focalclick`;
these modules only map tensors to logits.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from finecut.errors import FinecutError
from finecut.models.efficientnet import EfficientNetLite0
from finecut.models.layers import ClickFusion, ConvBNReLU, FPNHead, SeparableConvBNReLU
from finecut.models.registry import register_model

#: Prompt channel order shared by all interactive models.
PROMPT_ORDER = ("previous_mask", "positive", "negative", "tolerant")


def build_backbone(name: str) -> nn.Module:
    if name == "efficientnet_lite0":
        return EfficientNetLite0()
    backbones = importlib.import_module("finecut.models.backbones").BACKBONES
    if name not in backbones:
        raise FinecutError(f"unknown segmentor backbone {name!r}; known: efficientnet_lite0, {', '.join(backbones)}")
    return backbones[name]()


def build_head(name: str, in_channels: list[int], channels: int) -> nn.Module:
    if name == "fpn":
        return FPNHead(in_channels, channels)
    heads = importlib.import_module("finecut.models.heads").HEADS
    if name not in heads:
        raise FinecutError(f"unknown segmentor head {name!r}; known: fpn, {', '.join(heads)}")
    return heads[name](in_channels, channels)


class FocalClickSegmentor(nn.Module):
    """Backbone whose stem output receives the encoded prompt maps (Conv1S), then a decoder head.

    ``forward(image, prompt_maps)``: image (B,3,H,W) ImageNet-normalized, prompt maps (B,P,H,W) in the order
    :data:`PROMPT_ORDER` (first ``prompt_channels`` of it). Returns ``logits`` (B,1,H,W), ``logits_lowres`` at the
    head's stride and ``features`` (the head's last feature map).
    """

    def __init__(self, backbone: str = "efficientnet_lite0", head: str = "fpn", head_channels: int = 64,
                 prompt_channels: int = 4) -> None:
        super().__init__()
        self.prompt_channels = prompt_channels
        self.backbone = build_backbone(backbone)
        self.click_fusion = ClickFusion(prompt_channels, self.backbone.stem_channels, self.backbone.stem_stride)
        self.head = build_head(head, list(self.backbone.out_channels), head_channels)
        self.feature_channels = head_channels

    def forward(self, image: torch.Tensor, prompt_maps: torch.Tensor) -> dict[str, torch.Tensor]:
        if prompt_maps.shape[1] != self.prompt_channels:
            raise ValueError(f"expected {self.prompt_channels} prompt channels, got {prompt_maps.shape[1]}")
        x = self.backbone.forward_stem(image) + self.click_fusion(prompt_maps)
        logits_low, features = self.head(self.backbone.forward_body(x))
        logits = F.interpolate(logits_low, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return {"logits": logits, "logits_lowres": logits_low, "features": features}


class FocalClickRefiner(nn.Module):
    """FocalClick's Refiner: Xception-style depthwise convs over the Focus Crop plus RoIAligned segmentor features.

    Inputs (all cropped to the Focus Crop): image (B,3,h,w) normalized, prompt maps (B,P,h,w), coarse logits (B,1,h,w),
    segmentor features (B,C,h',w'). Two heads give a detail map ``d`` and a boundary map ``b``; the refined logit is
    ``sigmoid(b) * d + (1 - sigmoid(b)) * coarse`` (FocalClick Eq. 1).
    """

    def __init__(self, feature_channels: int = 64, prompt_channels: int = 4, channels: int = 32) -> None:
        super().__init__()
        self.image_conv = nn.Sequential(
            ConvBNReLU(3 + prompt_channels + 1, channels, 3, stride=2),
            SeparableConvBNReLU(channels, channels),
            SeparableConvBNReLU(channels, channels),
        )
        self.feature_proj = ConvBNReLU(feature_channels, channels, 1)
        self.fusion = nn.Sequential(SeparableConvBNReLU(channels, channels), SeparableConvBNReLU(channels, channels))
        self.detail_head = nn.Conv2d(channels, 1, 3, 1, 1)
        self.boundary_head = nn.Conv2d(channels, 1, 3, 1, 1)

    def forward(self, image: torch.Tensor, prompt_maps: torch.Tensor, coarse_logits: torch.Tensor,
                features: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.image_conv(torch.cat([image, prompt_maps, torch.sigmoid(coarse_logits)], dim=1))
        f = self.feature_proj(F.interpolate(features, size=x.shape[-2:], mode="bilinear", align_corners=False))
        x = self.fusion(x + f)
        size = image.shape[-2:]
        detail = F.interpolate(self.detail_head(x), size=size, mode="bilinear", align_corners=False)
        boundary = F.interpolate(self.boundary_head(x), size=size, mode="bilinear", align_corners=False)
        gate = torch.sigmoid(boundary)
        logits = gate * detail + (1.0 - gate) * coarse_logits
        return {"logits": logits, "detail": detail, "boundary": boundary}


class FocalClickNet(nn.Module):
    """Segmentor + Refiner pair, saved and loaded as one checkpoint."""

    def __init__(self, backbone: str = "efficientnet_lite0", head: str = "fpn", head_channels: int = 64,
                 prompt_channels: int = 4, refiner_channels: int = 32, **pipeline: Any) -> None:
        super().__init__()
        self.prompt_channels = prompt_channels
        self.segmentor = FocalClickSegmentor(backbone, head, head_channels, prompt_channels)
        self.refiner = FocalClickRefiner(head_channels, prompt_channels, refiner_channels)
        #: Inference-pipeline settings stored with the architecture (target size, expansions, ...).
        self.pipeline = dict(pipeline)

    def forward(self, image: torch.Tensor, prompt_maps: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.segmentor(image, prompt_maps)


@register_model("focalclick")
def build_focalclick(**config: Any) -> FocalClickNet:
    return FocalClickNet(**config)


@register_model("focalclick_segmentor")
def build_focalclick_segmentor(**config: Any) -> FocalClickSegmentor:
    return FocalClickSegmentor(**config)
