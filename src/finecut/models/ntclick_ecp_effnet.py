"""NTClick ECP on the default model's segmentor (``arch="ntclick_ecp_effnet"``) — a departure from the paper.

The paper's ECP is a plain ViT (:class:`finecut.models.ntclick.NTClickECP`, ``arch="ntclick_ecp"``, still available).
This variant is the segmentor of finecut's default model (:class:`finecut.models.focalclick.FocalClickSegmentor`:
EfficientNet-Lite0 backbone, RITM's Conv1S click fusion added to the stem output, FPN head) with a 3-class classifier,
so the ECP can start from the best trained weights finecut has (``focalclick-lite0-v2``,
:func:`init_from_focalclick`) instead of from scratch; with no default given, the backbone starts from the Lite0
ImageNet weights (``pretrained = "imagenet"`` in a training config) and the rest as built.

``forward(image, prompt_maps) -> {"logits": (B, 3, H, W), "features": (B, head_channels, H/4, W/4)}``: the same
contract as the ViT ECP — ``image`` ImageNet-normalised RGB, ``prompt_maps`` ``[previous_mask, positive, negative,
tolerant]`` (``prompt_channels=4``, the default) or ``[positive, negative, tolerant]`` (``prompt_channels=3``), logit
channels in :data:`finecut.fbu.FBU_CLASSES` order (background, foreground, uncertain). Inputs of any size work
(zero-padded inside to a multiple of :attr:`ECPEffNetConfig.input_multiple` = 32, the backbone's stride, and the
logits cropped back); the NTClick pipeline reads ``config.img_size`` and ``config.input_multiple``, as for the ViT.

**Initialisation from the default** (:func:`init_from_focalclick`): backbone and FPN head tensor for tensor; the
click fusion's first conv by prompt-channel *name* (the default's layout is all four channels, tolerant included —
its training simulated tolerant clicks on the boundary band — so every column has a trained source); the 1-channel
classifier ``l`` becomes the foreground / background logits ``+l/2`` / ``-l/2`` (so ``P(fg) / (P(fg) + P(bg)) =
sigmoid(l)``: the initialised ECP splits fg / bg exactly as the default does) and the uncertain logit a new row with
small random weights (std 0.01) and bias ``uncertain_bias`` (default -2: the initial ECP says "uncertain" rarely).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from finecut import fbu
from finecut.errors import FinecutError
from finecut.model_inputs import InputSpec, trailing_layout
from finecut.models.backbones import build_backbone
from finecut.models.heads import build_head
from finecut.models.layers import ClickFusion
from finecut.models.warm_start import WarmStartReport, focalclick_source, prompt_columns

ARCH = "ntclick_ecp_effnet"


@dataclass(frozen=True)
class ECPEffNetConfig:
    """Architecture of the EfficientNet ECP (defaults: the default model's segmentor, at the ViT ECP's 256²)."""

    img_size: int = 256  # the side the NTClick pipeline resizes a crop's long side to (the training crop side)
    backbone: str = "efficientnet_lite0"
    head_channels: int = 64
    prompt_channels: int = 4
    num_classes: int = 3
    fusion_activation: str = "leaky_relu"
    uncertain_bias: float = -2.0

    def __post_init__(self) -> None:
        if self.prompt_channels not in (3, 4):
            raise FinecutError(
                f"ECP prompt_channels must be 3 ([positive, negative, tolerant]) or 4 "
                f"([previous_mask, positive, negative, tolerant]), got {self.prompt_channels}"
            )
        if self.num_classes != len(fbu.FBU_CLASSES):
            raise FinecutError(f"the ECP predicts the {len(fbu.FBU_CLASSES)} FBU classes, got num_classes "
                               f"{self.num_classes}")
        if self.img_size % self.input_multiple:
            raise FinecutError(f"ECP img_size {self.img_size} is not a multiple of {self.input_multiple}")

    @property
    def input_multiple(self) -> int:
        """Input sides that are multiples of this (the backbone's output stride) need no padding inside."""
        return 32


class NTClickECPEffNet(nn.Module):
    """ECP on EfficientNet-Lite0 + Conv1S click fusion + FPN head with a 3-class classifier (module docstring)."""

    def __init__(self, config: ECPEffNetConfig | None = None) -> None:
        super().__init__()
        cfg = config or ECPEffNetConfig()
        self.config = cfg
        self.backbone = build_backbone(cfg.backbone)
        self.click_fusion = ClickFusion(cfg.prompt_channels, self.backbone.stem_channels, self.backbone.stem_stride,
                                        activation=cfg.fusion_activation)
        self.head = build_head("fpn", list(self.backbone.out_channels), cfg.head_channels)
        self.head.classifier = nn.Conv2d(cfg.head_channels, cfg.num_classes, 1)
        nn.init.normal_(self.head.classifier.weight, std=0.01)
        nn.init.zeros_(self.head.classifier.bias)
        with torch.no_grad():
            self.head.classifier.bias[fbu.FBU_UNCERTAIN] = cfg.uncertain_bias

    @property
    def input_spec(self) -> InputSpec:
        """The last ``prompt_channels`` of ``[previous_mask, positive, negative, tolerant]`` (as the ViT ECP)."""
        return InputSpec(trailing_layout(self.config.prompt_channels))

    def arch_config(self) -> dict[str, Any]:
        """The ``{"arch": "ntclick_ecp_effnet", ...}`` dict that rebuilds this model through the registry."""
        return {"arch": ARCH, **asdict(self.config)}

    def forward(self, image: torch.Tensor, prompt_maps: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.config
        if image.ndim != 4 or image.shape[1] != 3:
            raise FinecutError(f"ECP image must have shape (B, 3, H, W), got {tuple(image.shape)}")
        if prompt_maps.ndim != 4 or prompt_maps.shape[1] != cfg.prompt_channels:
            raise FinecutError(f"ECP prompt maps must have shape (B, {cfg.prompt_channels}, H, W), got "
                               f"{tuple(prompt_maps.shape)}")
        if prompt_maps.shape[-2:] != image.shape[-2:] or prompt_maps.shape[0] != image.shape[0]:
            raise FinecutError(
                f"ECP prompt maps {tuple(prompt_maps.shape)} do not match the image {tuple(image.shape)}"
            )
        height, width = image.shape[-2:]
        m = cfg.input_multiple
        ph, pw = -height % m, -width % m
        prompts = prompt_maps.to(image.dtype)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph))
            prompts = F.pad(prompts, (0, pw, 0, ph))
        feats = self.backbone.forward_body(self.backbone.forward_stem(image) + self.click_fusion(prompts))
        logits_low, features = self.head(feats)
        logits = F.interpolate(logits_low, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return {"logits": logits[:, :, :height, :width], "features": features}


def build_ntclick_ecp_effnet(**config: Any) -> NTClickECPEffNet:
    known = {f.name for f in fields(ECPEffNetConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise FinecutError(f"unknown ECPEffNetConfig option(s) {unknown}; known: {', '.join(sorted(known))}")
    return NTClickECPEffNet(ECPEffNetConfig(**config))


# ----------------------------------------------------------------------------- initialising from the default model


#: What :func:`init_from_focalclick` did (kept under its old name).
ECPInitReport = WarmStartReport


def init_from_focalclick(net: NTClickECPEffNet, source: str | os.PathLike[str] | Mapping[str, torch.Tensor],
                         layout: Sequence[str] | None = None) -> ECPInitReport:
    """Initialise ``net`` from a trained FocalClick segmentor (a checkpoint path ``NAME`` / ``NAME.json`` /
    ``NAME.safetensors`` of arch ``focalclick`` or ``focalclick_segmentor``, or a state dict whose prompt layout is
    ``layout``, default the four canonical channels). See the module docstring for the mapping; a prompt channel the
    source lacks keeps its init column, and tensors whose shapes differ (another backbone) stay at init."""
    state, source_layout, prefix = focalclick_source(source, layout)
    target = net.state_dict()
    target_layout = net.input_spec.prompt_layout
    report = WarmStartReport()
    updates: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name not in target:
            continue
        want = target[name]
        if name == "click_fusion.net.0.weight":
            out = prompt_columns(value, want, source_layout, target_layout)
            if out is not None:
                updates[name] = out
                report.sliced.append(name)
                used.add(key)
        elif name in ("head.classifier.weight", "head.classifier.bias") and value.shape[0] == 1:
            if tuple(value.shape[1:]) != tuple(want.shape[1:]):
                continue
            out = want.clone()
            out[fbu.FBU_FOREGROUND] = value[0] / 2
            out[fbu.FBU_BACKGROUND] = -value[0] / 2
            # the uncertain row keeps its init (small random weights, uncertain_bias)
            updates[name] = out
            report.sliced.append(name)
            used.add(key)
        elif tuple(value.shape) == tuple(want.shape):
            updates[name] = value
            report.copied.append(name)
            used.add(key)
    net.load_state_dict(updates, strict=False)
    report.copied.sort()
    report.sliced.sort()
    report.left_at_init = sorted(k for k in target if k not in updates)
    report.unused = sorted(k for k in state if k not in used)
    return report


__all__ = ["ARCH", "ECPEffNetConfig", "ECPInitReport", "NTClickECPEffNet", "build_ntclick_ecp_effnet",
           "init_from_focalclick"]
