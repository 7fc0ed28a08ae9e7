"""FocalClick-XL on ONNX Runtime (docs/onnx.md): its network calls, ``finecut export-onnx`` of an XL checkpoint (tiny
random networks: the shipped model is not trained yet), each graph against PyTorch at two sizes, and the whole
engine through clicks, a box, scribbles and a coarse mask giving the same masks on both runtimes. Tests that need
``onnxruntime`` / ``onnx`` (the ``finecut[onnx]`` extra) skip without them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import finecut
from finecut.errors import FinecutError
from finecut.models.checkpoint import save_checkpoint
from finecut.models.focalclick_xl import FocalClickXLNet
from finecut.models.registry import build_model
from finecut.pipelines.focalclick_xl import FocalClickXLEngine
from finecut.prompts import Click, Scribble


def _have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


HAVE_ORT = _have("onnxruntime") and _have("onnx")
needs_ort = pytest.mark.skipif(not HAVE_ORT, reason="onnx / onnxruntime not installed (pip install 'finecut[onnx]')")

TINY_SAM = {"img_size": 128, "patch_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2, "window_size": 4,
            "global_attn_indexes": [1], "out_channels": 16, "adapter_dim": 4}
TINY_DETAIL = {"stages": [[1, 8, 1, 1], [4, 16, 1, 2], [4, 24, 1, 2]], "stem_channels": 8, "decoder": [16, 12, 8]}
#: SAM-style context (one square input size), every form, the Object-Net at 64 px, 32 px detail patches.
TINY_XL = {"arch": "focalclick_xl", "context_net": {"type": "sam_vit", **TINY_SAM}, "detail_net": TINY_DETAIL,
           "object_size": 64, "detail_size": 32}
#: Lite0 context (any input size), the clicks form only.
LITE_XL = {**TINY_XL, "context_net": {"type": "efficientnet_lite0", "input_size": 64, "out_channels": 16},
           "forms": ["clicks"]}
FORMS = ("clicks", "scribbles", "box", "coarse_mask")
H, W = 72, 96


def _center_logits(conv: nn.Conv2d, logits: torch.Tensor) -> None:
    with torch.no_grad():
        conv.bias -= logits.mean()  # type: ignore[operator]


def lively_net(config: dict) -> FocalClickXLNet:
    """A tiny random FocalClick-XL whose outputs vary (a fresh net's Object-Net answers ~0.52 everywhere, so masks
    at 0.5 would hang on float noise): convs drawn at He scale, BatchNorm as identity plus a random shift, then the
    Object-Net's and the Detail-Net's logits centred on the test image."""
    torch.manual_seed(0)
    net = build_model(dict(config)).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                scale = math.sqrt(2.0 / module.weight[0].numel())
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * scale)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
        engine = FocalClickXLEngine(net)
        features = engine.encode_image(make_image())
        image, maps = torch.randn(1, 3, 64, 64, generator=gen), torch.zeros(1, 3, 64, 64)
        box = torch.tensor([[0.0, 0.0, 64.0, 64.0]])
        head = [m for m in net.object.head.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 1][-1]
        _center_logits(head, net.forward_object(image, maps, "clicks", features.context, box)["logits"])
        trimap = torch.zeros(2, net.detail.input_channels, 32, 32)
        trimap[:, 2:] = 1.0  # unknown everywhere (and a primitive input of 1 where the Detail-Net takes one)
        _center_logits(net.detail.classifier, net.forward_detail(torch.randn(2, 3, 32, 32, generator=gen),
                                                                 trimap)["logits"])
    return net


def make_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
    cv2.circle(img, (48, 36), 18, (220, 180, 40), -1)
    return img


def checkpoint(directory: Path, config: dict) -> Path:
    json_path, _ = save_checkpoint(directory / "xl", lively_net(config), dict(config))
    return Path(json_path)


# ------------------------------------------------------------------------------------ without onnxruntime


def test_every_network_call_is_named_and_holds_its_own_weights() -> None:
    net = lively_net(TINY_XL)
    engine = FocalClickXLEngine(net)
    assert engine.networks == ("context_net", "object_net", "detail_net")
    keys = [key for name in engine.networks for key in getattr(engine, name).state_dict()]
    assert len(keys) == len(set(keys)) == len(net.state_dict())  # every weight in exactly one call (the digest)
    image = torch.randn(1, 3, 64, 64)
    maps = torch.zeros(1, 3, 64, 64)
    context = engine.context_net(torch.randn(1, 3, 128, 128))["features"]
    box = torch.tensor([[8.0, 8.0, 100.0, 90.0]])
    with torch.inference_mode():
        for form in FORMS:
            want = net.forward_object(image, maps, form, context, box)["logits"]
            assert torch.equal(engine.object_net(image, maps, form, context, box)["logits"], want)


# ------------------------------------------------------------------------------------------- exports


@pytest.fixture(scope="module")
def sam_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checkpoint(tmp_path_factory.mktemp("xl-sam"), TINY_XL)


@pytest.fixture(scope="module")
def sam_dir(sam_checkpoint: Path) -> Path:
    if not HAVE_ORT:
        pytest.skip("onnx / onnxruntime not installed")
    from finecut.cli import main

    out = sam_checkpoint.parent / "onnx"
    assert main(["export-onnx", str(sam_checkpoint), str(out)]) == 0  # the command, as a user runs it
    return out


@pytest.fixture(scope="module")
def sam_engines(sam_checkpoint: Path, sam_dir: Path) -> tuple:
    return (finecut.load_model(str(sam_checkpoint)),
            finecut.load_model(str(sam_checkpoint), runtime="onnx", onnx_dir=str(sam_dir)))


@needs_ort
def test_model_json_describes_the_xl_graphs(sam_dir: Path) -> None:
    import onnxruntime as ort

    doc = json.loads((sam_dir / "model.json").read_text())
    assert doc["engine"] == "focalclick_xl" and doc["opset"] == 17
    assert set(doc["graphs"]) == {"context_net", "detail_net", *(f"object_{form}" for form in FORMS)}
    assert doc["inputs"]["prompt_layout"] == ["previous_mask", "positive", "negative"]
    assert set(doc["inputs"]["forms"]) == set(FORMS) and "context_boxes" in doc["inputs"]
    assert doc["inputs"]["trimap"]["channels"] == ["background", "foreground", "unknown"]
    assert doc["networks"]["context_net"] == {"type": "SamViTAdapterEncoder", "input_size": 128, "pad_square": True,
                                              "pad_multiple": 16, "stride": 16, "out_channels": 16}
    assert doc["networks"]["object_net"]["forms"] == list(FORMS)
    assert doc["pipeline"]["object_size"] == 64 and doc["pipeline"]["detail_size"] == 32
    for name, graph in doc["graphs"].items():
        assert graph["verified_max_relative_difference"] < 1e-4, name
        session = ort.InferenceSession(str(sam_dir / graph["file"]), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == [t["name"] for t in graph["inputs"]]
        assert [o.name for o in session.get_outputs()] == [t["name"] for t in graph["outputs"]]
        if name != "context_net":  # SAM's context input is its one square size; every other spatial axis is dynamic
            for i in session.get_inputs():
                assert all(isinstance(d, str) for d in i.shape[2:]), (name, i.name, i.shape)
    detail = {i.name: i.shape for i in ort.InferenceSession(str(sam_dir / "detail_net.onnx")).get_inputs()}
    assert isinstance(detail["image"][0], str) and isinstance(detail["trimap"][0], str)  # any number of patches


def _close(want: torch.Tensor, got: torch.Tensor, limit: float = 1e-4) -> float:
    assert want.shape == got.shape
    diff = float((want - got).abs().max())
    assert diff < limit, diff
    return diff


@needs_ort
def test_xl_graphs_equal_pytorch_on_random_inputs(sam_engines: tuple) -> None:
    torch_engine, onnx_engine = sam_engines
    gen = torch.Generator().manual_seed(7)
    with torch.inference_mode():
        contexts = []
        for _ in range(2):  # SAM-style: one input size
            image = torch.randn(1, 3, 128, 128, generator=gen)
            want = torch_engine.context_net(image)["features"]
            _close(want, onnx_engine.context_net(image)["features"], 1e-4 * max(1.0, float(want.abs().max())))
            contexts.append(want)
        for (h, w), context in zip(((64, 64), (48, 112)), contexts):
            image, maps = torch.randn(1, 3, h, w, generator=gen), (torch.rand(1, 3, h, w, generator=gen) > 0.8).float()
            maps[:, 0] = torch.rand(h, w, generator=gen)
            box = torch.tensor([[10.5, 20.0, 90.0, 120.0]])
            for form in FORMS:
                want = torch.sigmoid(torch_engine.object_net(image, maps, form, context, box)["logits"])
                _close(want, torch.sigmoid(onnx_engine.object_net(image, maps, form, context, box)["logits"]))
            other = torch.tensor([[60.0, 0.0, 128.0, 50.0]])  # the box is a graph input, not a traced constant
            here = torch.sigmoid(onnx_engine.object_net(image, maps, "clicks", context, box)["logits"])
            moved = torch.sigmoid(onnx_engine.object_net(image, maps, "clicks", context, other)["logits"])
            _close(torch.sigmoid(torch_engine.object_net(image, maps, "clicks", context, other)["logits"]), moved)
            assert float((moved - here).abs().max()) > 1e-3
        for n, h, w in ((3, 32, 32), (1, 45, 20)):
            image = torch.randn(n, 3, h, w, generator=gen)
            labels = torch.randint(0, 3, (n, h, w), generator=gen)
            trimap = (labels[:, None] == torch.arange(3)[None, :, None, None]).float()
            _close(torch_engine.detail_net(image, trimap)["alpha"], onnx_engine.detail_net(image, trimap)["alpha"])


INTERACTIONS = {
    "clicks": [{"clicks": [Click(48, 36)]}, {"clicks": [Click(48, 36), Click(20, 60, "negative")]},
               {"clicks": [Click(48, 36), Click(20, 60, "negative"), Click(60, 46)]}],
    "box": [{"box": (28, 16, 70, 56)}, {"box": (28, 16, 70, 56), "clicks": [Click(40, 30)]}],
    "scribbles": [{"scribbles": [Scribble(((40.0, 30.0), (56.0, 40.0)), True, 3.0)]},
                  {"scribbles": [Scribble(((40.0, 30.0), (56.0, 40.0)), True, 3.0),
                                 Scribble(((80.0, 60.0), (90.0, 66.0)), False, 3.0)]}],
    "coarse mask": [{"prior_mask": "square"}, {"prior_mask": "square", "clicks": [Click(20, 60)]}],
}


def _steps(case: str) -> list[dict]:
    prior = np.zeros((H, W), bool)
    prior[20:52, 30:66] = True
    return [{k: prior if isinstance(v, str) else v for k, v in step.items()} for step in INTERACTIONS[case]]


@needs_ort
@pytest.mark.parametrize("case", list(INTERACTIONS))
def test_the_xl_engine_gives_the_same_masks_on_both_runtimes(sam_engines: tuple, case: str) -> None:
    torch_engine, onnx_engine = sam_engines
    assert onnx_engine.config()["runtime"] == "onnx" and torch_engine.config()["runtime"] == "torch"
    image = make_image()
    a = finecut.Predictor(torch_engine, honour_clicks=False)
    b = finecut.Predictor(onnx_engine, honour_clicks=False)
    a.set_image(image)
    b.set_image(image)
    x = y = None
    for kwargs in _steps(case):
        x, y = a.predict(**kwargs, previous=x), b.predict(**kwargs, previous=y)
        assert x.state["forms"] == y.state["forms"] and x.state["target_crop"] == y.state["target_crop"]
        assert np.array_equal(x.mask, y.mask) and np.abs(x.probs - y.probs).max() < 1e-4
        assert 0 < x.mask.sum() < x.mask.size  # a real answer, not an empty or a full mask
    assert x is not None and (case == "coarse mask" or x.state["detail_patches"])  # the Detail-Net ran


@needs_ort
def test_a_residual_detail_net_with_the_primitive_input_exports_and_matches(tmp_path: Path) -> None:
    """The Detail-Net that takes the primitive as a fourth input channel: model.json names the channel, and both
    runtimes give the same masks over a click sequence with the Detail-Net running."""
    config = {**LITE_XL, "detail_net": {**TINY_DETAIL, "primitive_input": True, "residual": True}}
    path = checkpoint(tmp_path, config)
    from finecut.cli import main

    assert main(["export-onnx", str(path), str(tmp_path / "onnx")]) == 0
    doc = json.loads((tmp_path / "onnx" / "model.json").read_text())
    assert doc["inputs"]["trimap"]["channels"][-1].startswith("primitive")
    torch_engine = finecut.load_model(str(path))
    onnx_engine = finecut.load_model(str(path), runtime="onnx", onnx_dir=str(tmp_path / "onnx"))
    a = finecut.Predictor(torch_engine, honour_clicks=False)
    b = finecut.Predictor(onnx_engine, honour_clicks=False)
    a.set_image(make_image())
    b.set_image(make_image())
    x = y = None
    for kwargs in _steps("clicks"):
        x, y = a.predict(**kwargs, previous=x), b.predict(**kwargs, previous=y)
        assert np.array_equal(x.mask, y.mask) and np.abs(x.probs - y.probs).max() < 1e-4
    assert x is not None and x.state["detail_patches"]


@needs_ort
def test_lite0_context_at_two_sizes_and_runtime_onnx_from_the_cache(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINECUT_ONNX_CACHE", str(tmp_path / "cache"))
    path = checkpoint(tmp_path, LITE_XL)
    torch_engine = finecut.load_model(str(path))
    onnx_engine = finecut.load_model(f"{path}:runtime=onnx")  # exported once into the cache
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [Path(onnx_engine.onnx_dir).name]
    gen = torch.Generator().manual_seed(3)
    with torch.inference_mode():
        for h, w in ((48, 64), (64, 32)):  # the pipeline's context inputs of a 3:4 and a 1:2 image
            image = torch.randn(1, 3, h, w, generator=gen)
            want = torch_engine.context_net(image)["features"]
            _close(want, onnx_engine.context_net(image)["features"], 1e-4 * max(1.0, float(want.abs().max())))
    a = finecut.Predictor(torch_engine, honour_clicks=False)
    b = finecut.Predictor(onnx_engine, honour_clicks=False)
    a.set_image(make_image())
    b.set_image(make_image())
    x, y = None, None
    for kwargs in _steps("clicks"):
        x, y = a.predict(**kwargs, previous=x), b.predict(**kwargs, previous=y)
        assert np.array_equal(x.mask, y.mask) and np.abs(x.probs - y.probs).max() < 1e-4
    with pytest.raises(FinecutError, match="no prompting layer for box"):
        b.predict(box=(28, 16, 70, 56))
