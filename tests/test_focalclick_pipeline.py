"""FocalClick inference pipeline: geometry helpers, RoIAlign, Target/Focus crops and Progressive Merge."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn as nn

import finecut
from finecut.errors import FinecutError
from finecut.model_inputs import IMAGENET_MEAN, IMAGENET_STD
from finecut.models.focalclick import FocalClickNet
from finecut.models.registry import build_model
from finecut.models.roi_align import roi_align
from finecut.pipelines.focalclick import FocalClickEngine
from finecut.pipelines.geometry import component_at, expand_box, integer_box, mask_box, mask_iou, net_size
from finecut.registry import parse_option


def test_geometry_helpers() -> None:
    mask = np.zeros((10, 20), bool)
    mask[2:5, 3:9] = True
    assert mask_box(mask) == (3.0, 2.0, 9.0, 5.0)
    assert mask_box(np.zeros((4, 4), bool)) is None
    box = expand_box((0, 0, 10, 10), 1.4, 4, 100, 100)  # grows about the centre, shifted back into the image
    assert box == (0.0, 0.0, 14.0, 14.0)
    assert expand_box((40, 40, 60, 60), 2.0, 4, 100, 100) == (30.0, 30.0, 70.0, 70.0)
    assert expand_box((0, 0, 100, 50), 1.4, 4, 60, 100) == (0.0, 0.0, 100.0, 60.0)  # capped at the image
    assert integer_box((0.4, 1.6, 9.2, 9.9), 10, 10) == (0, 1, 10, 10)
    two = np.zeros((8, 8), bool)
    two[0:2, 0:2] = True
    two[5:8, 5:8] = True
    comp = component_at(two, 6, 6)
    assert comp is not None and comp.sum() == 9 and component_at(two, 4, 4) is None
    assert net_size(854, 480, 256) == (144, 256)
    other = np.zeros((8, 8), bool)
    other[0:2, 0:4] = True  # 4 of its 8 pixels are in ``two``'s 13
    assert mask_iou(two, other) == 4 / 17 and mask_iou(two, two) == 1.0
    assert mask_iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0


def test_roi_align_matches_an_exact_crop() -> None:
    feats = torch.arange(2 * 3 * 16 * 20, dtype=torch.float32).reshape(2, 3, 16, 20)
    boxes = torch.tensor([[4.0, 2.0, 12.0, 10.0], [0.0, 0.0, 20.0, 16.0]])
    out = roi_align(feats[:1].expand(2, -1, -1, -1), boxes[:1].expand(2, -1), (8, 8), sampling_ratio=1)
    assert torch.allclose(out[0], feats[0, :, 2:10, 4:12], atol=1e-3)
    full = roi_align(feats, boxes[1:].expand(2, -1), (16, 20), sampling_ratio=1)
    assert torch.allclose(full, feats, atol=1e-3)
    half = roi_align(feats, boxes[1:].expand(2, -1), (8, 10), sampling_ratio=2)  # 2x2 averaging
    assert torch.allclose(half, torch.nn.functional.avg_pool2d(feats, 2), atol=1e-3)


class _OracleSegmentor(nn.Module):
    """Test double: predicts a fixed full-image answer, cropped and resized like a real segmentor's output would be.

    The pipeline hands it the crop's image; it recovers the crop from the image values (the test image encodes pixel
    coordinates), so the pipeline's crops and pastes are what is being tested.
    """

    def __init__(self, answer: np.ndarray, image: np.ndarray) -> None:
        super().__init__()
        self.answer = answer
        self.image = image

    def forward(self, image: torch.Tensor, maps: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = image.shape[-2:]
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
        rgb = (image * std + mean)[0]
        cols = rgb[0] / 255 * (self.image.shape[1] - 1)
        rows = rgb[1] / 255 * (self.image.shape[0] - 1)
        r = rows.round().long().clamp(0, self.answer.shape[0] - 1)
        c = cols.round().long().clamp(0, self.answer.shape[1] - 1)
        logits = torch.from_numpy(self.answer.astype(np.float32) * 16 - 8)[r, c][None, None]
        return {"logits": logits, "features": torch.zeros(1, 4, max(1, h // 4), max(1, w // 4))}


def _coordinate_image(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.round(xs / (w - 1) * 255)
    img[..., 1] = np.round(ys / (h - 1) * 255)
    return img


def test_progressive_merge_changes_only_the_component_under_the_click() -> None:
    h, w = 120, 160
    image = _coordinate_image(h, w)
    prior = np.zeros((h, w), bool)
    prior[30:90, 40:100] = True
    answer = prior.copy()
    answer[30:90, 100:130] = True  # the region the user's click asks for
    answer[5:15, 5:15] = True  # a spurious blob elsewhere: Progressive Merge must ignore it
    engine = FocalClickEngine(_OracleSegmentor(answer, image), name="oracle", zoom_in=False, target_size=160)
    predictor = finecut.Predictor(engine)
    predictor.set_image(image)
    pred = predictor.predict(clicks=[finecut.Click(115, 60)], prior_mask=prior)
    assert pred.state["merged"] is True
    assert pred.mask[30:90, 102:128].all() and pred.mask[35:85, 45:95].all()
    assert not pred.mask[5:15, 5:15].any()
    # from scratch and within the first 10 clicks there is no merge: the blob appears
    scratch = predictor.predict(clicks=[finecut.Click(115, 60)])
    assert scratch.state["merged"] is False and scratch.mask[7:13, 7:13].all()


def test_target_crop_keeps_previous_probabilities_outside() -> None:
    h, w = 200, 300
    image = _coordinate_image(h, w)
    answer = _box_object(h, w)
    engine = FocalClickEngine(_OracleSegmentor(answer, image), name="oracle", target_size=128, min_crop=16)
    predictor = finecut.Predictor(engine)
    predictor.set_image(image)
    first = predictor.predict(clicks=[finecut.Click(150, 100)])
    assert first.state["target_crop"] == [0, 0, w, h]  # empty previous mask: the whole image
    second = predictor.predict(clicks=[finecut.Click(150, 100), finecut.Click(125, 85)], previous=first)
    x0, y0, x1, y1 = second.state["target_crop"]
    assert 0 < x0 < 120 and x1 < w and (x1 - x0) < w  # zoomed in around the object
    outside = np.ones((h, w), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(second.probs[outside], first.probs[outside])
    iou = (second.mask & answer).sum() / (second.mask | answer).sum()
    assert iou > 0.9


class _ShapeRecorder(_OracleSegmentor):
    """The oracle, recording the (height, width) of every network input it is given."""

    def __init__(self, answer: np.ndarray, image: np.ndarray) -> None:
        super().__init__(answer, image)
        self.sizes: list[tuple[int, int]] = []

    def forward(self, image: torch.Tensor, maps: torch.Tensor) -> dict[str, torch.Tensor]:
        self.sizes.append(tuple(image.shape[-2:]))
        return super().forward(image, maps)


def _recording(answer: np.ndarray, image: np.ndarray, **options: object) -> tuple[finecut.Predictor, _ShapeRecorder]:
    """A Predictor on the oracle (recording its input sizes) with the image set, and the recorder."""
    recorder = _ShapeRecorder(answer, image)
    predictor = finecut.Predictor(FocalClickEngine(recorder, name="oracle", **options))
    predictor.set_image(image)
    return predictor, recorder


def _box_object(h: int, w: int) -> np.ndarray:
    answer = np.zeros((h, w), bool)
    answer[80:120, 120:180] = True
    return answer


def test_first_target_size_sizes_an_objects_first_pass_only() -> None:
    h, w = 200, 300
    image = _coordinate_image(h, w)
    answer = _box_object(h, w)
    predictor, recorder = _recording(answer, image, target_size=128, first_target_size=96, square_input=True)
    first = predictor.predict(clicks=[finecut.Click(150, 100)])
    second = predictor.predict(clicks=[finecut.Click(150, 100), finecut.Click(125, 85)], previous=first)
    prior = predictor.predict(clicks=[finecut.Click(150, 100)], prior_mask=answer)  # a prior mask: not a first pass
    assert recorder.sizes == [(96, 96), (128, 128), (128, 128)]
    assert first.state["target_crop"] == [0, 0, w, h] and second.mask.sum() > 0 and prior.mask.sum() > 0
    long_side = FocalClickEngine(_ShapeRecorder(answer, image), name="oracle", target_size=128, first_target_size=64)
    other = finecut.Predictor(long_side)
    other.set_image(image)
    other.predict(clicks=[finecut.Click(150, 100)])
    assert long_side.segmentor.sizes == [(48, 64)]  # aspect kept, long side first_target_size
    for bad in (100, 0, 2.5, True):
        with pytest.raises(FinecutError, match="first_target_size"):
            FocalClickEngine(_ShapeRecorder(answer, image), name="oracle", first_target_size=bad)


def test_real_network_engine_runs_end_to_end_and_replays() -> None:
    torch.manual_seed(0)
    net = build_model({"arch": "focalclick", "head_channels": 16, "refiner_channels": 8}).eval()
    engine = FocalClickEngine(net, target_size=96, flip_tta=True)
    predictor = finecut.Predictor(engine)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (70, 110, 3), dtype=np.uint8)
    predictor.set_image(image)
    clicks = [finecut.Click(50, 30), finecut.Click(10, 60, "negative"), finecut.Click(80, 20, "tolerant")]
    a = predictor.predict(clicks=clicks[:1])
    b = predictor.predict(clicks=clicks, previous=a)
    b2 = predictor.predict(clicks=clicks, previous=a)
    assert b.probs.shape == (70, 110) and b.probs.dtype == np.float32
    assert np.array_equal(b.probs, b2.probs)  # no hidden state
    assert engine.config()["flip_tta"] is True
    boxed = predictor.predict(box=(20, 10, 60, 50))
    assert not boxed.mask[:, 61:].any() and not boxed.mask[:9].any()
    with pytest.raises(finecut.FinecutError, match="outside"):
        predictor.predict(clicks=[finecut.Click(200, 5)])


def test_shipped_default_model_loads_by_name_and_segments() -> None:
    from finecut.registry import DEFAULT_MODEL, default_model_name

    assert DEFAULT_MODEL == "focalclick-lite0-whole8" and default_model_name() == DEFAULT_MODEL
    # the models it continued stay loadable by name
    for earlier in ("focalclick-lite0", "focalclick-lite0-v2", "focalclick-lite0-whole", "focalclick-lite0-whole3",
                    "focalclick-lite0-whole4", "focalclick-lite0-whole5", "focalclick-lite0-soup56",
                    "focalclick-lite0-whole7"):
        assert earlier in finecut.available_models()
    assert DEFAULT_MODEL in finecut.available_models()
    assert finecut.available_models()["default"] == f"alias of {DEFAULT_MODEL}"
    engine = finecut.load_model("default")
    assert engine.config()["name"] == DEFAULT_MODEL
    assert engine.config()["model"]["backbone"] == "efficientnet_lite0" and engine.config()["trained_steps"] >= 900
    # run 10, continued from run 9 (which continued the average of runs 7 and 8); it keeps their training records
    assert engine.checkpoint["training"]["config"]["init_checkpoint"] == "focalclick-lite0-whole7"
    assert [run["name"] for run in engine.checkpoint["training"]["history"]][-2:] == ["focalclick-lite0-soup56",
                                                                                      "focalclick-lite0-whole7"]
    assert engine.config()["flip_tta"] is True  # shipped with flip TTA on (its JSON's "pipeline")
    assert finecut.load_model("default:flip_tta=false").config()["flip_tta"] is False
    # the refiner's window and the passes' input size (288, trained at 256), chosen on held-out objects
    # (results/heldout_whole_objects.md)
    assert engine.options["focus_expand"] == 2.0
    assert engine.options["first_target_size"] == 288 and engine.options["target_size"] == 288
    image = np.zeros((120, 160, 3), np.uint8)
    image[:] = (40, 90, 170)
    image[30:90, 50:110] = (230, 200, 40)  # a plain yellow square on blue
    predictor = finecut.Predictor(engine)
    predictor.set_image(image)
    pred = predictor.predict(clicks=[finecut.Click(80, 60)])
    truth = np.zeros((120, 160), bool)
    truth[30:90, 50:110] = True
    iou = (pred.mask & truth).sum() / (pred.mask | truth).sum()
    assert iou > 0.8, iou


def test_default_falls_back_to_grabcut_without_the_shipped_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    from finecut import registry
    from finecut.engines.grabcut import GrabCutEngine

    monkeypatch.setattr(registry, "shipped_checkpoints", lambda: {})
    assert registry.default_model_name() == "grabcut"
    assert registry.available_models()["default"] == "alias of grabcut"
    assert isinstance(registry.load_model("default"), GrabCutEngine)


@pytest.mark.parametrize("spec, message", [
    ("default:flip_tta=maybe", "flip_tta='maybe': expected true or false"),
    ("default:flip_tta=1", "flip_tta=1: expected true or false"),
    ("default:target_size=abc", "target_size='abc': expected a finite number"),
    ("default:expand=NaN", "expand=nan: expected a finite number"),
    ("default:focus_expand=true", "focus_expand=True: expected a finite number"),
])
def test_inference_options_of_the_wrong_kind_are_refused_by_name(spec: str, message: str) -> None:
    with pytest.raises(FinecutError, match=re.escape(message)):
        finecut.load_model(spec)
    with pytest.raises(FinecutError, match=re.escape(message)):  # the engine itself, whatever loaded it
        FocalClickEngine(FocalClickNet(), **dict([parse_option(spec.split(":", 1)[1])]))


def test_zoom_first_pass_reruns_an_objects_first_click_on_its_own_target_crop() -> None:
    h, w = 200, 300
    image = _coordinate_image(h, w)
    answer = _box_object(h, w)
    predictor, recorder = _recording(answer, image, target_size=128, min_crop=16, zoom_first_pass=True)
    first = predictor.predict(clicks=[finecut.Click(150, 100)])
    assert len(recorder.sizes) == 2  # the whole image, then the first answer's Target Crop
    assert first.state["first_pass_crop"] == [0, 0, w, h]
    x0, y0, x1, y1 = first.state["target_crop"]
    assert 0 < x0 < 120 and 180 < x1 < w and 0 < y0 < 80 and 120 < y1 < h  # zoomed in around the object
    assert ((first.mask & answer).sum() / (first.mask | answer).sum()) > 0.9
    second = predictor.predict(clicks=[finecut.Click(150, 100), finecut.Click(125, 85)], previous=first)
    prior = predictor.predict(clicks=[finecut.Click(150, 100)], prior_mask=answer)  # a prior mask: not a first pass
    assert len(recorder.sizes) == 4 and "first_pass_crop" not in second.state and "first_pass_crop" not in prior.state
    # a first scribble is zoomed in on too (FocalClick-XL's scribbles form; here drawn into the FocalClick maps)
    stroke = finecut.Scribble(((130.0, 100.0), (170.0, 100.0)))
    scribbled = predictor.predict(scribbles=[stroke])
    assert len(recorder.sizes) == 6 and scribbled.state["first_pass_crop"] == [0, 0, w, h]
    # one pass: a first pass that finds nothing; zoom_in off (no Target Crop to zoom to); the option off (default)
    for target, options in ((np.zeros((h, w), bool), {"target_size": 128, "zoom_first_pass": True}),
                            (answer, {"zoom_in": False, "zoom_first_pass": True}),
                            (answer, {"target_size": 128})):
        once, calls = _recording(target, image, **options)
        assert "first_pass_crop" not in once.predict(clicks=[finecut.Click(150, 100)]).state and len(calls.sizes) == 1
    with pytest.raises(FinecutError, match="zoom_first_pass"):
        FocalClickEngine(_ShapeRecorder(answer, image), name="oracle", zoom_first_pass="yes")
