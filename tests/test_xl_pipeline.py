"""The FocalClick-XL inference pipeline (finecut.pipelines.focalclick_xl) on tiny random-init networks: every prompt
form through the Predictor, context features once per image, what a later click may change, Detail-Net patches,
prior-mask correction with Progressive Merge, loading from a checkpoint and the not-yet-trained shipped name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import finecut
from finecut import registry
from finecut.engines.base import Prediction
from finecut.errors import FinecutError
from finecut.models.checkpoint import save_checkpoint
from finecut.models.focalclick_xl import XL_PROMPT_LAYOUT, FocalClickXLNet
from finecut.models.registry import build_model
from finecut.pipelines.focalclick_xl import (
    FocalClickXLEngine,
    XLFeatures,
    form_prompt_maps,
    interaction_forms,
    place_window,
    select_patches,
)
from finecut.pipelines.transforms import Crop
from finecut.prompts import Box, Click, ClickKind, Prompts, Scribble

TINY_SAM = {"img_size": 128, "patch_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2, "window_size": 4,
            "global_attn_indexes": [1], "out_channels": 16, "adapter_dim": 4}
TINY_DETAIL = {"stages": [[1, 8, 1, 1], [4, 16, 1, 2], [4, 24, 1, 2]], "stem_channels": 8, "decoder": [16, 12, 8]}
#: A tiny FocalClick-XL: SAM-style context (square padding), the default Object-Net at 64 px, 32 px detail patches.
TINY_XL = {"arch": "focalclick_xl", "context_net": {"type": "sam_vit", **TINY_SAM}, "detail_net": TINY_DETAIL,
           "object_size": 64, "detail_size": 32}

H, W = 72, 96


def tiny_net(**overrides: object) -> FocalClickXLNet:
    torch.manual_seed(0)
    net = build_model({**TINY_XL, **overrides}).eval()
    with torch.no_grad():  # wake the zero-initialised context projections, so the context features matter
        for conv in net.object.context_proj:
            conv.weight.normal_(0, 0.05)
    return net


def lively(net: FocalClickXLNet) -> FocalClickXLNet:
    """The tiny net with a readable opinion: a random-init Object-Net answers ~0.52 everywhere, so its logits get
    the patch's brightness (the test image's bright disk is the object), the bi-map and the previous mask added.
    The real network still runs on every call (the added terms are a test double's, not the pipeline's)."""
    real = net.forward_object

    def forward(image: torch.Tensor, maps: torch.Tensor, form: str = "clicks", context: torch.Tensor | None = None,
                boxes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = real(image, maps, form, context, boxes)
        opinion = 4.0 * image.mean(1, keepdim=True) + 6.0 * (maps[:, 1:2] - maps[:, 2:3]) + 3.0 * (maps[:, :1] - 0.5)
        return {**out, "logits": out["logits"] + opinion}

    net.forward_object = forward  # type: ignore[method-assign]
    return net


@pytest.fixture(scope="module")
def net() -> FocalClickXLNet:
    return lively(tiny_net())


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
    cv2.circle(img, (48, 36), 18, (220, 180, 40), -1)
    return img


def predictor(net: FocalClickXLNet, image: np.ndarray, **options: object) -> finecut.Predictor:
    p = finecut.Predictor(FocalClickXLEngine(net, **options), honour_clicks=False)
    p.set_image(image)
    return p


@contextmanager
def object_net_forms(net: FocalClickXLNet) -> Iterator[list[str]]:
    """The interaction form of every Object-Net call made inside the block, in order (the net's method is restored
    after)."""
    calls: list[str] = []
    real = net.forward_object

    def spy(image_, maps, form, context, boxes):  # type: ignore[no-untyped-def]
        calls.append(form)
        return real(image_, maps, form, context, boxes)

    net.forward_object = spy  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        net.forward_object = real  # type: ignore[method-assign]


def square(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    out = np.zeros((H, W), bool)
    out[y0:y1, x0:x1] = True
    return out


# ----------------------------------------------------------------------------------------------- end to end


SCRIBBLE = Scribble(((40.0, 30.0), (56.0, 40.0)), True, 3.0)
PRIOR = square(20, 52, 30, 66)
CASES = {
    "clicks": ({"clicks": [Click(48, 36)]}, ["clicks"]),
    "box": ({"box": (28, 16, 70, 56)}, ["box"]),
    "box with clicks": ({"box": (28, 16, 70, 56), "clicks": [Click(48, 36), Click(30, 20, "negative")]},
                        ["box", "clicks"]),
    "scribbles": ({"scribbles": [SCRIBBLE]}, ["scribbles"]),
    "scribbles and a click": ({"scribbles": [SCRIBBLE], "clicks": [Click(10, 10, "negative")]}, ["scribbles"]),
    "coarse mask": ({"prior_mask": PRIOR}, ["coarse_mask"]),
    "prior mask with clicks": ({"prior_mask": PRIOR, "clicks": [Click(48, 36)]}, ["clicks"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_prompt_form_runs_through_the_predictor(net: FocalClickXLNet, image: np.ndarray, case: str) -> None:
    kwargs, forms = CASES[case]
    pred = predictor(net, image).predict(**kwargs)
    assert pred.mask.shape == pred.probs.shape == (H, W) and pred.mask.dtype == bool
    assert pred.probs.dtype == np.float32 and 0 <= pred.probs.min() and pred.probs.max() <= 1
    assert pred.alpha is not None and pred.alpha.shape == (H, W) and pred.alpha.dtype == np.float32
    assert 0 <= pred.alpha.min() and pred.alpha.max() <= 1
    assert np.array_equal(pred.mask, pred.alpha > 0.5)  # alpha > 0.5 is the mask
    assert pred.state["forms"] == forms
    assert pred.state["num_clicks"] == len(kwargs.get("clicks", []))
    if "box" in kwargs:
        x0, y0, x1, y1 = kwargs["box"]
        inside = square(y0, y1, x0, x1)
        assert not pred.mask[~inside].any() and not pred.alpha[~inside].any()  # nothing outside the box


def test_the_object_net_runs_the_routed_prompting_layer(image: np.ndarray) -> None:
    net = lively(tiny_net())
    seen: list[tuple[str, tuple[int, ...], float]] = []
    forward = net.forward_object

    def spy(image: torch.Tensor, maps: torch.Tensor, form: str = "clicks", context: torch.Tensor | None = None,
            boxes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        assert context is not None and boxes is not None and boxes.shape == (1, 4)
        seen.append((form, tuple(maps.shape), float(maps[0, 1].sum())))
        return forward(image, maps, form, context, boxes)

    net.forward_object = spy  # type: ignore[method-assign]
    p = predictor(net, image)
    for kwargs, forms in CASES.values():
        seen.clear()
        p.predict(**kwargs)
        assert [form for form, _, _ in seen] == forms
        assert all(shape == (1, 3, 64, 64) for _, shape, _ in seen)
    seen.clear()
    p.predict(prior_mask=PRIOR)
    assert seen[0][2] > 0.3 * 64 * 64  # the coarse mask fills the positive channel of its (tight) crop


def test_an_empty_step_and_the_routing_table() -> None:
    box = Box(10, 10, 50, 40)
    c1, c2 = Click(20, 20), Click(30, 30, "negative")

    def prev(prompts: Prompts) -> Prediction:
        return Prediction(np.zeros((H, W), bool), np.zeros((H, W), np.float32), prompts)

    assert interaction_forms(Prompts(box=box), None) == ("box",)
    assert interaction_forms(Prompts(box=box, clicks=(c1,)), None) == ("box", "clicks")
    # the clicks after a box are corrections; a moved box is a new first interaction
    assert interaction_forms(Prompts(box=box, clicks=(c1, c2)), prev(Prompts(box=box, clicks=(c1,)))) == ("clicks",)
    assert interaction_forms(Prompts(box=box, clicks=(c1,)), prev(Prompts(box=box))) == ("clicks",)
    moved = Box(12, 10, 50, 40)
    assert interaction_forms(Prompts(box=moved, clicks=(c1,)), prev(Prompts(box=box))) == ("box", "clicks")
    assert interaction_forms(Prompts(box=box), prev(Prompts(box=box))) == ("box",)
    assert interaction_forms(Prompts(clicks=(c1,)), None) == ("clicks",)
    assert interaction_forms(Prompts(scribbles=(SCRIBBLE,), box=box, clicks=(c1,)), None) == ("scribbles",)
    assert interaction_forms(Prompts(prior_mask=PRIOR), None) == ("coarse_mask",)
    assert interaction_forms(Prompts(prior_mask=PRIOR, clicks=(c1,)), None) == ("clicks",)
    with pytest.raises(FinecutError):
        interaction_forms(Prompts(), None)


def test_nothing_to_act_on_returns_the_start(net: FocalClickXLNet, image: np.ndarray) -> None:
    empty = predictor(net, image).predict()
    assert empty.state == {"num_clicks": 0} and not empty.probs.any() and empty.alpha is None


# --------------------------------------------------------------------------------------------- context features


def test_context_is_encoded_once_per_image(image: np.ndarray) -> None:
    net = tiny_net()
    calls: list[tuple[int, ...]] = []
    encode = net.encode_context

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return encode(x)

    net.encode_context = counting  # type: ignore[method-assign]
    p = predictor(net, image)
    assert calls == [(1, 3, 128, 128)]  # SAM-style: long side 128, zero-padded to a square
    features = p._features
    assert isinstance(features, XLFeatures) and features.geometry.resized == (96, 128)
    first = p.predict(clicks=[Click(48, 36)])
    second = p.predict(clicks=[Click(48, 36), Click(10, 60, "negative")], previous=first)
    p.predict(box=(28, 16, 70, 56), previous=second)
    p.predict(scribbles=[SCRIBBLE])
    p.predict(prior_mask=PRIOR)
    assert len(calls) == 1
    p.set_image(image[:, :64].copy())
    assert len(calls) == 2
    # an engine called without features (not through a Predictor) encodes the image itself
    p.model.predict(image, None, Prompts(clicks=(Click(5, 5),)), None)
    assert len(calls) == 3


def test_the_context_features_reach_the_object_net(image: np.ndarray) -> None:
    net = tiny_net()
    engine = FocalClickXLEngine(net, detail=False)
    features = engine.encode_image(image)
    prompts = Prompts(clicks=(Click(48, 36),))
    a = engine.predict(image, features, prompts, None).probs
    other = XLFeatures(features.context.flip(-1), features.geometry)
    b = engine.predict(image, other, prompts, None).probs
    assert not np.array_equal(a, b)


# ----------------------------------------------------------------------------------------- what a step changes


def test_later_clicks_change_only_the_target_crop(net: FocalClickXLNet, image: np.ndarray) -> None:
    p = predictor(net, image)
    probs = np.zeros((H, W), np.float32)
    probs[30:42, 40:56] = 0.97
    probs[60:70, 2:10] = 0.3  # low probabilities far away (not object, so outside the target crop)
    first_prompts = Prompts(clicks=(Click(48, 36),))
    first = Prediction(probs > 0.5, probs, first_prompts, state={"num_clicks": 1}, alpha=probs.copy())
    second = p.predict(clicks=[Click(48, 36), Click(58, 38)], previous=first)
    x0, y0, x1, y1 = second.state["target_crop"]
    assert (x0, y0, x1, y1) != (0, 0, W, H) and x0 <= 58 < x1 and y0 <= 38 < y1
    outside = np.ones((H, W), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(second.probs[outside], probs[outside])
    assert np.array_equal(second.alpha[outside], (probs[outside] > 0.5).astype(np.float32))  # the matte: mask there
    assert np.all(second.probs[60:70, 2:10] == np.float32(0.3))
    # the detail patches lie in the image; what they write stays inside the crop
    for bx0, by0, bx1, by1 in second.state["detail_patches"]:
        assert 0 <= bx0 < bx1 <= W and 0 <= by0 < by1 <= H


def test_detail_patches_replace_the_primitive_only_inside_them(net: FocalClickXLNet, image: np.ndarray) -> None:
    kwargs = {"clicks": [Click(48, 36)]}
    primitive = predictor(net, image, detail=False).predict(**kwargs)
    assert primitive.state["detail_patches"] == []
    refined = predictor(net, image, max_patches=3).predict(**kwargs)
    patches = refined.state["detail_patches"]
    assert 1 <= len(patches) <= 3
    covered = np.zeros((H, W), bool)
    for bx0, by0, bx1, by1 in patches:
        assert (by1 - by0, bx1 - bx0) == (32, 32)  # detail_size at the original resolution (a small image)
        covered[by0:by1, bx0:bx1] = True
    assert np.array_equal(refined.probs[~covered], primitive.probs[~covered])
    assert np.abs(refined.probs[covered] - primitive.probs[covered]).max() > 1e-3
    # the Detail-Net decides only the low-confidence pixels: the trimap's sure pixels become 0 / 1
    sure = covered & ((primitive.probs <= 0.1) | (primitive.probs >= 0.9))
    assert sure.any() and np.isin(refined.probs[sure], (0.0, 1.0)).all()
    # the matte: the Detail-Net's alpha inside its patches, the binary mask elsewhere; no matte without the Detail-Net
    crop_x0, crop_y0, crop_x1, crop_y1 = refined.state["target_crop"]
    in_crop = np.zeros((H, W), bool)
    in_crop[crop_y0:crop_y1, crop_x0:crop_x1] = True
    written = covered & in_crop
    assert np.array_equal(refined.alpha[written], refined.probs[written])
    assert np.isin(refined.alpha[~written], (0.0, 1.0)).all()
    assert np.array_equal(refined.alpha[~written] > 0.5, refined.mask[~written])
    assert primitive.alpha is None


def test_a_residual_detail_net_gets_the_primitive_and_starts_from_it(image: np.ndarray) -> None:
    """A Detail-Net with the primitive input receives the primitive probabilities on each patch: zero new weights and
    a zero classifier (a residual run's start) give back the primitive exactly, so the pipeline's output equals the
    run without the Detail-Net apart from the trimap's decided pixels (0 / 1); a trained one changes the patches."""
    net = lively(tiny_net(detail_net={**TINY_DETAIL, "primitive_input": True, "residual": True}))
    with torch.no_grad():
        net.detail.classifier.weight.zero_()
        net.detail.classifier.bias.zero_()
    kwargs = {"clicks": [Click(48, 36)]}
    primitive = predictor(net, image, detail=False).predict(**kwargs)
    refined = predictor(net, image, max_patches=1).predict(**kwargs)
    covered = np.zeros((H, W), bool)
    for bx0, by0, bx1, by1 in refined.state["detail_patches"]:
        covered[by0:by1, bx0:bx1] = True
    assert covered.any()
    # (one patch: where windows overlap, the pipeline averages them) inside it every pixel is the primitive (the Detail-Net's unknown band) or the trimap's 0 / 1
    unknown = covered & ~np.isin(refined.probs, (0.0, 1.0))
    assert unknown.any() and np.abs(refined.probs[unknown] - primitive.probs[unknown]).max() < 0.02
    with torch.no_grad():
        net.detail.classifier.bias.fill_(3.0)
    moved = predictor(net, image, max_patches=1).predict(**kwargs)
    assert (moved.probs[unknown] > refined.probs[unknown] + 0.1).all()


def test_without_detail_feedback_the_next_step_starts_from_the_primitive(net: FocalClickXLNet,
                                                                         image: np.ndarray) -> None:
    """``detail_feedback=False``: the mask and the matte are the Detail-Net's, ``probs`` the primitive's (the same as
    with the Detail-Net off), and the step after starts from those probabilities, so it is the step the pipeline
    without the Detail-Net takes."""
    first, second = [Click(48, 36)], [Click(48, 36), Click(20, 60, ClickKind.NEGATIVE)]
    off = predictor(net, image, detail=False)
    on = predictor(net, image, max_patches=3, detail_feedback=False)
    fed = predictor(net, image, max_patches=3)
    a, b, c = off.predict(clicks=first), on.predict(clicks=first), fed.predict(clicks=first)
    assert np.array_equal(b.probs, a.probs) and b.state["detail_patches"]
    assert np.array_equal(b.mask, c.mask) and np.array_equal(b.alpha, c.alpha) and not np.array_equal(b.mask, a.mask)
    a2, b2, c2 = off.predict(clicks=second, previous=a), on.predict(clicks=second, previous=b), \
        fed.predict(clicks=second, previous=c)
    assert np.array_equal(b2.probs, a2.probs) and np.array_equal(b2.mask, b2.alpha > 0.5)
    assert not np.array_equal(c2.probs, a2.probs)  # with feedback, the refined probabilities carry over


@pytest.mark.parametrize("value", ["maybe", 2, float("nan"), None])
def test_detail_feedback_takes_only_a_boolean(net: FocalClickXLNet, value: object) -> None:
    with pytest.raises(FinecutError, match="detail_feedback"):
        FocalClickXLEngine(net, detail_feedback=value)


def test_detail_can_name_the_forms_it_refines(net: FocalClickXLNet, image: np.ndarray) -> None:
    """``detail`` as a list of forms (or ``+``-joined, a model spec's spelling): the Detail-Net refines the steps of
    those forms — with their matte — and leaves the others exactly as with it off; a step's form is its last routed
    one, so a new box with clicks is a clicks step."""
    box, clicks = (28, 16, 70, 56), [Click(48, 36)]
    scribble = [Scribble(((40, 30), (56, 40)))]
    off, on = predictor(net, image, detail=np.bool_(False)), predictor(net, image, detail=True, max_patches=3)
    for spelling in (["scribbles", "box"], "scribbles+box"):
        some = predictor(net, image, detail=spelling, max_patches=3)
        for kwargs, refined in (({"scribbles": scribble}, True), ({"box": box}, True), ({"clicks": clicks}, False),
                                ({"box": box, "clicks": clicks}, False)):
            got = some.predict(**kwargs)
            want = (on if refined else off).predict(**kwargs)
            assert np.array_equal(got.mask, want.mask) and np.array_equal(got.probs, want.probs), kwargs
            assert (got.alpha is not None) == refined and got.state["detail_patches"] == want.state["detail_patches"]
            if refined:
                assert got.state["detail_patches"] and np.array_equal(got.alpha, want.alpha)


@pytest.mark.parametrize("value", ["hair", ["clicks", "lasso"], [], "", 1, None, [True]])
def test_detail_refuses_what_is_not_a_form(net: FocalClickXLNet, value: object) -> None:
    with pytest.raises(FinecutError, match="detail"):
        FocalClickXLEngine(net, detail=value)


def test_box_refine_runs_coarse_mask_passes_on_the_box_result(net: FocalClickXLNet, image: np.ndarray) -> None:
    """box_refine=N: N coarse-mask passes on a box-only result, each from the last mask; nothing leaves the box; the
    clicks after a box and the other forms are untouched by it."""
    with object_net_forms(net) as calls:
        box = (28, 16, 70, 56)
        plain = predictor(net, image).predict(box=box)
        assert calls == ["box"]
        calls.clear()
        refined = predictor(net, image, box_refine=2).predict(box=box)
        assert calls == ["box", "coarse_mask", "coarse_mask"]
        inside = square(16, 56, 28, 70)
        assert not refined.mask[~inside].any() and refined.mask.any()
        assert not np.array_equal(refined.probs, plain.probs)
        calls.clear()
        predictor(net, image, box_refine=2).predict(box=box, clicks=[Click(48, 36)])
        assert calls == ["box", "clicks"]


@pytest.mark.parametrize(("which", "expected"), [
    (True, ["box", "box", "coarse_mask", "coarse_mask", "coarse_mask", "coarse_mask"]),
    ("last", ["box", "coarse_mask", "coarse_mask", "coarse_mask"]),
    ("first", ["box", "box", "coarse_mask", "coarse_mask"]),
    (False, ["box", "coarse_mask", "coarse_mask"]),
])
def test_box_flip_tta_picks_the_box_passes_flip_tta_doubles(net: FocalClickXLNet, image: np.ndarray, which: object,
                                                             expected: list[str]) -> None:
    """With flip_tta on, box_flip_tta says which passes of a box step get the mirrored call: every pass, the last
    box_refine pass only, the box pass only, or none. Steps with clicks keep flip TTA on every call."""
    with object_net_forms(net) as calls:
        box = (28, 16, 70, 56)
        result = predictor(net, image, box_refine=2, flip_tta=True, box_flip_tta=which).predict(box=box)
        assert calls == expected
        assert not result.mask[~square(16, 56, 28, 70)].any()
        calls.clear()
        predictor(net, image, box_refine=2, flip_tta=True, box_flip_tta=which).predict(box=box,
                                                                                      clicks=[Click(48, 36)])
        assert calls == ["box", "box", "clicks", "clicks"]
        calls.clear()
        predictor(net, image, box_refine=2, flip_tta=False, box_flip_tta=which).predict(box=box)
        assert calls == ["box", "coarse_mask", "coarse_mask"]


def test_box_refine_stop_ends_the_passes_once_a_pass_changes_the_mask_little(
        net: FocalClickXLNet, image: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """box_refine_stop: the coarse-mask passes end after the first one whose mask has at least that IoU with the mask
    it corrected; a pass that still moves the mask is followed by the next; None runs every pass."""
    calls: list[str] = []
    shrink = {"by": 0}

    def fake(image_, maps, form, context, boxes):  # type: ignore[no-untyped-def]
        """Positive logits on a centred square of the patch, ``shrink["by"]`` pixels smaller each call."""
        calls.append(form)
        h, w = image_.shape[-2:]
        logits = torch.full((image_.shape[0], 1, h, w), -8.0)
        m = h // 8 + shrink["by"] * len(calls)
        logits[..., m:h - m, m:w - m] = 8.0
        return {"logits": logits}

    monkeypatch.setattr(net, "forward_object", fake)
    box = (28, 16, 70, 56)
    predictor(net, image, box_refine=3, box_refine_stop=0.99).predict(box=box)
    assert calls == ["box", "coarse_mask"]  # the same square again: IoU 1 after the first coarse-mask pass
    calls.clear()
    shrink["by"] = 6  # every pass shrinks the mask a lot: no pass is close to the one before
    predictor(net, image, box_refine=3, box_refine_stop=0.99).predict(box=box)
    assert calls == ["box", "coarse_mask", "coarse_mask", "coarse_mask"]
    calls.clear()
    shrink["by"] = 0
    predictor(net, image, box_refine=3).predict(box=box)
    assert calls == ["box", "coarse_mask", "coarse_mask", "coarse_mask"]


@pytest.mark.parametrize("value", [0, -0.5, 1.5, float("nan"), float("inf"), True, "0.99", [0.9]])
def test_a_bad_box_refine_stop_is_refused_with_its_name(net: FocalClickXLNet, value: object) -> None:
    with pytest.raises(FinecutError, match="box_refine_stop"):
        FocalClickXLEngine(net, box_refine_stop=value)


@pytest.mark.parametrize("value", ["second", "all", 1, None, ["last"]])
def test_a_bad_box_flip_tta_is_refused_with_its_name(net: FocalClickXLNet, value: object) -> None:
    with pytest.raises(FinecutError, match="box_flip_tta"):
        FocalClickXLEngine(net, box_flip_tta=value)


@pytest.mark.parametrize("passes", [-1, 1.5, True, "2"])
def test_a_bad_box_refine_is_refused_with_its_name(net: FocalClickXLNet, passes: object) -> None:
    with pytest.raises(FinecutError, match="box_refine"):
        FocalClickXLEngine(net, box_refine=passes)


def test_prior_mask_correction_merges_one_component(net: FocalClickXLNet, image: np.ndarray) -> None:
    prior = PRIOR.copy()
    click = Click(20, 60)  # outside the prior mask
    merged = predictor(net, image).predict(prior_mask=prior, clicks=[click])
    assert merged.state["merged"] is True and merged.state["forms"] == ["clicks"]
    diff = merged.mask != prior
    n, labels = cv2.connectedComponents(diff.astype(np.uint8), connectivity=8)
    row, col = click.pixel
    # at most one changed region, and only the one under the click (random weights may change nothing there)
    assert n == 1 or (n == 2 and labels[row, col] == 1)
    unmerged = predictor(net, image, progressive_merge=False).predict(prior_mask=prior, clicks=[click])
    assert unmerged.state["merged"] is False
    assert (unmerged.mask != prior).sum() > diff.sum()
    # the coarse mask alone: refined inside its target crop, kept outside
    coarse = predictor(net, image).predict(prior_mask=prior)
    x0, y0, x1, y1 = coarse.state["target_crop"]
    assert (x0, y0, x1, y1) != (0, 0, W, H) and coarse.state["merged"] is False
    outside = np.ones((H, W), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(coarse.mask[outside], prior[outside])


def test_scribbles_on_a_mask_widen_the_crop_and_merge(net: FocalClickXLNet, image: np.ndarray) -> None:
    prior = square(4, 20, 4, 24)  # dark background: the network alone would drop it
    stroke = Scribble(((40.0, 30.0), (56.0, 44.0)), True, 3.0)  # on the bright disk
    far = Scribble(((80.0, 60.0), (90.0, 66.0)), False, 3.0)
    pred = predictor(net, image, detail=False).predict(prior_mask=prior, scribbles=[stroke, far])
    x0, y0, x1, y1 = pred.state["target_crop"]
    assert x0 <= 4 and y0 <= 4 and x1 > 90 and y1 > 66  # the previous mask and every stroke
    assert pred.state["merged"] is True and pred.state["forms"] == ["scribbles"]
    assert pred.mask[4:20, 4:24].all()  # the prior's part no stroke touched is kept
    assert pred.mask[30:45, 40:57].mean() > 0.9  # the disk under the positive stroke joined
    plain = predictor(net, image, detail=False, progressive_merge=False).predict(prior_mask=prior,
                                                                                 scribbles=[stroke, far])
    assert plain.state["merged"] is False and not plain.mask[4:20, 4:24].any()
    # a later scribble: only the changes its own strokes touch
    later = predictor(net, image, detail=False).predict(
        prior_mask=prior, scribbles=[stroke, far, Scribble(((10.0, 60.0),), False)], previous=pred)
    assert np.array_equal(later.mask, pred.mask)


# ------------------------------------------------------------------------------------------------ the pieces


def test_form_prompt_maps_draw_each_form_into_the_bi_map() -> None:
    crop = Crop((0, 0, 40, 20), (20, 40))
    previous = np.zeros((20, 40), np.float32)
    previous[5:10, 5:10] = 0.7
    prompts = Prompts(clicks=(Click(30, 10, "negative"),), box=Box(10, 4, 20, 12), prior_mask=square(0, 20, 0, 40)[:20, :40])
    layout = XL_PROMPT_LAYOUT
    box = form_prompt_maps("box", prompts, previous, crop, 2.0, layout)[0]
    assert box.shape == (3, 20, 40) and torch.equal(box[0], torch.from_numpy(previous))
    assert box[1, 4:12, 10:20].all() and box[1].sum() == 80 and not box[2].any()  # the rectangle, no clicks
    clicks = form_prompt_maps("clicks", prompts, previous, crop, 2.0, layout)[0]
    assert not clicks[1].any() and clicks[2, 10, 30] == 1 and clicks[2].sum() < 20
    coarse = form_prompt_maps("coarse_mask", prompts, previous, crop, 2.0, layout)[0]
    assert coarse[1].all() and not coarse[2].any()
    scrib = Prompts(scribbles=(Scribble(((2.0, 2.0), (30.0, 2.0)), False, 1.0),))
    strokes = form_prompt_maps("scribbles", scrib, previous, crop, 2.0, layout)[0]
    assert strokes[2, 2, 2:31].all() and not strokes[1].any()
    with pytest.raises(FinecutError, match="unknown interaction form"):
        form_prompt_maps("lasso", prompts, previous, crop, 2.0, layout)


def test_select_patches_takes_the_most_uncertain_windows_first() -> None:
    weight = np.zeros((100, 200), np.float32)
    weight[10:20, 150:160] = 1.0  # 100 units
    weight[60:90, 20:50] = 0.5  # 450 units, larger than a window
    weight[50, 100] = 0.2  # a speck below min_mass
    boxes = select_patches(weight, (20, 20), 10, min_mass=1.0)
    assert all((b[2] - b[0], b[3] - b[1]) == (20, 20) for b in boxes)
    first = boxes[0]
    assert 20 <= first[0] and first[2] <= 50 and 60 <= first[1] and first[3] <= 90  # inside the big region
    covered = np.zeros_like(weight, bool)
    for x0, y0, x1, y1 in boxes:
        covered[y0:y1, x0:x1] = True
    assert covered[10:20, 150:160].all() and covered[60:90, 20:50].all() and not covered[50, 100]
    assert len(select_patches(weight, (20, 20), 2)) == 2
    assert select_patches(np.zeros((10, 10), np.float32), (4, 4), 5) == []
    # a window larger than the map starts at 0; place_window centres it on the crop inside the image
    assert select_patches(np.ones((10, 10), np.float32), (16, 16), 3) == [(0, 0, 16, 16)]
    assert place_window(5, 16, 20, 30, 100) == 17 and place_window(95, 16, 90, 100, 100) == 84
    assert place_window(25, 8, 20, 60, 100) == 25 and place_window(58, 8, 20, 60, 100) == 52


def test_detail_windows_magnify_the_object_net_view_up_to_max_detail_scale(net: FocalClickXLNet) -> None:
    """A detail window is ``detail_size`` Detail-Net pixels at ``detail_zoom`` times the Object-Net's scale, capped at
    ``max_detail_scale``: on a crop the Object-Net saw enlarged 2x, a cap of 1 (the original resolution) shows the
    Detail-Net the object coarser than the Object-Net saw it; a cap of 4 keeps the 2x magnification (4x original)."""
    yy, xx = np.mgrid[0:H, 0:W]
    probs = (1.0 / (1.0 + np.exp(-(14.0 - np.hypot(yy - 36, xx - 48)) / 2.0))).astype(np.float32)
    crop = Crop((32, 20, 64, 52), (64, 64))  # 32 original px at 64 Object-Net px: object scale 2
    sides = {}
    for cap in (1.0, 2.0, 4.0):
        engine = FocalClickXLEngine(net, max_detail_scale=cap)  # detail_size 32, detail_zoom 2
        boxes, size_hw = engine.detail_windows(crop, probs, (H, W))
        assert boxes and size_hw == (32, 32), (cap, size_hw)
        sides[cap] = {(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes}
    assert sides == {1.0: {(32, 32)}, 2.0: {(16, 16)}, 4.0: {(8, 8)}}  # Detail-Net px / scale = original px


def test_the_engine_refuses_what_it_cannot_run(image: np.ndarray) -> None:
    clicks_only = tiny_net(forms=["clicks"])
    p = predictor(clicks_only, image)
    assert p.predict(clicks=[Click(48, 36)]).state["forms"] == ["clicks"]
    with pytest.raises(FinecutError, match="no prompting layer for box"):
        p.predict(box=(28, 16, 70, 56))
    with pytest.raises(FinecutError, match="needs a FocalClick-XL network"):
        FocalClickXLEngine(torch.nn.Conv2d(3, 1, 1))
    with pytest.raises(FinecutError, match="trimap"):
        FocalClickXLEngine(clicks_only, trimap_low=0.9, trimap_high=0.1)
    with pytest.raises(TypeError, match="unknown FocalClick-XL option"):
        FocalClickXLEngine(clicks_only, focus=True)


# ------------------------------------------------------------------------------------------------------ loading


def test_checkpoint_round_trip_through_load_model(tmp_path: Path, image: np.ndarray) -> None:
    net = tiny_net()
    config = dict(TINY_XL)
    json_path, _ = save_checkpoint(tmp_path / "xl", net, config, metadata={"pipeline": {"max_patches": 4}})
    engine = finecut.load_model(str(json_path))  # no "engine" in the JSON: chosen from the arch
    assert isinstance(engine, FocalClickXLEngine) and engine.options["max_patches"] == 4
    assert engine.options["object_size"] == 64 and engine.config()["pipeline"]["detail_size"] == 32
    kwargs = {"clicks": [Click(48, 36), Click(20, 60, "negative")]}
    loaded = finecut.Predictor(engine, honour_clicks=False)
    loaded.set_image(image)
    expected = predictor(net, image, max_patches=4).predict(**kwargs)
    got = loaded.predict(**kwargs)
    assert np.array_equal(got.probs, expected.probs) and np.array_equal(got.alpha, expected.alpha)
    options = finecut.load_model(f"{json_path}:detail=false,max_patches=2")
    assert options.options["detail"] is False and options.options["max_patches"] == 2


def test_a_pending_name_says_its_weights_are_not_trained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name listed in PENDING_CHECKPOINTS says why it does not load, until weights/NAME.{json,safetensors} exist."""
    monkeypatch.setitem(registry.PENDING_CHECKPOINTS, "xl-next", "xl-next's weights are not trained yet")
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FinecutError, match="not trained yet"):
        finecut.load_model("xl-next")
    with pytest.raises(FinecutError, match="not trained yet"):
        finecut.load_model("xl-next:max_patches=2")
    save_checkpoint(tmp_path / "xl-next", tiny_net(), dict(TINY_XL))
    assert isinstance(finecut.load_model("xl-next"), FocalClickXLEngine)
    assert "xl-next" in finecut.available_models()


def test_the_shipped_focalclick_xl_went_through_every_stage_and_routes_every_form() -> None:
    """The shipped checkpoint: detail, object and the three prompting stages in its record; the Detail-Net on
    clicks, scribbles and boxes (its held-out choice), on a coarse mask too on request; clicks, a box, a scribble and
    a coarse mask each give a mask that holds what they point at, with a matte exactly where the Detail-Net ran."""
    from finecut.training.focalclick_xl import trained_stages

    path = registry.shipped_checkpoints()["focalclick-xl"]
    doc = json.loads(path.read_text())
    stages = trained_stages(doc)
    assert stages[:2] == ["detail", "object"], stages
    assert {"prompting:box", "prompting:scribbles", "prompting:coarse_mask"} <= set(stages), stages
    # the joint-forms (rebase) stage, then the Detail-Net trained again on the Object-Net's own primitives
    assert stages[-2:] == ["object+box+scribbles+coarse_mask", "detail"], stages
    assert doc["model"]["detail_net"] == {"primitive_input": True, "residual": True}
    engine = finecut.load_model("focalclick-xl")
    assert isinstance(engine, FocalClickXLEngine) and engine.options["detail"] == ["clicks", "scribbles", "box"]
    assert engine.options["detail_feedback"] is False
    assert engine.options["box_refine"] == 3 and engine.options["flip_tta"] is True
    # a box step's refinement passes without flip TTA, stopping once a pass changes the mask little: the same held-out
    # box mIoU within 0.01 in about two thirds of the time (results/heldout_whole_objects.md)
    assert engine.options["box_flip_tta"] == "first" and engine.options["box_refine_stop"] == 0.98
    # the networks run on their BatchNorm-folded copy: the same held-out scores, about a quarter less time a step
    assert engine.options["fuse_batchnorm"] is True and engine.object_net.object is not engine.net.object
    assert engine.options["zoom_first_pass"] is True  # held-out clicks ahead (results/heldout_whole_objects.md)
    assert engine.options["max_detail_scale"] == 2.0  # held-out scribbles and boxes ahead of 1 (the same file)
    image = np.full((120, 160, 3), 70, np.uint8)
    cv2.circle(image, (80, 60), 30, (220, 200, 40), -1)
    object_mask = cv2.circle(np.zeros((120, 160), np.uint8), (80, 60), 30, 1, -1).astype(bool)
    predictor = finecut.Predictor(engine)
    predictor.set_image(image)
    for prompts in (dict(clicks=[Click(80, 60)]), dict(box=(45, 25, 115, 95)),
                    dict(scribbles=[Scribble(((65.0, 60.0), (95.0, 60.0)), True, 5.0)]),
                    dict(prior_mask=np.roll(object_mask, 4, axis=1))):
        pred = predictor.predict(**prompts)
        iou = (pred.mask & object_mask).sum() / (pred.mask | object_mask).sum()
        assert iou > 0.8, (prompts.keys(), iou)
        assert (pred.alpha is not None) == ("prior_mask" not in prompts), prompts.keys()
    detailed = finecut.Predictor(finecut.load_model("focalclick-xl:detail=true"))
    detailed.set_image(image)
    pred = detailed.predict(prior_mask=np.roll(object_mask, 4, axis=1))
    assert pred.alpha is not None and pred.alpha.shape == (120, 160)


@pytest.mark.parametrize("band", [0, -3, 2.5, "6", True])
def test_a_bad_trimap_band_is_refused_with_its_name(net: FocalClickXLNet, band: object) -> None:
    with pytest.raises(FinecutError, match="trimap_band"):
        FocalClickXLEngine(net, trimap_band=band)
    assert FocalClickXLEngine(net, trimap_band=None).options["trimap_band"] is None


def test_mirrored_context_roi_is_the_plain_roi_mirrored() -> None:
    """What flip TTA relies on: the RoIAligned context of the mirrored map, with the box mirrored about the map's
    width in context-input pixels, is the plain RoI mirrored, for boxes anywhere in the map."""
    from finecut.models.roi_align import roi_align

    torch.manual_seed(1)
    context, stride = torch.randn(1, 5, 8, 11), 16
    axis = context.shape[-1] * stride
    for box in ([0.0, 0.0, 176.0, 128.0], [13.5, 20.0, 97.0, 71.25], [120.0, 3.0, 170.0, 40.0]):
        boxes = torch.tensor([box])
        mirrored = torch.stack([axis - boxes[:, 2], boxes[:, 1], axis - boxes[:, 0], boxes[:, 3]], dim=1)
        plain = roi_align(context, boxes, (6, 7), spatial_scale=1 / stride, sampling_ratio=2)
        flipped = roi_align(context.flip(-1), mirrored, (6, 7), spatial_scale=1 / stride, sampling_ratio=2)
        torch.testing.assert_close(flipped.flip(-1), plain, rtol=1e-5, atol=1e-5)


def test_flip_tta_averages_the_plain_and_the_mirrored_object_net_call(image: np.ndarray) -> None:
    net = tiny_net()
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = net.forward_object

    def recording(img: torch.Tensor, maps: torch.Tensor, form: str = "clicks", context: torch.Tensor | None = None,
                  boxes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = real(img, maps, form, context, boxes)
        calls.append((img, out["logits"]))
        return out

    net.forward_object = recording  # type: ignore[method-assign]
    prompts = Prompts(clicks=(Click(30, 36),))
    plain_engine = FocalClickXLEngine(net, detail=False)
    features = plain_engine.encode_image(image)
    plain = plain_engine.predict(image, features, prompts, None).probs
    assert len(calls) == 1
    calls.clear()
    tta = FocalClickXLEngine(net, detail=False, flip_tta=True).predict(image, features, prompts, None).probs
    assert len(calls) == 2
    (img0, logits0), (img1, logits1) = calls
    torch.testing.assert_close(img1, img0.flip(-1))  # the second call sees the mirrored patch
    mean = ((logits0 + logits1.flip(-1)) / 2)[0, 0].numpy()
    expected = 1 / (1 + np.exp(-np.clip(cv2.resize(mean, (W, H), interpolation=cv2.INTER_LINEAR), -30, 30)))
    assert np.abs(tta - plain).max() > 1e-6  # a random tiny net answers ~0.52 everywhere: the differences are small
    np.testing.assert_allclose(tta, expected, rtol=0, atol=1e-6)


def test_flip_tta_must_be_a_switch(net: FocalClickXLNet) -> None:
    with pytest.raises(FinecutError, match="flip_tta"):
        FocalClickXLEngine(net, flip_tta="maybe")


def test_zoom_first_pass_reruns_a_first_click_or_scribble_zoomed_in(net: FocalClickXLNet, image: np.ndarray) -> None:
    far = Scribble(((86.0, 6.0), (92.0, 10.0)), True, 3.0)  # outside the object: the zoomed crop must still hold it
    for prompts in ({"clicks": [Click(48, 36)]}, {"scribbles": [SCRIBBLE, far]}):
        zoomed = predictor(net, image, detail=False, zoom_first_pass=True).predict(**prompts)
        once = predictor(net, image, detail=False).predict(**prompts)
        assert "first_pass_crop" not in once.state and once.state["target_crop"] == [0, 0, W, H]
        assert zoomed.state["first_pass_crop"] == [0, 0, W, H] and zoomed.mask.any()
        x0, y0, x1, y1 = zoomed.state["target_crop"]
        if "scribbles" in prompts:  # XL's scribble crop holds every stroke
            assert x1 > 92 and y0 < 6
        else:
            assert (x1 - x0) * (y1 - y0) < W * H
    # a box or a coarse mask alone is no first click: one pass
    for prompts in ({"box": (28, 16, 70, 56)}, {"prior_mask": PRIOR}):
        assert "first_pass_crop" not in predictor(net, image, detail=False, zoom_first_pass=True).predict(
            **prompts).state
    with pytest.raises(FinecutError, match="zoom_first_pass"):
        FocalClickXLEngine(net, zoom_first_pass=1)
