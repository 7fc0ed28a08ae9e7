"""FocalClick-XL's Detail-Net: a small U-Net with a MobileNetV2-style encoder that predicts alpha on detail patches.

Input: a batch of small patches (64 x 64 by default, cut around the low-confidence pixels of the Object-Net's
primitive mask) — the ImageNet-normalised RGB patch and a trimap, one-hot in :data:`TRIMAP_CHANNELS` order
(background, foreground, unknown; ``trimap_channels=1`` takes one map instead: 0 background, 0.5 unknown,
1 foreground). Output: ``alpha`` in [0, 1] (a sigmoid of ``logits``), at patch resolution; ``alpha > 0.5`` is the
binary mask.

With ``primitive_input`` (a departure from the paper, whose Detail-Net sees the image and the trimap only), one more
input channel after the trimap's carries the Object-Net's primitive probabilities on the patch, as FocalClick's
refiner sees the segmentor's mask: inside the unknown band the trimap says nothing about where the primitive put the
boundary, and without it the network has to find the boundary from the image alone. The channel enters through two
convolutions of their own (``primitive.*``: one added to the stem's output, one to the last decoder step's), both
zero at initialisation, so a Detail-Net trained without it starts out exactly as it was. With ``residual`` as well,
the network predicts a correction to the primitive: its logit is added to the primitive's (clamped to
[:data:`PRIMITIVE_EPS`, 1 - :data:`PRIMITIVE_EPS`]), so a zero classifier returns the primitive unchanged — a start that
cannot make the mask worse, which training then improves on.

Encoder: a stride-2 stem and MobileNetV2 inverted-residual stages (expand 1x1 -> depthwise 3x3 -> linear project
1x1, ReLU6, residual when the shape allows) down to stride 16. Decoder: four steps of bilinear 2x upsampling,
concatenation with the encoder's map of that stride (the last one with the network input itself, so the finest
details reach the output), and a 3x3 conv + BN + ReLU; a 3x3 conv gives the alpha logit. Any patch size works
(each upsampling goes to its skip's size).

The trimap of a patch is built from the primitive probabilities and the interactions by :func:`trimap_from_probs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from finecut.errors import FinecutError

#: The trimap channels of the Detail-Net's one-hot input, in order.
TRIMAP_CHANNELS: tuple[str, ...] = ("background", "foreground", "unknown")

#: The primitive probabilities are clamped to [eps, 1 - eps] before their logit is taken (``residual``).
PRIMITIVE_EPS = 1e-4

#: MobileNetV2-style encoder stages after the stem: (expand ratio, channels, repeats, stride).
DEFAULT_STAGES: tuple[tuple[int, int, int, int], ...] = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2))


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU6) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: (1x1 expand + BN + ReLU6 unless ``expand == 1``), 3x3 depthwise (``stride``) + BN +
    ReLU6, 1x1 linear projection + BN; the input is added back when stride is 1 and the widths agree."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        if stride not in (1, 2) or expand < 1:
            raise FinecutError(f"inverted residual needs stride 1 or 2 and expand >= 1, got {stride}, {expand}")
        mid = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [ConvBNAct(cin, mid, 1)]
        layers += [ConvBNAct(mid, mid, 3, stride, groups=mid), ConvBNAct(mid, cout, 1, act=None)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_residual else y


class DetailNet(nn.Module):
    """U-Net (MobileNetV2-style encoder) from an RGB patch + trimap to alpha.

    ``forward(image, trimap) -> {"alpha": (B,1,h,w) in [0,1], "logits": (B,1,h,w)}``; with ``primitive_input`` the
    ``trimap`` tensor carries the primitive probabilities as one more channel (:attr:`input_channels` in all).
    ``stages`` are the encoder's
    (expand, channels, repeats, stride) rows after a stride-2 stem of ``stem_channels``; ``decoder`` the widths of
    the decoder steps, coarsest first (one per stride-2 step of the encoder, the stem's included).
    """

    def __init__(self, trimap_channels: int = 3, stem_channels: int = 16,
                 stages: Sequence[Sequence[int]] = DEFAULT_STAGES,
                 decoder: Sequence[int] = (48, 32, 24, 16), primitive_input: bool = False,
                 residual: bool = False) -> None:
        super().__init__()
        if residual and not primitive_input:
            raise FinecutError("a residual Detail-Net corrects the primitive, so it needs primitive_input")
        if trimap_channels not in (1, 3):
            raise FinecutError(f"trimap_channels must be 1 or 3, got {trimap_channels}")
        rows = [tuple(int(v) for v in row) for row in stages]
        if any(len(row) != 4 for row in rows):
            raise FinecutError(f"detail stages are (expand, channels, repeats, stride) rows, got {stages}")
        self.trimap_channels = int(trimap_channels)
        cin = 3 + self.trimap_channels
        self.stem = ConvBNAct(cin, stem_channels, 3, 2)
        # encoder levels: one per stride; each stride-2 row starts a new level
        levels: list[list[nn.Module]] = [[]]
        level_channels = [stem_channels]
        width = stem_channels
        for expand, channels, repeats, stride in rows:
            for i in range(repeats):
                s = stride if i == 0 else 1
                if s == 2:
                    levels.append([])
                    level_channels.append(channels)
                levels[-1].append(InvertedResidual(width, channels, s, expand))
                width = channels
                level_channels[-1] = channels
        self.encoder = nn.ModuleList(nn.Sequential(*blocks) for blocks in levels)
        skips = [cin] + level_channels[:-1]  # what each decoder step concatenates, coarsest last
        decoder = [int(c) for c in decoder]
        if len(decoder) != len(skips):
            raise FinecutError(f"the detail decoder needs {len(skips)} widths (one per stride-2 step), "
                               f"got {len(decoder)}")
        steps = []
        width = level_channels[-1]
        for out, skip in zip(decoder, reversed(skips)):
            steps.append(ConvBNAct(width + skip, out, 3, act=nn.ReLU))
            width = out
        self.decoder = nn.ModuleList(steps)
        self.classifier = nn.Conv2d(width, 1, 3, padding=1)
        self.stride = 2 ** (len(levels))
        self.primitive_input = bool(primitive_input)
        self.residual = bool(residual)
        if self.primitive_input:
            self.primitive = nn.ModuleDict({"stem": nn.Conv2d(1, stem_channels, 3, 2, 1, bias=False),
                                            "skip": nn.Conv2d(1, width, 3, 1, 1, bias=False)})
            for conv in self.primitive.values():
                nn.init.zeros_(conv.weight)

    @property
    def input_channels(self) -> int:
        """Channels of the ``trimap`` argument: the trimap's, plus one for the primitive with ``primitive_input``."""
        return self.trimap_channels + int(self.primitive_input)

    def forward(self, image: torch.Tensor, trimap: torch.Tensor) -> dict[str, torch.Tensor]:
        if trimap.shape[1] != self.input_channels:
            extra = " and the primitive probabilities" if self.primitive_input else ""
            raise FinecutError(f"the Detail-Net takes a {self.trimap_channels}-channel trimap{extra} "
                               f"({self.input_channels} channels), got {trimap.shape[1]} channels")
        if trimap.shape[-2:] != image.shape[-2:] or trimap.shape[0] != image.shape[0]:
            raise FinecutError(f"trimap {tuple(trimap.shape)} does not match the image patches {tuple(image.shape)}")
        trimap = trimap.to(image.dtype)
        primitive = None
        if self.primitive_input:
            trimap, primitive = trimap[:, :self.trimap_channels], trimap[:, self.trimap_channels:]
        x0 = torch.cat([image, trimap], dim=1)
        skips = [x0]
        x = self.stem(x0)
        if primitive is not None:
            x = x + self.primitive["stem"](primitive)
        for index, level in enumerate(self.encoder):
            x = level(x)
            if index < len(self.encoder) - 1:
                skips.append(x)
        for step, skip in zip(self.decoder, reversed(skips)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = step(torch.cat([x, skip], dim=1))
        if primitive is not None:
            x = x + self.primitive["skip"](primitive)
        logits = self.classifier(x)
        if self.residual:
            logits = logits + torch.logit(primitive.clamp(PRIMITIVE_EPS, 1.0 - PRIMITIVE_EPS))
        return {"alpha": torch.sigmoid(logits), "logits": logits}


def near_boundary(mask: torch.Tensor, band: int) -> torch.Tensor:
    """(B,1,h,w) bool: the pixels within ``band`` pixels (Chebyshev distance) of both ``mask`` and its complement,
    i.e. the band of half-width ``band`` around the mask's boundary."""
    inside = _square_max(mask.float(), int(band)) > 0
    outside = _square_max((~mask).float(), int(band)) > 0
    return inside & outside


def _square_max(x: torch.Tensor, band: int) -> torch.Tensor:
    """The maximum over each pixel's (2 band + 1)-wide square window (zero padded), as a column pass then a row pass:
    the same values as one square max-pool, several times faster on CPU for the bands the trimap uses."""
    k = 2 * band + 1
    x = F.max_pool2d(x, (k, 1), stride=1, padding=(band, 0))
    return F.max_pool2d(x, (1, k), stride=1, padding=(0, band))


def trimap_from_probs(probs: torch.Tensor, positive: torch.Tensor | None = None,
                      negative: torch.Tensor | None = None, low: float = 0.1, high: float = 0.9,
                      channels: int = 3, band: int | None = None) -> torch.Tensor:
    """The Detail-Net's trimap from primitive probabilities (B,1,h,w) and the interaction maps (B,1,h,w each).

    Foreground: ``probs >= high`` or the positive map; background: ``probs <= low`` or the negative map; a pixel
    both marks claim, and every other pixel, is unknown. With ``band``, a low-confidence pixel farther than ``band``
    pixels from the primitive mask's boundary (``probs > 0.5``) is decided by that mask instead: the Detail-Net refines
    a boundary band, as it was trained to, however soft the primitive is far from the boundary. ``channels=3`` gives
    the one-hot (B,3,h,w) in :data:`TRIMAP_CHANNELS` order, ``channels=1`` one map (0 background, 0.5 unknown,
    1 foreground)."""
    if not 0.0 <= low < high <= 1.0:
        raise FinecutError(f"trimap thresholds need 0 <= low < high <= 1, got {low}, {high}")
    pos = torch.zeros_like(probs, dtype=torch.bool) if positive is None else positive > 0.5
    neg = torch.zeros_like(probs, dtype=torch.bool) if negative is None else negative > 0.5
    free = ~(pos | neg)
    sure_fg, sure_bg = probs >= high, probs <= low
    if band is not None:
        mask = probs > 0.5
        far = ~near_boundary(mask, band)
        sure_fg = sure_fg | (far & mask)
        sure_bg = sure_bg | (far & ~mask)
    fg = (pos & ~neg) | (free & sure_fg)
    bg = (neg & ~pos) | (free & sure_bg)
    unknown = ~(fg | bg)
    if channels == 1:
        return fg.to(probs.dtype) + 0.5 * unknown.to(probs.dtype)
    if channels != 3:
        raise FinecutError(f"trimap channels must be 1 or 3, got {channels}")
    return torch.cat([bg, fg, unknown], dim=1).to(probs.dtype)


def trimap_one_hot(trimap: torch.Tensor) -> torch.Tensor:
    """A one-channel trimap (0 / 0.5 / 1) as the one-hot (B,3,h,w) of :data:`TRIMAP_CHANNELS`."""
    fg = trimap > 0.75
    bg = trimap < 0.25
    return torch.cat([bg, fg, ~(fg | bg)], dim=1).to(trimap.dtype)


def compose_alpha(alpha: torch.Tensor, trimap: torch.Tensor) -> torch.Tensor:
    """Keep the trimap's decisions where it has made them: 1 on foreground, 0 on background, ``alpha`` on the
    unknown pixels (``trimap`` one-hot, :data:`TRIMAP_CHANNELS`)."""
    return trimap[:, 1:2] + trimap[:, 2:3] * alpha


def build_detail_net(**config: Any) -> DetailNet:
    return DetailNet(**config)
