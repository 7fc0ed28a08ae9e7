"""Inference copies (finecut.models.fusion): BatchNorm folded into the convolution before it, weights channels-last;
the same outputs as the original, which is left untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from finecut.models.efficientnet import EfficientNetLite
from finecut.models.fusion import fold_conv_batchnorm, inference_copy
from finecut.models.registry import build_model
from finecut.pipelines.focalclick_xl import FocalClickXLEngine
from finecut.predictor import Predictor
from finecut.prompts import Click

#: FocalClick-XL with EfficientNet-Lite0 context and Object-Nets (BatchNorms everywhere) at a small Object-Net size.
SMALL_XL = {"arch": "focalclick_xl", "context_net": {"type": "efficientnet_lite0", "out_channels": 32, "input_size": 128},
            "object_net": {"backbone": "efficientnet_lite0", "head": "fpn", "head_channels": 16},
            "object_size": 64, "detail_size": 32}


def randomise_batchnorms(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so a wrong fold shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, nn.BatchNorm2d):
                n = bn.num_features
                bn.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
                bn.running_var.copy_(torch.rand(n, generator=gen) * 2 + 0.1)
                if bn.affine:
                    bn.weight.copy_(torch.randn(n, generator=gen))
                    bn.bias.copy_(torch.randn(n, generator=gen))
    return module.eval()


@pytest.mark.parametrize(("conv_bias", "affine"), [(False, True), (True, True), (False, False)])
def test_a_folded_convolution_is_batchnorm_of_the_convolution(conv_bias: bool, affine: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=conv_bias)
    bn = randomise_batchnorms(nn.BatchNorm2d(6, eps=1e-3, affine=affine))
    x = torch.randn(2, 4, 9, 7)
    with torch.no_grad():
        expected = bn(conv(x))
        folded = fold_conv_batchnorm(conv, bn)(x)
    torch.testing.assert_close(folded, expected, atol=1e-5, rtol=1e-5)


def test_an_efficientnet_copy_folds_every_declared_pair_and_keeps_its_outputs() -> None:
    torch.manual_seed(0)
    original = randomise_batchnorms(EfficientNetLite("lite0"))
    before = {k: v.clone() for k, v in original.state_dict().items()}
    copy = inference_copy(original)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())  # 1 stem + 3 or 2 per block
    assert sum(isinstance(m, nn.BatchNorm2d) for m in original.modules()) > 40
    assert not any(p.requires_grad for p in copy.parameters())
    assert copy.state_dict()["_conv_stem.weight"].is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for got, want in zip(copy(x), original(x), strict=True):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    after = original.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


class Undeclared(nn.Module):
    """A conv and a BatchNorm defined one after the other but applied in another order: not a pair to fold."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(x))


def test_only_sequential_neighbours_and_declared_pairs_fold() -> None:
    model = randomise_batchnorms(nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
                                               Undeclared()))
    model[3].conv = nn.Conv2d(5, 5, 1)
    model[3].bn = randomise_batchnorms(nn.BatchNorm2d(5), seed=1)
    copy = inference_copy(model)
    assert isinstance(copy[1], nn.Identity)  # the Sequential's conv -> bn
    assert isinstance(copy[3].bn, nn.BatchNorm2d)  # attribute order alone proves nothing
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(copy(x), model(x), atol=1e-5, rtol=1e-5)


def test_the_xl_engine_on_an_inference_copy_gives_the_same_masks_and_leaves_the_net_alone() -> None:
    torch.manual_seed(0)
    net = randomise_batchnorms(build_model(SMALL_XL))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (72, 96, 3), dtype=np.uint8)
    results = []
    for fuse in (False, True):
        predictor = Predictor(FocalClickXLEngine(net, fuse_batchnorm=fuse, box_refine=1), honour_clicks=False)
        predictor.set_image(image)
        first = predictor.predict(box=(20, 10, 70, 60))
        second = predictor.predict(box=(20, 10, 70, 60), clicks=[Click(40, 30)], previous=first)
        results.append((first.probs, second.probs, predictor.model))
    for plain, fused in zip(results[0][:2], results[1][:2], strict=True):
        np.testing.assert_allclose(fused, plain, atol=1e-4)
    fused_engine = results[1][2]
    assert fused_engine.object_net.object is not net.object  # the copy runs, folded ...
    for call in (fused_engine.context_net, fused_engine.object_net, fused_engine.detail_net):
        assert not any(isinstance(m, nn.BatchNorm2d) for m in call.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # ... and the net keeps its BatchNorms
    assert all(p.requires_grad for p in net.parameters())
