"""Segmentation heads on multi-scale features: the all-MLP heads (SegFormer, SimpleClick, NTClick's ECP), HRNet OCR
(as in RITM) and FocalClick's FPN head (:class:`finecut.models.layers.FPNHead`).

Every head has ``out_channels`` and ``forward(feats: list[Tensor]) -> (logits (B,K,h,w), features (B,C,h,w))`` at the
resolution of ``feats[0]`` (stride 4 for all backbones here; K = 1 but for the ECP's 3 FBU classes). ``features`` is
the last decoder map, used by a refiner. Heads are built by name through :data:`HEADS` / :func:`build_head`:
``build_head("segformer", in_channels, **kw)``. Submodule names follow the official code (mmcv ``ConvModule`` ->
``conv``/``bn``), so released weights map 1:1.

The three all-MLP heads share a shape (per-scale 1x1 projection, upsample to the finest scale, concatenate, 1x1 fuse,
1x1 predict) but are different layers, each matching its own checkpoints:

===============================  =========================  ======================  ========================
head                             per-scale projection       fuse                    then
===============================  =========================  ======================  ========================
:class:`SegFormerHead`           linear (no activation),    1x1 conv + BN + ReLU    dropout, 1 logit
                                 coarsest scale first
:class:`SimpleClickHead`         1x1 conv + ReLU            1x1 conv (bias) + ReLU  optional 2x / 4x up-convs,
                                                                                    dropout, 1 logit
:class:`MLPHead` (NTClick ECP)   1x1 conv (no activation)   1x1 conv + BN + ReLU    ``num_classes`` logits
===============================  =========================  ======================  ========================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from finecut.errors import FinecutError
from finecut.models.layers import FPNHead
from finecut.registration import Registry


class ConvModule(nn.Module):
    """Conv + optional BatchNorm + optional ReLU, with mmcv's attribute names (``conv``, ``bn``)."""

    def __init__(
        self, cin: int, cout: int, kernel: int = 1, norm: bool = True, act: bool = True, bias: bool | None = None
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=(not norm) if bias is None else bias)
        self.bn = nn.BatchNorm2d(cout) if norm else None
        self.act = nn.ReLU(inplace=True) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.act is not None:
            x = self.act(x)
        return x


def _check_in_channels(in_channels: Sequence[int], name: str) -> list[int]:
    channels = [int(c) for c in in_channels]
    if not channels or any(c < 1 for c in channels):
        raise FinecutError(f"{name}: in_channels must be a non-empty list of positive ints, got {list(in_channels)}")
    return channels


def _init_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _LinearEmbed(nn.Module):
    """SegFormer's ``MLP``: a per-pixel linear projection (attribute ``proj`` as in the official head)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SegFormerHead(nn.Module):
    """SegFormer's all-MLP decoder: project every scale to ``embed_dim``, upsample to stride 4, concat, fuse, predict.

    ``in_channels`` lists the channels of the input maps, finest first. The fused map (after dropout) is returned as
    the features, as in ClickSEG/FocalClick.
    """

    def __init__(self, in_channels: Sequence[int], embed_dim: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.in_channels = _check_in_channels(in_channels, "SegFormerHead")
        self.out_channels = int(embed_dim)
        for i, c in enumerate(self.in_channels):
            self.add_module(f"linear_c{i + 1}", _LinearEmbed(c, embed_dim))
        self.linear_fuse = ConvModule(embed_dim * len(self.in_channels), embed_dim, 1)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.linear_pred = nn.Conv2d(embed_dim, 1, 1)
        nn.init.normal_(self.linear_pred.weight, std=0.01)
        nn.init.zeros_(self.linear_pred.bias)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(feats) != len(self.in_channels):
            raise FinecutError(f"SegFormerHead expects {len(self.in_channels)} feature maps, got {len(feats)}")
        size = feats[0].shape[-2:]
        projected = []
        for i in reversed(range(len(feats))):  # official order: c4, c3, c2, c1
            x = getattr(self, f"linear_c{i + 1}")(feats[i])
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            projected.append(x)
        x = self.dropout(self.linear_fuse(torch.cat(projected, dim=1)))
        return self.linear_pred(x), x


def _upsample_block(cin: int, cout: int) -> nn.Sequential:
    """2x transposed conv + GroupNorm(1) + 1x1 conv + GroupNorm(1) + GELU (SimpleClick's ``up_conv``)."""
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 2, stride=2), nn.GroupNorm(1, cout), nn.Conv2d(cout, cout, 1),
        nn.GroupNorm(1, cout), nn.GELU(),
    )


#: SimpleClick head upsampling modes: name -> factor.
HEAD_UPSAMPLE = {"x1": 1, "x2": 2, "x4": 4}


class SimpleClickHead(nn.Module):
    """SimpleClick's all-MLP head: 1x1 conv + ReLU per scale to ``channels``, upsample to the finest scale, concat,
    1x1 fuse + ReLU, dropout, 1x1 prediction (names as the official ``SwinTransfomerSegHead``).

    ``upsample="x2"`` / ``"x4"`` (the official option) widens the fused map to 2x / 4x ``channels`` and brings it
    back to ``channels`` through one / two 2x upsampling blocks (``up_conv1``, ``up_conv2``), so the logits come at
    1/2 / 1/1 of the finest input scale."""

    def __init__(self, in_channels: Sequence[int], channels: int = 256, dropout: float = 0.1,
                 upsample: str = "x1") -> None:
        super().__init__()
        if upsample not in HEAD_UPSAMPLE:
            raise FinecutError(f"SimpleClickHead upsample must be one of {list(HEAD_UPSAMPLE)}, got {upsample!r}")
        self.in_channels = _check_in_channels(in_channels, "SimpleClickHead")
        self.out_channels = int(channels)
        self.upsample = upsample
        self.scale = HEAD_UPSAMPLE[upsample]
        wide = channels * self.scale
        self.convs = nn.ModuleList(ConvModule(c, wide, 1, norm=False) for c in self.in_channels)
        self.fusion_conv = ConvModule(wide * len(self.in_channels), wide, 1, norm=False)
        if self.scale >= 2:
            self.up_conv1 = _upsample_block(wide, wide // 2)
        if self.scale == 4:
            self.up_conv2 = _upsample_block(wide // 2, wide // 4)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, 1, 1)
        nn.init.normal_(self.conv_seg.weight, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(feats) != len(self.in_channels):
            raise FinecutError(f"SimpleClickHead expects {len(self.in_channels)} feature maps, got {len(feats)}")
        size = feats[0].shape[-2:]
        outs = []
        for conv, x in zip(self.convs, feats):
            x = conv(x)
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            outs.append(x)
        x = self.fusion_conv(torch.cat(outs, dim=1))
        if self.scale >= 2:
            x = self.up_conv1(x)
        if self.scale == 4:
            x = self.up_conv2(x)
        x = self.dropout(x)
        return self.conv_seg(x), x


class MLPHead(nn.Module):
    """NTClick ECP's all-MLP head: per-scale 1x1 projection, upsample to the finest scale, concat, 1x1 conv + BN +
    ReLU, 1x1 conv to ``num_classes`` (submodules ``proj``, ``fuse``, ``classifier``)."""

    def __init__(self, in_channels: Sequence[int], channels: int, num_classes: int = 1) -> None:
        super().__init__()
        in_channels = _check_in_channels(in_channels, "MLPHead")
        self.out_channels = int(channels)
        self.proj = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(channels * len(in_channels), channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        size = feats[0].shape[-2:]
        maps = []
        for proj, feat in zip(self.proj, feats):
            y = proj(feat)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            maps.append(y)
        x = self.fuse(torch.cat(maps, dim=1))
        return self.classifier(x), x


class SpatialGather(nn.Module):
    """OCR soft object regions: a softmax over pixels of each region map pools the pixel features, (B, C, K, 1)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, feats: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        b, k = probs.shape[:2]
        probs = F.softmax(self.scale * probs.reshape(b, k, -1), dim=2)  # (B, K, HW)
        pixels = feats.reshape(b, feats.shape[1], -1).transpose(1, 2)  # (B, HW, C)
        return torch.matmul(probs, pixels).transpose(1, 2).unsqueeze(3)  # (B, C, K, 1)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    # Nested Sequential keeps RITM's key layout: f_pixel.0 (conv), f_pixel.1.0 (bn).
    return nn.Sequential(
        nn.Conv2d(cin, cout, 1, bias=False), nn.Sequential(nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
    )


class ObjectAttentionBlock(nn.Module):
    """OCR object context: every pixel attends to the K region representations (key channels ``key_channels``)."""

    def __init__(self, in_channels: int, key_channels: int) -> None:
        super().__init__()
        self.key_channels = key_channels
        self.f_pixel = nn.Sequential(
            *_conv_bn_relu(in_channels, key_channels), *_conv_bn_relu(key_channels, key_channels)
        )
        self.f_object = nn.Sequential(
            *_conv_bn_relu(in_channels, key_channels), *_conv_bn_relu(key_channels, key_channels)
        )
        self.f_down = _conv_bn_relu(in_channels, key_channels)
        self.f_up = _conv_bn_relu(key_channels, in_channels)

    def forward(self, x: torch.Tensor, proxy: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        query = self.f_pixel(x).reshape(b, self.key_channels, -1).transpose(1, 2)  # (B, HW, Ck)
        key = self.f_object(proxy).reshape(b, self.key_channels, -1)  # (B, Ck, K)
        value = self.f_down(proxy).reshape(b, self.key_channels, -1).transpose(1, 2)  # (B, K, Ck)
        sim = F.softmax(torch.matmul(query, key) * self.key_channels**-0.5, dim=-1)
        context = torch.matmul(sim, value).transpose(1, 2).reshape(b, self.key_channels, h, w)
        return self.f_up(context)


class SpatialOCR(nn.Module):
    """Object context + concat with the pixel features + 1x1 conv/BN/ReLU + dropout (RITM ``SpatialOCR_Module``)."""

    def __init__(self, in_channels: int, key_channels: int, out_channels: int, dropout: float = 0.05) -> None:
        super().__init__()
        self.object_context_block = ObjectAttentionBlock(in_channels, key_channels)
        self.conv_bn_dropout = nn.Sequential(
            nn.Conv2d(2 * in_channels, out_channels, 1, bias=False),
            nn.Sequential(nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)),
            nn.Dropout2d(dropout),
        )

    def forward(self, feats: torch.Tensor, proxy: torch.Tensor) -> torch.Tensor:
        context = self.object_context_block(feats, proxy)
        return self.conv_bn_dropout(torch.cat([context, feats], dim=1))


class OCRHead(nn.Module):
    """HRNet + OCR head as in RITM / FocalClick.

    The multi-scale maps are upsampled to the finest one and concatenated (270 channels for HRNet-W18); an auxiliary
    1x1 head predicts soft object regions, which pool the ``ocr_mid_channels`` pixel features into object
    representations; the object context block (``ocr_key_channels``) augments every pixel; a 1x1 conv predicts.
    Defaults are RITM's hrnet18s (``ocr_width=48``: ``ocr_mid_channels=96``, ``ocr_key_channels`` = mid / 2 = 48);
    RITM's hrnet18 uses 128/64 and hrnet32 256/128. The second positional argument is ``ocr_mid_channels``.
    ``forward(feats, return_aux=True)`` also returns the auxiliary logits (supervised in RITM's loss).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        ocr_mid_channels: int = 96,
        ocr_key_channels: int | None = None,
        dropout: float = 0.05,
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = _check_in_channels(in_channels, "OCRHead")
        if ocr_key_channels is None:  # RITM: mid = 2 * ocr_width, key = ocr_width
            ocr_key_channels = max(1, ocr_mid_channels // 2)
        if ocr_mid_channels < 1 or ocr_key_channels < 1:
            raise FinecutError(
                f"OCRHead widths must be positive, got mid={ocr_mid_channels}, key={ocr_key_channels}"
            )
        self.align_corners = align_corners
        self.out_channels = int(ocr_mid_channels)
        total = sum(self.in_channels)
        self.conv3x3_ocr = nn.Sequential(
            nn.Conv2d(total, ocr_mid_channels, 3, padding=1), nn.BatchNorm2d(ocr_mid_channels), nn.ReLU(inplace=True)
        )
        self.aux_head = nn.Sequential(
            nn.Conv2d(total, total, 1), nn.BatchNorm2d(total), nn.ReLU(inplace=True), nn.Conv2d(total, 1, 1)
        )
        self.ocr_gather_head = SpatialGather()
        self.ocr_distri_head = SpatialOCR(ocr_mid_channels, ocr_key_channels, ocr_mid_channels, dropout)
        self.cls_head = nn.Conv2d(ocr_mid_channels, 1, 1)
        _init_convs(self)

    def aggregate(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        maps = [feats[0]] + [
            F.interpolate(f, size=size, mode="bilinear", align_corners=self.align_corners) for f in feats[1:]
        ]
        return torch.cat(maps, dim=1)

    def forward(
        self, feats: list[torch.Tensor], return_aux: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if len(feats) != len(self.in_channels):
            raise FinecutError(f"OCRHead expects {len(self.in_channels)} feature maps, got {len(feats)}")
        x = self.aggregate(feats)
        aux = self.aux_head(x)
        x = self.conv3x3_ocr(x)
        context = self.ocr_gather_head(x, aux)
        x = self.ocr_distri_head(x, context)
        logits = self.cls_head(x)
        if return_aux:
            return logits, x, aux
        return logits, x


#: Heads by name: ``HEADS[name](in_channels, *args, **kwargs)`` (a :class:`~finecut.registration.Registry`).
HEADS = Registry("head")
HEADS.add("fpn", FPNHead, "light FPN decoder (finecut's FocalClick models)")
HEADS.add("segformer", SegFormerHead, "SegFormer all-MLP head (ClickSEG / FocalClick)")
HEADS.add("ocr", OCRHead, "HRNet + OCR head (RITM / FocalClick)")
HEADS.add("simpleclick_mlp", SimpleClickHead, "SimpleClick's all-MLP head")
HEADS.add("ntclick_mlp", MLPHead, "NTClick ECP's all-MLP head")


#: FocalClick's head for each segmentor backbone (ClickSEG: SegFormer-B0 embed 256, B3 embed 512; RITM hrnet18s
#: OCR width 48): ``backbone name -> (head name, head kwargs)``.
DEFAULT_HEADS: dict[str, tuple[str, dict[str, Any]]] = {
    "mit_b0": ("segformer", {"embed_dim": 256}),
    "mit_b3": ("segformer", {"embed_dim": 512}),
    "hrnet18s": ("ocr", {"ocr_mid_channels": 96, "ocr_key_channels": 48}),
}


def build_head(name: str, in_channels: Sequence[int], *args: Any, **kwargs: Any) -> nn.Module:
    """Build a head by name for input maps with ``in_channels``; unknown names raise :class:`FinecutError`."""
    entry = HEADS.entry(name)
    try:
        return entry.build(in_channels, *args, **kwargs)
    except TypeError as exc:
        raise FinecutError(f"bad arguments for head {name!r}: {exc}") from exc
