"""The learned pipelines' skeleton (CropPipeline) and its transforms (ZoomIn / Crop, FlipTTA, ProgressiveMerge)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import finecut
from finecut.engines.base import EngineOutput
from finecut.engines.geodesic import GeodesicEngine
from finecut.pipelines.skeleton import CropPipeline, Step
from finecut.pipelines.transforms import Crop, FlipTTA, ProgressiveMerge, ZoomIn
from finecut.prompts import Box, Click, Prompts


class _Net(nn.Module):
    """A network stand-in: the left half of whatever crop it sees is object."""

    def forward(self, image: torch.Tensor, maps: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = torch.full((1, 1, *image.shape[-2:]), -10.0)
        logits[..., : image.shape[-1] // 2] = 10.0
        return {"logits": logits}


class _Toy(CropPipeline):
    """A minimal method on the skeleton: a prior mask alone is a prompt, and it returns an alpha matte."""

    name = "toy"
    method = "Toy"
    defaults = {"target_size": 64, "zoom_in": True, "expand": 1.4, "min_crop": 16, "click_radius": 5.0}
    steps: list[Step]

    def setup(self, net: nn.Module) -> None:
        self.steps = []

    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        return torch.zeros(1)

    def has_prompts(self, prompts: Prompts, clicks: tuple[Click, ...]) -> bool:
        return super().has_prompts(prompts, clicks) or prompts.prior_mask is not None

    def run(self, step: Step) -> EngineOutput:
        self.steps.append(step)
        maps = self.prompt_maps(step)
        logits = self.net(torch.zeros(1, 3, *step.crop.size_hw), maps)["logits"]
        crop_probs = torch.sigmoid(torch.nn.functional.interpolate(logits, size=step.crop.shape))[0, 0].numpy()
        probs = step.crop.paste(step.prev.copy(), crop_probs)
        if step.outside_box is not None:
            probs[step.outside_box] = 0.0
        return EngineOutput(probs, {"maps": tuple(maps.shape)}, alpha=probs * 0.5)


def test_skeleton_runs_the_shared_steps_and_hands_on_alpha() -> None:
    engine = _Toy(_Net())
    assert engine.name == "toy" and engine.config()["zoom_in"] is True
    with pytest.raises(TypeError, match="unknown Toy option"):
        _Toy(_Net(), focus=True)
    predictor = finecut.Predictor(engine, honour_clicks=False)
    image = np.zeros((60, 100, 3), np.uint8)
    predictor.set_image(image)
    empty = predictor.predict()
    assert empty.state == {"num_clicks": 0} and not empty.probs.any() and empty.alpha is None
    first = predictor.predict(clicks=[Click(30, 30)])
    assert list(first.state) == ["num_clicks", "target_crop", "maps"]  # shared state first, then the method's
    assert first.state["target_crop"] == [0, 0, 100, 60] and first.state["maps"] == (1, 4, 32, 64)
    assert first.alpha is not None and first.alpha.dtype == np.float32
    assert np.array_equal(first.alpha, first.probs * 0.5)
    assert first.mask[:, :50].all() and not first.mask[:, 50:].any()
    second = predictor.predict(clicks=[Click(30, 30), Click(45, 30, "negative")], previous=first)
    x0, y0, x1, y1 = second.state["target_crop"]
    assert (x0, y0) == (0, 0) and x1 < 100  # zoomed in on the previous mask and the click
    assert np.array_equal(second.probs[:, x1:], first.probs[:, x1:])  # the previous probabilities outside the crop
    step = engine.steps[-1]
    assert step.click == Click(45, 30, "negative") and step.prev_mask.sum() == first.mask.sum()
    # a prior mask alone acts (this method's has_prompts); a box clamps what lies outside it
    prior = np.zeros((60, 100), bool)
    prior[10:50, 20:60] = True
    assert predictor.predict(prior_mask=prior).state["num_clicks"] == 0
    assert engine.steps[-1].click is None and engine.steps[-1].clicks == ()
    boxed = predictor.predict(box=(10, 5, 40, 50))
    assert not boxed.mask[:, 40:].any() and not boxed.mask[:5].any()
    assert engine.steps[-1].clicks == (Click(25.0, 27.5),)  # the box's centre click


def test_features_are_encoded_when_missing() -> None:
    engine = _Toy(_Net())
    out = engine.predict(np.zeros((20, 30, 3), np.uint8), None, Prompts(clicks=(Click(5, 5),)), None)
    assert torch.equal(engine.steps[-1].features, torch.zeros(1)) and out.probs.shape == (20, 30)
    classical = GeodesicEngine()
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    prompts = Prompts(clicks=(Click(20, 20),))
    a = classical.predict(image, None, prompts, None).probs
    assert np.array_equal(a, classical.predict(image, classical.encode_image(image), prompts, None).probs)


def test_zoom_in_crop_paste_and_cut() -> None:
    prev = np.zeros((100, 200), bool)
    prev[40:60, 80:120] = True
    zoom = ZoomIn(True, 1.4, 16)
    crop = zoom.crop(prev, Prompts(), Click(100, 50), lambda w, h: (h // 2, w // 2))
    assert crop.box == (72, 36, 128, 64) and crop.shape == (28, 56) and crop.size_hw == (14, 28)
    assert not crop.covers(100, 200) and ZoomIn(False).box(prev, Prompts(), None) == (0, 0, 200, 100)
    assert ZoomIn().box(np.zeros((100, 200), bool), Prompts(), Click(5, 5)) == (0, 0, 200, 100)  # nothing yet
    with_box = zoom.box(np.zeros((100, 200), bool), Prompts(box=Box(10, 10, 30, 20)), None)
    assert with_box[0] < 10 and with_box[2] > 30
    canvas = np.zeros((100, 200), np.float32)
    crop.paste(canvas, np.ones(crop.shape, np.float32))
    assert canvas.sum() == 28 * 56 and crop.cut(canvas).all()
    assert Crop((0, 0, 200, 100), (32, 64)).covers(100, 200)


def test_flip_tta_averages_the_flipped_call() -> None:
    def forward(x: torch.Tensor, maps: torch.Tensor) -> dict[str, torch.Tensor]:
        ramp = torch.arange(x.shape[-1], dtype=torch.float32)
        return {"logits": x * 2 + maps + ramp, "features": x}

    x = torch.arange(12, dtype=torch.float32).reshape(1, 1, 3, 4)
    maps = torch.ones(1, 1, 3, 4)
    plain = FlipTTA(False)(forward, x, maps)
    assert torch.equal(plain["logits"], forward(x, maps)["logits"])
    both = FlipTTA(True)(forward, x, maps)
    ramp = torch.arange(4, dtype=torch.float32)
    assert torch.allclose(both["logits"], x * 2 + maps + (ramp + ramp.flip(0)) / 2)  # only the asymmetry averages
    assert torch.equal(both["features"], x)
    assert FlipTTA.from_options({"flip_tta": True}).enabled and not FlipTTA.from_options({}).enabled


def test_progressive_merge_keeps_only_the_change_under_the_click() -> None:
    prev = np.zeros((20, 20), np.float32)
    probs = np.zeros((20, 20), np.float32)
    probs[2:5, 2:5] = 1.0  # a change far from the click
    probs[10:15, 10:15] = 1.0  # the change under the click
    merge = ProgressiveMerge(True, 2)
    click = Click(12, 12)
    assert not merge.applies(Prompts(clicks=(click,)), click)
    assert merge.applies(Prompts(clicks=(click,) * 3), click)
    assert merge.applies(Prompts(clicks=(click,), prior_mask=np.zeros((20, 20), bool)), click)
    assert not ProgressiveMerge(False, 0).applies(Prompts(clicks=(click,) * 3), click)
    merge(probs, prev, prev > 0.5, click)
    assert probs[10:15, 10:15].all() and not probs[2:5, 2:5].any()
