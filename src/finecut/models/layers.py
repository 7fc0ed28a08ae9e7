"""Building blocks shared by the interactive models: the one ``LayerNorm2d`` and ``SimpleFeaturePyramid`` of finecut
(SimpleClick's neck and NTClick's ECP pyramid), RITM's click fusion, conv groups and FocalClick's FPN head.

Where two models computed the same layer differently, both computations stay, chosen by an explicit option at the
call site (``LayerNorm2d(..., impl=)``; ``SimpleFeaturePyramid(..., keys=, norm=, init=)``), so every shipped and
converted checkpoint loads and computes exactly as before."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


#: ``LayerNorm2d`` implementations: ``"fused"`` (``F.layer_norm`` over a channels-last view; SimpleClick's) and
#: ``"explicit"`` (mean and variance written out, as ConvNeXt / segment_anything; NTClick's ECP). They agree to float32
#: rounding, not bit for bit.
LAYER_NORM_IMPLS = ("fused", "explicit")


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (ViTDet / ConvNeXt); parameters ``weight``, ``bias``.

    ``impl`` picks the computation (:data:`LAYER_NORM_IMPLS`); it changes no parameter.
    """

    def __init__(self, channels: int, eps: float = 1e-6, *, impl: str) -> None:
        super().__init__()
        if impl not in LAYER_NORM_IMPLS:
            raise ValueError(f"LayerNorm2d impl must be one of {LAYER_NORM_IMPLS}, got {impl!r}")
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.impl = impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "fused":
            return F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, self.eps).permute(
                0, 3, 1, 2
            )
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, impl={self.impl!r}"


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid on one stride-``p`` map: strides p/4 (two 2x transposed convs with LayerNorm and
    GELU between), p/2 (one), p (identity) and 2p (2x2 max-pool), each resampled map projected to ``out_dims[i]``
    channels by 1x1 conv + LayerNorm + 3x3 conv + LayerNorm (convs without bias).

    The same network in both its users; three explicit options keep each user's checkpoints and numbers:

    * ``keys`` — state-dict layout: ``"split"`` (``resample.{i}`` + ``project.{i}``; SimpleClick's ``neck``) or
      ``"grouped"`` (one ``groups.{i}`` sequence per level; NTClick's ECP ``pyramid``);
    * ``norm`` — the :class:`LayerNorm2d` ``impl`` (SimpleClick ``"fused"``, ECP ``"explicit"``);
    * ``init`` — ``"xavier_fill"`` (Caffe2's, as Detectron2: every conv ``kaiming_uniform_(a=1)``, zero bias;
      SimpleClick) or ``"default"`` (PyTorch's; the ECP). Layers are created in each layout's original order, so a
      seeded initialisation is the same as before the two copies were merged.
    """

    def __init__(self, in_dim: int, out_dims: tuple[int, int, int, int] | list[int], *, keys: str, norm: str,
                 init: str) -> None:
        super().__init__()
        if keys not in ("split", "grouped"):
            raise ValueError(f"SimpleFeaturePyramid keys must be 'split' or 'grouped', got {keys!r}")
        if init not in ("xavier_fill", "default"):
            raise ValueError(f"SimpleFeaturePyramid init must be 'xavier_fill' or 'default', got {init!r}")
        out_dims = tuple(int(d) for d in out_dims)
        if len(out_dims) != 4:
            raise ValueError(f"SimpleFeaturePyramid needs 4 output widths, got {out_dims}")
        half, quarter = in_dim // 2, in_dim // 4
        widths = (quarter, half, in_dim, in_dim)
        self.keys = keys

        def resample(level: int) -> list[nn.Module]:
            if level == 0:
                return [nn.ConvTranspose2d(in_dim, half, 2, stride=2), LayerNorm2d(half, impl=norm), nn.GELU(),
                        nn.ConvTranspose2d(half, quarter, 2, stride=2)]
            if level == 1:
                return [nn.ConvTranspose2d(in_dim, half, 2, stride=2)]
            return [] if level == 2 else [nn.MaxPool2d(2, stride=2)]

        def project(level: int) -> list[nn.Module]:
            cin, cout = widths[level], out_dims[level]
            return [nn.Conv2d(cin, cout, 1, bias=False), LayerNorm2d(cout, impl=norm),
                    nn.Conv2d(cout, cout, 3, padding=1, bias=False), LayerNorm2d(cout, impl=norm)]

        if keys == "split":
            resamplers: list[nn.Module] = []
            for level in range(4):
                layers = resample(level)
                resamplers.append(nn.Identity() if not layers else layers[0] if len(layers) == 1
                                  else nn.Sequential(*layers))
            self.resample = nn.ModuleList(resamplers)
            self.project = nn.ModuleList(nn.Sequential(*project(level)) for level in range(4))
        else:
            self.groups = nn.ModuleList(nn.Sequential(*resample(level), *project(level)) for level in range(4))
        self.out_channels = list(out_dims)
        if init == "xavier_fill":
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                    nn.init.kaiming_uniform_(m.weight, a=1)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.keys == "grouped":
            return [group(x) for group in self.groups]
        return [project(resample(x)) for resample, project in zip(self.resample, self.project)]


class ScaleLayer(nn.Module):
    """Multiply by a learnable scalar (RITM's ScaleLayer), so a new input branch starts with a small contribution."""

    def __init__(self, init_value: float = 0.05) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class ConvBNReLU(nn.Sequential):
    """Conv + BatchNorm + ReLU; ``bias=True`` keeps a conv bias before the BatchNorm (as ClickSEG's refiner)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 bias: bool = False) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=bias),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class SeparableConvBNReLU(nn.Sequential):
    """Xception-style depthwise 3x3 + pointwise 1x1 convolution (FocalClick's XConvBnRelu; ``bias=True`` gives both
    convs a bias, as the official one)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, bias: bool = False) -> None:
        super().__init__(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=bias),
            nn.Conv2d(cin, cout, 1, bias=bias),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class ClickFusion(nn.Module):
    """RITM's "Conv1S" fusion: encode prompt maps with two convs to the stem's shape, scaled by a learnable 0.05.

    The output is added to the backbone stem output. ``stride`` (a power of two) matches the stem's stride;
    ``activation`` is ``"leaky_relu"`` (slope 0.2, RITM's ``use_leaky_relu``) or ``"relu"``.
    """

    def __init__(self, prompt_channels: int, out_channels: int, stride: int, hidden: int = 16,
                 activation: str = "leaky_relu") -> None:
        super().__init__()
        if stride < 1 or stride & (stride - 1):
            raise ValueError(f"stem stride must be a power of two, got {stride}")
        if activation not in ("leaky_relu", "relu"):
            raise ValueError(f"click fusion activation must be 'leaky_relu' or 'relu', got {activation!r}")
        act: nn.Module = nn.LeakyReLU(0.2) if activation == "leaky_relu" else nn.ReLU()
        layers: list[nn.Module] = [nn.Conv2d(prompt_channels, hidden, 1), act]
        steps = int(math.log2(stride))
        cin = hidden
        for i in range(max(steps, 1)):
            last = i == max(steps, 1) - 1
            cout = out_channels if last else hidden
            layers.append(nn.Conv2d(cin, cout, 3, 2 if steps else 1, 1))
            if not last:
                layers.append(nn.LeakyReLU(0.2))
            cin = cout
        layers.append(ScaleLayer(0.05))
        self.net = nn.Sequential(*layers)

    def forward(self, prompt_maps: torch.Tensor) -> torch.Tensor:
        return self.net(prompt_maps)


class FPNHead(nn.Module):
    """Light top-down decoder: lateral 1x1 convs, upsample-and-add, separable 3x3 smoothing; logits at stride 4.

    ``forward(feats) -> (logits (B,1,h,w), features (B,C,h,w))`` at the resolution of the first feature map.
    """

    def __init__(self, in_channels: list[int], channels: int = 64) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(ConvBNReLU(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(SeparableConvBNReLU(channels, channels) for _ in in_channels[:-1])
        self.fuse = SeparableConvBNReLU(channels, channels)
        self.classifier = nn.Conv2d(channels, 1, 1)
        self.out_channels = channels

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.lateral[-1](feats[-1])
        for index in range(len(feats) - 2, -1, -1):
            lateral = self.lateral[index](feats[index])
            x = F.interpolate(x, size=lateral.shape[-2:], mode="bilinear", align_corners=False) + lateral
            x = self.smooth[index](x)
        x = self.fuse(x)
        return self.classifier(x), x
