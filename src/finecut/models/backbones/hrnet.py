"""HRNet-W18-small-v2 ("hrnet18s" in RITM / FocalClick) with the segmentor backbone interface.

Stem: two 3x3 stride-2 convs (64 channels, stride 4). Stage 1: 2 bottlenecks (256 channels). Stages 2-4 keep 2, 3
and 4 parallel branches of widths 18/36/72/144 (strides 4/8/16/32), with 1, 3 and 2 multi-resolution modules of
2 basic blocks per branch, each module ending in a full exchange (fuse) across branches. ``forward_body`` returns
the four branch outputs; the OCR head (:class:`finecut.models.heads.OCRHead`) upsamples and concatenates them.

Click fusion point: by default after both stem convs (stride 4, 64 channels), the layout finecut's FocalClick wrapper
expects; ``stem_layers=1`` reproduces RITM's exact Conv1S point (after the first conv, stride 2, 64 channels).
Names follow the official HRNet code (``conv1``, ``layer1``, ``transition1``, ``stage2.0.branches``,
``stage2.0.fuse_layers`` ...), so official ImageNet weights load with :meth:`HRNetW18Small.load_pretrained`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from finecut.errors import FinecutError

if TYPE_CHECKING:
    from finecut.models.pretrained import LoadReport


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


def _make_blocks(block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int, count: int) -> nn.Sequential:
    downsample = None
    if inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, bias=False), nn.BatchNorm2d(planes * block.expansion)
        )
    layers: list[nn.Module] = [block(inplanes, planes, 1, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, count)]
    return nn.Sequential(*layers)


def _conv_bn(cin: int, cout: int, stride: int, relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches of basic blocks followed by a fuse: every output branch sums all inputs, resampled
    (strided 3x3 convs down, 1x1 conv + bilinear upsampling up)."""

    def __init__(self, channels: Sequence[int], num_blocks: int, align_corners: bool = True) -> None:
        super().__init__()
        self.channels = list(channels)
        self.align_corners = align_corners
        n = len(self.channels)
        self.branches = nn.ModuleList(_make_blocks(BasicBlock, c, c, num_blocks) for c in self.channels)
        self.relu = nn.ReLU(inplace=True)
        fuse_layers = []
        for i in range(n):
            row: list[nn.Module] = []
            for j in range(n):
                if j > i:
                    row.append(
                        nn.Sequential(
                            nn.Conv2d(self.channels[j], self.channels[i], 1, bias=False),
                            nn.BatchNorm2d(self.channels[i]),
                        )
                    )
                elif j == i:
                    row.append(nn.Identity())
                else:
                    steps = [
                        _conv_bn(self.channels[j], self.channels[i] if k == i - j - 1 else self.channels[j], 2,
                                 relu=k != i - j - 1)
                        for k in range(i - j)
                    ]
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse_layers) if n > 1 else None

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[i]
            for j, layer in enumerate(row):
                if j == i:
                    continue
                z = layer(xs[j])
                if j > i:
                    z = F.interpolate(z, size=xs[i].shape[-2:], mode="bilinear", align_corners=self.align_corners)
                y = y + z
            out.append(self.relu(y))
        return out


def _transition(pre: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
    layers: list[nn.Module] = []
    for i, c in enumerate(cur):
        if i < len(pre):
            layers.append(_conv_bn(pre[i], c, 1, relu=True) if pre[i] != c else nn.Identity())
        else:
            steps = [
                _conv_bn(pre[-1], c if j == i - len(pre) else pre[-1], 2, relu=True) for j in range(i + 1 - len(pre))
            ]
            layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


class HRNetW18Small(nn.Module):
    """HRNet-W18-small-v2 feature extractor: 4 maps of ``width * (1, 2, 4, 8)`` channels at strides 4, 8, 16, 32.

    ``width``, ``num_blocks`` and ``stage_modules`` default to the small-v2 layout (18, 2, (1, 3, 2));
    ``pretrained`` is an optional local path of official weights, loaded at construction (no download).
    """

    def __init__(
        self,
        width: int = 18,
        num_blocks: int = 2,
        stage_modules: Sequence[int] = (1, 3, 2),
        stem_layers: int = 2,
        align_corners: bool = True,
        in_chans: int = 3,
        pretrained: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        if stem_layers not in (1, 2):
            raise FinecutError(f"HRNet stem_layers must be 1 or 2, got {stem_layers}")
        if width < 1 or num_blocks < 1 or len(stage_modules) != 3 or min(stage_modules) < 1:
            raise FinecutError(
                f"bad HRNet layout: width={width}, num_blocks={num_blocks}, stage_modules={list(stage_modules)}"
            )
        self.width = width
        self.stem_layers = stem_layers
        self.stem_channels = 64
        self.stem_stride = 2**stem_layers
        self.out_channels = [width, 2 * width, 4 * width, 8 * width]
        self.out_strides = [4, 8, 16, 32]

        self.conv1 = nn.Conv2d(in_chans, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _make_blocks(Bottleneck, 64, 64, num_blocks)

        pre: list[int] = [64 * Bottleneck.expansion]
        for stage, modules in zip((2, 3, 4), stage_modules):
            channels = self.out_channels[:stage]
            self.add_module(f"transition{stage - 1}", _transition(pre, channels))
            self.add_module(
                f"stage{stage}",
                nn.Sequential(*(HighResolutionModule(channels, num_blocks, align_corners) for _ in range(modules))),
            )
            pre = channels
        self.reset_parameters()
        if pretrained is not None:
            self.load_pretrained(pretrained)

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_stem(self, rgb: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(rgb)))
        if self.stem_layers == 2:
            x = self.relu(self.bn2(self.conv2(x)))
        return x

    def forward_body(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.stem_layers == 1:
            x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for stage in (2, 3, 4):
            transition = getattr(self, f"transition{stage - 1}")
            xs = [layer(xs[min(i, len(xs) - 1)]) for i, layer in enumerate(transition)]
            xs = getattr(self, f"stage{stage}")(xs)
        return xs

    def forward(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_body(self.forward_stem(rgb))

    def load_pretrained(self, path: str | os.PathLike[str]) -> LoadReport:
        """Load official HRNet weights (ImageNet ``hrnet_w18_small_model_v2.pth``, or a RITM/FocalClick checkpoint
        whose backbone keys carry a prefix such as ``feature_extractor.``) from a local file; classifier, OCR and
        other non-backbone keys are ignored."""
        from finecut.models.pretrained import load_matching, read_state_dict, strip_prefix

        state = strip_prefix(read_state_dict(path), "layer1.0.conv1.weight")
        return load_matching(self, state, source=path, min_fraction=0.9)
