"""The classical engines (GrabCut, random walker, geodesic) behind the Engine / Predictor contract."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import finecut
from finecut import Box, Click, FinecutError, Predictor, Scribble
from finecut.engines.base import Engine
from finecut.engines.geodesic import geodesic_probs
from finecut.engines.grabcut import GMM_SIZE, fit_gmm
from finecut.engines.seeds import (
    build_seeds,
    seed_connected,
    signed_distance_probs,
    to_original,
    working_transform,
)
from finecut.evaluation import iou, next_click
from finecut.prompts import CropTransform, Prompts

ENGINES = ("grabcut", "random_walker", "geodesic")
HEIGHT, WIDTH = 96, 136
MSRA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "train" / "MSRA10K-168"


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A red disk (the object) with an attached orange bar, on a striped, noisy blue background (non-square)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    img = np.empty((HEIGHT, WIDTH, 3), np.float32)
    img[:] = (60, 110, 150)
    img += 18 * np.sin(xx / 3.0)[..., None] * np.array([1.0, 0.6, 0.2])
    img += rng.normal(0, 8, img.shape)
    disk = (xx - 50) ** 2 + (yy - 48) ** 2 <= 24**2
    bar = (xx >= 72) & (xx < 120) & (yy >= 40) & (yy < 56) & ~disk
    img[disk] = np.array([210, 50, 40]) + rng.normal(0, 8, (int(disk.sum()), 3))
    img[bar] = np.array([220, 120, 40]) + rng.normal(0, 8, (int(bar.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8), disk, bar


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _scene()


@pytest.fixture(scope="module", params=ENGINES)
def predictor(request, scene) -> Predictor:
    pred = Predictor(finecut.load_model(request.param))
    pred.set_image(scene[0])
    return pred


def _gt(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.int16)


# --- the contract -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ENGINES)
def test_load_model_builds_a_configurable_immutable_engine(name):
    engine = finecut.load_model(name, max_side=200, click_radius=4)
    assert isinstance(engine, Engine)
    assert engine.name == name
    cfg = engine.config()
    assert cfg["name"] == name and cfg["max_side"] == 200 and cfg["click_radius"] == 4
    json.dumps(cfg)  # recorded next to every evaluation result
    with pytest.raises(dataclasses.FrozenInstanceError):
        engine.max_side = 100  # type: ignore[misc]
    assert name in finecut.available_models()


@pytest.mark.parametrize("name", ENGINES)
def test_bad_options_raise_finecut_error(name):
    with pytest.raises(FinecutError, match=name):
        finecut.load_model(name, max_side=2)
    with pytest.raises(FinecutError, match="click_radius"):
        finecut.load_model(name, click_radius=0)


def test_outputs_are_original_size_float_probabilities(predictor, scene):
    result = predictor.predict(clicks=[Click(50, 48)])
    assert result.probs.shape == (HEIGHT, WIDTH) and result.probs.dtype == np.float32
    assert result.mask.shape == (HEIGHT, WIDTH) and result.mask.dtype == bool
    assert 0.0 <= result.probs.min() and result.probs.max() <= 1.0
    assert np.array_equal(result.mask, result.probs > 0.5)
    # a meaningful map: certain on the click, near zero far away, not just two values
    assert result.probs[48, 50] > 0.9 and result.probs[5, 130] < 0.1
    assert np.unique(result.probs).size > 10


def test_click_outside_image_raises(predictor):
    with pytest.raises(FinecutError, match="outside"):
        predictor.predict(clicks=[Click(WIDTH, 10)])
    with pytest.raises(FinecutError, match="outside"):
        predictor.predict(clicks=[Click(10, -1)])


def test_two_clicks_of_the_standard_protocol_segment_the_object(predictor, scene):
    _, disk, _ = scene
    gt = _gt(disk)
    clicks: list[Click] = []
    previous = None
    pred = np.zeros(gt.shape, dtype=bool)
    ious = []
    for _ in range(2):
        clicks.append(next_click(gt, pred, clicks))
        previous = predictor.predict(clicks=clicks, previous=previous, threshold=0.49)
        pred = previous.mask
        ious.append(iou(gt, pred))
    assert max(ious) > 0.9, ious


def _patch_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scene with only the first 12 px of the bar left: a small orange patch attached to the disk."""
    img, disk, bar = _scene()
    patch = np.zeros(disk.shape, dtype=bool)
    patch[42:54, 74:86] = True
    out = img.copy()
    out[bar & ~patch] = img[5, 5]
    return out, disk, patch


def test_negative_click_corrects_a_wrong_prior_mask(predictor):
    img, disk, patch = _patch_scene()
    pred = Predictor(predictor.model)
    pred.set_image(img)
    wrong = disk | patch
    assert pred.predict(prior_mask=wrong).mask[patch].mean() > 0.9
    corrected = pred.predict(prior_mask=wrong, clicks=[Click(80, 48, "negative")])
    assert corrected.mask[patch].mean() < 0.25
    assert corrected.mask[disk].mean() > 0.95


def test_negative_click_removes_a_wrongly_included_region(scene):
    img, disk, bar = scene
    # the geodesic distance follows the weak red/orange edge into the bar (the others stop at it from the start)
    pred = Predictor(finecut.load_model("geodesic"))
    pred.set_image(img)
    first = pred.predict(clicks=[Click(50, 48)])
    assert first.mask[bar].mean() > 0.5
    second = pred.predict(clicks=[Click(50, 48), Click(110, 48, "negative")], previous=first)
    assert second.mask[bar].mean() < 0.1
    assert second.mask[disk].mean() > 0.95


def test_box_prompt(predictor, scene):
    _, disk, _ = scene
    result = predictor.predict(box=Box(22, 20, 78, 76))
    assert iou(_gt(disk), result.mask) > 0.85
    assert not result.mask[:, 80:].any()  # nothing outside the box


def test_scribble_prompt(predictor, scene):
    _, disk, _ = scene
    scribbles = [
        Scribble(((38, 40), (50, 52), (62, 46)), positive=True, width=3),
        Scribble(((90, 30), (90, 66)), positive=False, width=3),
        Scribble(((4, 4), (130, 4), (130, 90), (4, 90), (4, 4)), positive=False, width=3),
    ]
    result = predictor.predict(scribbles=scribbles)
    assert iou(_gt(disk), result.mask) > 0.85


def test_prior_mask_is_refined(predictor, scene):
    _, disk, _ = scene
    prior = np.zeros(disk.shape, dtype=np.uint8)
    cv2.circle(prior, (52, 46), 21, 1, -1)
    prior = prior.astype(bool)
    result = predictor.predict(prior_mask=prior)
    assert iou(_gt(disk), result.mask) >= iou(_gt(disk), prior) - 0.02
    assert iou(_gt(disk), result.mask) > 0.65


def test_tolerant_click_segments_the_object_softly(predictor, scene):
    _, disk, bar = scene
    result = predictor.predict(clicks=[Click(50, 48, "tolerant")])
    assert result.mask[disk].mean() > 0.9
    assert iou(_gt(disk | bar), result.mask) > 0.6
    # a tolerant click is soft: a hard seed beside it wins
    negative = predictor.predict(clicks=[Click(50, 48, "tolerant"), Click(52, 48, "negative")])
    assert not negative.mask[48, 52]


def test_only_negative_evidence_gives_an_empty_mask(predictor):
    assert not predictor.predict().mask.any()
    result = predictor.predict(clicks=[Click(5, 5, "negative"), Click(70, 40, "negative")])
    assert not result.mask.any() and result.probs.max() == 0.0
    assert not predictor.predict(scribbles=[Scribble(((10, 10), (60, 60)), positive=False)]).mask.any()


def test_same_prompts_same_result_and_previous_replay(predictor, scene):
    _, disk, _ = scene
    gt = _gt(disk)
    clicks: list[Click] = []
    chain = []
    previous = None
    pred = np.zeros(gt.shape, dtype=bool)
    for _ in range(3):
        clicks.append(next_click(gt, pred, clicks))
        previous = predictor.predict(clicks=list(clicks), previous=previous)
        chain.append(previous)
        pred = previous.mask
    frozen_state = {k: np.array(v, copy=True) for k, v in chain[1].state.items()}
    again = predictor.predict(clicks=clicks, previous=chain[1])
    assert np.array_equal(again.probs, chain[2].probs)
    for key, value in frozen_state.items():  # the previous step's state is never modified
        assert np.array_equal(chain[1].state[key], value)

    # a fresh predictor with a fresh engine replays the chain exactly, whatever OpenCV's global RNG says
    cv2.setRNGSeed(12345)
    other = Predictor(finecut.load_model(predictor.model.name))
    other.set_image(scene[0])
    replay = None
    for step in range(3):
        replay = other.predict(clicks=clicks[: step + 1], previous=replay)
        assert np.array_equal(replay.probs, chain[step].probs)


def test_tiny_and_uniform_images(predictor):
    for image in (np.full((7, 5, 3), 128, np.uint8), np.random.default_rng(1).integers(0, 255, (3, 4, 3), np.uint8)):
        engine = predictor.model
        small = Predictor(engine)
        small.set_image(image)
        result = small.predict(clicks=[Click(1, 1)])
        assert result.probs.shape == image.shape[:2]
        assert result.mask[1, 1]
        assert np.isfinite(result.probs).all()


def test_large_image_runs_at_working_resolution():
    image = np.zeros((600, 1000, 3), np.uint8)
    image[:] = (40, 90, 160)
    cv2.rectangle(image, (300, 200), (700, 450), (220, 60, 40), -1)
    gt = np.zeros(image.shape[:2], np.int16)
    gt[200:451, 300:701] = 1
    for name in ENGINES:
        pred = Predictor(finecut.load_model(name))
        pred.set_image(image)
        result = pred.predict(clicks=[Click(500, 320)])
        assert result.probs.shape == (600, 1000)
        assert iou(gt, result.mask) > 0.95, name


# --- seed building ------------------------------------------------------------------------------------------------


def test_working_transform_caps_the_long_side():
    assert working_transform(480, 854, 256).out_size == (144, 256)
    assert working_transform(100, 80, 256).out_size == (100, 80)  # never upsampled
    with pytest.raises(FinecutError):
        working_transform(0, 10, 256)


def test_overlapping_opposite_clicks_split_by_nearest_centre():
    transform = CropTransform.identity(20, 30)
    prompts = Prompts(clicks=(Click(10, 10), Click(13, 10, "negative")))
    seeds = build_seeds(prompts, transform, click_radius=3, tolerant_radius=6)
    assert not (seeds.fg & seeds.bg).any()
    assert seeds.fg[10, 10] and seeds.bg[10, 13]
    assert seeds.fg[10, 11] and seeds.bg[10, 12]  # each pixel goes to the nearer click
    assert seeds.has_positive


def test_colour_gate_keeps_click_disks_on_the_clicked_colour():
    transform = CropTransform.identity(20, 30)
    lab = np.zeros((20, 30, 3), np.float32)
    lab[:, 15:] = (80, 20, 20)  # another colour right of column 15
    lab[4, 5] = (80, 20, 20)  # and one odd pixel, clicked below
    prompts = Prompts(clicks=(Click(14, 10), Click(5, 4, "negative")))
    whole = build_seeds(prompts, transform, click_radius=3, tolerant_radius=6)
    gated = build_seeds(prompts, transform, click_radius=3, tolerant_radius=6, colours=lab, gate=10.0)
    assert whole.fg[10, 16] and not gated.fg[10, 16]  # the disk stops at the colour edge
    assert gated.fg[10, 14] and gated.fg[10, 12] and gated.fg[11, 12]
    assert whole.bg.sum() > 20 and gated.bg[4, 5] and gated.bg.sum() == 1  # the clicked pixel is always kept


def test_seeds_from_box_scribbles_tolerant_and_prior():
    transform = CropTransform.identity(40, 50)
    prior = np.zeros((40, 50), bool)
    prior[10:30, 10:30] = True
    prompts = Prompts(
        clicks=(Click(20, 20, "tolerant"),),
        box=Box(5, 5, 45, 35),
        scribbles=(Scribble(((8, 8), (20, 8)), True, 1), Scribble(((40, 30), (40, 10)), False, 1)),
        prior_mask=prior,
    )
    seeds = build_seeds(prompts, transform, click_radius=2, tolerant_radius=4)
    assert seeds.box == (5, 5, 45, 35)
    assert seeds.bg[0, 0] and seeds.bg[39, 49] and not seeds.bg[20, 20]  # outside the box is background
    assert seeds.fg[8, 14] and seeds.bg[20, 40]  # along the strokes
    assert seeds.tolerant[20, 20] and seeds.tolerant[20, 24] and not seeds.fg[20, 20]  # soft, not hard
    inside, outside = seeds.prior_cores(band=3)
    assert inside[20, 20] and not inside[11, 20] and outside[20, 36] and not outside[20, 31]
    assert seeds.box_interior[20, 20] and not seeds.box_interior[0, 0]


def test_no_positive_evidence():
    transform = CropTransform.identity(20, 20)
    seeds = build_seeds(Prompts(clicks=(Click(3, 3, "negative"),)), transform, 2, 4)
    assert not seeds.has_positive
    seeds = build_seeds(Prompts(prior_mask=np.zeros((20, 20), bool)), transform, 2, 4)
    assert not seeds.has_positive


def test_probability_helpers():
    mask = np.zeros((20, 30), bool)
    mask[5:15, 8:20] = True
    probs = signed_distance_probs(mask, softness=1.0)
    assert np.array_equal(probs > 0.5, mask)
    up = to_original(probs, 40, 60)
    assert up.shape == (40, 60) and up.dtype == np.float32
    assert abs((up > 0.5).mean() - mask.mean()) < 0.02
    assert np.array_equal(geodesic_probs(np.array([0.0, 1.0, 3.0, np.inf]), np.array([2.0, 1.0, 0.0, 5.0])),
                          np.array([1.0, 0.5, 0.0, 0.0], np.float32))
    blobs = np.zeros((10, 10), bool)
    blobs[1:3, 1:3] = True
    blobs[6:9, 6:9] = True
    anchors = np.zeros_like(blobs)
    anchors[7, 7] = True
    kept = seed_connected(blobs, anchors)
    assert kept[7, 7] and not kept[1, 1]


def test_fit_gmm_matches_opencv_layout():
    rng = np.random.default_rng(0)
    pixels = np.concatenate([rng.normal(50, 5, (500, 3)), rng.normal(200, 5, (500, 3))]).clip(0, 255)
    model = fit_gmm(pixels)
    assert model.shape == (1, GMM_SIZE)
    weights, means = model[0, :5], model[0, 5:20].reshape(5, 3)
    assert abs(weights.sum() - 1.0) < 1e-9
    assert np.isclose((weights * means[:, 0]).sum(), pixels[:, 0].mean(), atol=5)
    assert fit_gmm(np.array([[1.0, 2.0, 3.0]]))[0, 0] == 1.0  # one pixel: one component
    with pytest.raises(FinecutError):
        fit_gmm(np.zeros((0, 3)))


# --- a real photo (training data; skipped when the shared data is absent) ------------------------------------------


def test_real_photo_sanity():
    image_path = MSRA / "images" / "101.jpg"
    if not image_path.exists():
        pytest.skip("MSRA10K-168 training data not available")
    from finecut.io import read_image, read_mask

    image = read_image(image_path)
    gt = read_mask(MSRA / "gt" / "101.png").astype(np.int16)
    for name in ENGINES:
        pred = Predictor(finecut.load_model(name))
        pred.set_image(image)
        clicks: list[Click] = []
        previous = None
        mask = np.zeros(gt.shape, bool)
        for _ in range(5):
            clicks.append(next_click(gt, mask, clicks))
            previous = pred.predict(clicks=clicks, previous=previous, threshold=0.49)
            mask = previous.mask
        assert iou(gt, mask) > 0.7, name


def test_model_spec_names_a_model_with_inference_options() -> None:
    from finecut.registry import parse_model_spec, parse_option

    assert parse_model_spec("ntclick") == ("ntclick", {})
    assert parse_model_spec("ntclick:negative_rule=paper,hrr_margin=8,hrr=false") == (
        "ntclick", {"negative_rule": "paper", "hrr_margin": 8, "hrr": False})
    assert parse_model_spec("C:/models/mine.json") == ("C:/models/mine.json", {})
    assert parse_model_spec("runs/a:b/last.json:threshold=0.4") == ("runs/a:b/last.json", {"threshold": 0.4})
    assert parse_option("scales=[1, 2]") == ("scales", [1, 2])
    from finecut.registry import format_model_spec

    assert format_model_spec("focalclick-xl", {}) == "focalclick-xl"
    label = format_model_spec("focalclick-xl", {"detail": "x", "box_refine": 3})
    assert label == "focalclick-xl:box_refine=3,detail=x"
    assert parse_model_spec(label) == ("focalclick-xl", {"box_refine": 3, "detail": "x"})
    with pytest.raises(FinecutError, match="KEY=VALUE"):
        parse_option("threshold")
    name, options = parse_model_spec("geodesic:max_side=64")
    assert isinstance(finecut.load_model(name, **options), Engine)
