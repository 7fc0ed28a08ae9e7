"""Small building blocks shared by the interactive models."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


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
