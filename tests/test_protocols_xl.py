"""FocalClick-XL's evaluation protocols: the scribble simulator, boxes, coarse masks, DAVIS-585-style initial masks,
Progressive Merge, alpha metrics, and their runs through the one evaluator, its reports and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest

from finecut.cli import main
from finecut.datasets.base import Sample
from finecut.engines.base import Engine, EngineOutput
from finecut.errors import FinecutError
from finecut.evaluation import EvalConfig, evaluate_sample, results_markdown, run_evaluation
from finecut.evaluation.alpha import (
    AlphaFolder,
    alpha_errors,
    as_alpha,
    gaussian_derivative_kernel,
    gradient_error,
    mse,
    read_alpha,
    sad,
)
from finecut.evaluation.config import COARSE_LEVELS
from finecut.evaluation.loop import score_alpha
from finecut.evaluation.merge import merge_region, progressive_merge
from finecut.evaluation.perturb import (
    CoarseMasks,
    SimulatedInitMasks,
    coarse_mask,
    defect_mask,
    gt_box,
    jitter_box,
    sample_rng,
)
from finecut.evaluation.protocol import error_maps, iou
from finecut.evaluation.scribbles import (
    HumanScribbles,
    bezier_curve,
    largest_error_region,
    longest_path,
    next_scribble,
    region_scribble,
    scribble_pixels,
    scribbles_from_map,
)
from finecut.io import write_image, write_mask
from finecut.predictor import Predictor
from finecut.prompts import Box, Scribble

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"


# ------------------------------------------------------------------------------------------------ shapes
def _disk(h: int = 80, w: int = 100, cx: int = 50, cy: int = 40, r: int = 25) -> np.ndarray:
    ys, xs = np.mgrid[:h, :w]
    return ((xs - cx) ** 2 + (ys - cy) ** 2 <= r * r).astype(np.int8)


def _blob_gt() -> np.ndarray:
    """An irregular object: a disk, an attached bar and a hole; a strip of ignore pixels on its boundary."""
    gt = _disk(120, 160, 70, 60, 35)
    gt[50:62, 100:150] = 1
    gt[55:65, 60:72] = 0
    gt[20:26, 60:80] = -1
    return gt


def _textured(gt: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, size=(*gt.shape, 3)).astype(np.uint8)
    image[gt == 1] += np.array([150, 80, 20], dtype=np.uint8)
    return cv2.GaussianBlur(image, (5, 5), 0)


# ------------------------------------------------------------------------------------- scribble simulator
def test_longest_path_is_acyclic_and_spans_an_l_shape() -> None:
    pts = [(x, 0) for x in range(10)] + [(9, y) for y in range(1, 6)]
    path = longest_path(np.array(pts, dtype=float))
    assert len(path) == 15
    assert {tuple(p) for p in path[[0, -1]]} == {(0.0, 0.0), (9.0, 5.0)}
    # a ring: the spanning tree cuts one edge, the path visits no point twice
    ring = np.array([(round(10 * np.cos(a)), round(10 * np.sin(a))) for a in np.linspace(0, 2 * np.pi, 80)])
    ring = np.unique(ring, axis=0)
    path = longest_path(ring.astype(float))
    assert len({tuple(p) for p in path}) == len(path) and len(path) > len(ring) // 2
    steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
    assert steps.max() <= 1.5


def test_bezier_curve_keeps_its_ends_and_stays_near_a_straight_path() -> None:
    path = np.array([(x, 2.0) for x in range(40)])
    curve = bezier_curve(path)
    assert np.allclose(curve[0], path[0]) and np.allclose(curve[-1], path[-1])
    assert np.allclose(curve[:, 1], 2.0)
    assert np.linalg.norm(np.diff(curve, axis=0), axis=1).max() <= 1.01


def test_scribble_lies_inside_the_largest_error_region_and_is_deterministic() -> None:
    gt = _blob_gt()
    cases = [
        np.zeros(gt.shape, bool),                                            # all missed: positive
        (gt == 1) | _disk(120, 160, 130, 100, 15).astype(bool),              # a big false positive: negative
        (gt == 1) & ~_disk(120, 160, 70, 60, 20).astype(bool),               # a hole: positive
    ]
    for pred in cases:
        scribble = next_scribble(gt, pred)
        assert scribble is not None
        region, positive = largest_error_region(gt, pred)
        assert scribble.positive == positive
        drawn = scribble_pixels([scribble], gt.shape)
        assert drawn.any() and not (drawn & ~region).any()
        fn, fp = error_maps(gt, pred)
        assert not (drawn & ~(fn if positive else fp)).any()
        assert next_scribble(gt, pred) == scribble  # the same masks give the same scribble
    assert next_scribble(gt, cases[1]).positive is False
    assert next_scribble(gt, cases[0]).width == 5.0


def test_scribble_ties_go_negative_and_no_error_gives_none() -> None:
    gt = np.zeros((40, 40), np.int8)
    gt[5:15, 5:15] = 1
    pred = np.zeros((40, 40), bool)
    pred[25:35, 25:35] = True  # a 10x10 false positive, as large as the 10x10 miss
    assert next_scribble(gt, pred).positive is False
    assert next_scribble(gt, gt == 1) is None


def test_thin_error_region_gets_a_narrower_scribble_inside_it() -> None:
    gt = np.zeros((30, 60), np.int8)
    gt[10:13, 5:55] = 1  # a 3 px wide bar
    scribble = next_scribble(gt, np.zeros(gt.shape, bool), width=5.0)
    drawn = scribble_pixels([scribble], gt.shape)
    assert scribble.width < 5.0
    assert not (drawn & (gt != 1)).any() and drawn.sum() >= 20
    dot = region_scribble(np.pad(np.ones((1, 1), bool), 3), True)  # a single pixel
    assert scribble_pixels([dot], (7, 7)).sum() == 1


def test_later_scribbles_avoid_pixels_already_scribbled() -> None:
    gt = _blob_gt()
    pred = np.zeros(gt.shape, bool)
    first = next_scribble(gt, pred)
    second = next_scribble(gt, pred, [first])
    assert second != first
    assert not (scribble_pixels([first], gt.shape) & scribble_pixels([second], gt.shape)).any()


def test_painted_strokes_become_scribbles_of_their_width() -> None:
    canvas = np.zeros((60, 90), np.uint8)
    cv2.polylines(canvas, [np.array([[5, 10], [40, 30], [80, 15]], np.int32)], False, 1, 5)
    cv2.line(canvas, (10, 50), (70, 52), 1, 3)
    scribbles = scribbles_from_map(canvas > 0, positive=False)
    assert len(scribbles) >= 2 and all(not s.positive for s in scribbles)
    widths = sorted({s.width for s in scribbles})
    assert abs(widths[0] - 3.0) <= 1 and abs(widths[-1] - 5.0) <= 1
    drawn = scribble_pixels(scribbles, canvas.shape)
    painted = canvas > 0
    assert (drawn & painted).sum() / painted.sum() > 0.9
    assert (drawn & ~painted).sum() / drawn.sum() < 0.2


def test_human_scribble_folder_reads_palette_maps_and_aliases(tmp_path: Path) -> None:
    from PIL import Image

    labels = np.zeros((40, 60), np.uint8)
    labels[10:14, 10:40] = 1
    labels[30:33, 5:55] = 2
    im = Image.fromarray(labels, mode="P")
    im.putpalette([0, 0, 0, 255, 255, 207, 219, 0, 0] + [0] * (253 * 3))
    im.save(tmp_path / "124084-anno.png")
    human = HumanScribbles(tmp_path)
    sample = Sample("124080", np.zeros((40, 60, 3), np.uint8), np.zeros((40, 60), np.int8))
    scribbles = human(sample)
    assert [s.positive for s in scribbles] == [True, False]
    drawn = scribble_pixels(scribbles[:1], (40, 60))
    assert (drawn & (labels == 1)).sum() >= 0.8 * drawn.sum() and (drawn & (labels == 1)).sum() >= 0.8 * 120
    with pytest.raises(FinecutError, match="no human scribbles"):
        human(Sample("other", sample.image, sample.gt))


@pytest.mark.skipif(not (SHARED / "GrabCut-scribbles").is_dir(), reason="shared GrabCut scribbles not available")
def test_real_human_scribbles_agree_with_grabcut_ground_truth() -> None:
    from finecut.datasets import open_dataset

    dataset = open_dataset("GrabCut")
    human = HumanScribbles(SHARED / "GrabCut-scribbles" / "scribbles-set-1")
    for index in (0, 1):  # 106024, and 124080 (stored as 124084)
        sample = dataset[index]
        scribbles = human(sample)
        assert any(s.positive for s in scribbles) and any(not s.positive for s in scribbles)
        for s in scribbles:
            drawn = scribble_pixels([s], sample.gt.shape)
            wrong = drawn & (sample.gt == (0 if s.positive else 1))
            assert wrong.sum() <= 0.05 * drawn.sum()


# --------------------------------------------------------------------------------------------------- boxes
def test_gt_box_and_seeded_jitter() -> None:
    gt = np.zeros((50, 80), np.int8)
    gt[10:30, 20:60] = 1
    gt[0, 0] = -1
    box = gt_box(gt)
    assert box.as_tuple() == (20, 10, 60, 30)
    a = jitter_box(box, sample_rng(0, "x", "box jitter"), 0.1, 50, 80)
    b = jitter_box(box, sample_rng(0, "x", "box jitter"), 0.1, 50, 80)
    assert a == b and a != box
    assert abs(a.x0 - 20) <= 4 and abs(a.x1 - 60) <= 4 and abs(a.y0 - 10) <= 2 and abs(a.y1 - 30) <= 2
    edge = jitter_box(Box(0, 0, 80, 50), sample_rng(1, "x", "box jitter"), 0.2, 50, 80)
    assert edge.x0 >= 0 and edge.y0 >= 0 and edge.x1 <= 80 and edge.y1 <= 50
    assert jitter_box(box, sample_rng(0, "x", "b"), 0.0, 50, 80) == box
    with pytest.raises(FinecutError, match="no object"):
        gt_box(np.zeros((5, 5), np.int8))


# -------------------------------------------------------------------------------------------- coarse masks
@pytest.mark.parametrize("band", COARSE_LEVELS)
def test_coarse_masks_land_in_their_band_and_are_seeded(band: tuple[float, float]) -> None:
    for gt in (_blob_gt(), _disk(60, 60, 30, 30, 12)):
        masks = [coarse_mask(gt, band, sample_rng(seed, "s", "coarse")) for seed in (0, 0, 1)]
        for m in masks:
            assert band[0] <= iou(gt, m) <= band[1]
        assert (masks[0] == masks[1]).all()
    assert not (masks[0] == masks[2]).all()


def test_coarse_source_depends_on_seed_and_name_only() -> None:
    gt = _blob_gt()
    a = Sample("a", _textured(gt), gt)
    source = CoarseMasks(3, COARSE_LEVELS[2])
    first = source(a)
    source(Sample("b", _textured(gt, 1), gt))
    assert (source(a) == first).all()
    assert "seed=3" in repr(source) and "0.65" in repr(source)


# ------------------------------------------------------------------------------------ DAVIS-585 init masks
def test_defect_masks_land_in_0_75_0_85_and_are_reproducible() -> None:
    gt = _blob_gt()
    image = _textured(gt)
    for seed in range(3):
        m = defect_mask(gt, image, sample_rng(seed, "obj", "davis585 defects"))
        assert 0.75 <= iou(gt, m) <= 0.85
        again = defect_mask(gt, image, sample_rng(seed, "obj", "davis585 defects"))
        assert (m == again).all()
    source = SimulatedInitMasks(seed=5)
    sample = Sample("obj", image, gt)
    assert (source(sample) == SimulatedInitMasks(seed=5)(sample)).all()
    assert not (source(sample) == SimulatedInitMasks(seed=6)(sample)).all()


def test_defect_types_change_the_mask_the_way_they_say() -> None:
    gt = _blob_gt()
    image = _textured(gt)
    obj = gt == 1
    only_fp = defect_mask(gt, image, sample_rng(0, "x", "d"), probabilities=(0.0, 1.0, 0.0))
    assert only_fp[obj].all()  # nothing of the object removed
    assert (only_fp & ~obj).any()
    only_fn = defect_mask(gt, image, sample_rng(0, "x", "d"), probabilities=(0.0, 0.0, 1.0))
    assert not (only_fn & ~obj).any() and (obj & ~only_fn).any()  # holes only
    for m in (only_fp, only_fn):
        assert 0.75 <= iou(gt, m) <= 0.85


# ------------------------------------------------------------------------------------------ Progressive Merge
def test_progressive_merge_takes_only_the_component_of_the_interaction() -> None:
    previous = np.zeros((20, 30), bool)
    previous[2:8, 2:8] = True
    new = previous.copy()
    new[2:8, 8:12] = True       # grows where the click is
    new[15:18, 20:25] = True    # a spurious change elsewhere
    seeds = np.zeros_like(previous)
    seeds[5, 10] = True
    merged = progressive_merge(previous, new, seeds)
    expected = previous.copy()
    expected[2:8, 8:12] = True
    assert (merged == expected).all()
    seeds[:] = False
    seeds[0, 0] = True  # the interaction changed nothing where it was made: keep the previous mask
    assert not merge_region(previous, new, seeds).any()
    assert (progressive_merge(previous, new, seeds) == previous).all()


# ------------------------------------------------------------------------------------------------ alpha metrics
def test_sad_and_mse_by_hand() -> None:
    gt = np.zeros((10, 10), np.float32)
    gt[2:6, 3:8] = 1.0  # 20 object pixels
    pred = np.zeros((10, 10), np.float32)
    assert sad(pred, gt) == pytest.approx(20 / 1000)
    assert mse(pred, gt) == pytest.approx(20 / 100)
    half = np.full((10, 10), 0.5, np.float32)
    assert sad(half, gt) == pytest.approx(50 / 1000)
    assert mse(half, gt) == pytest.approx(0.25)
    region = np.zeros((10, 10), bool)
    region[2:4, 3:5] = True  # 4 object pixels
    assert sad(pred, gt, region) == pytest.approx(4 / 1000) and mse(pred, gt, region) == pytest.approx(1.0)
    # uint8 / uint16 / bool inputs are scaled to [0, 1]
    assert sad((gt * 255).astype(np.uint8), (gt * 65535).astype(np.uint16)) == 0.0
    assert sad(gt > 0.5, gt) == 0.0
    assert as_alpha(np.array([[128]], np.uint8))[0, 0] == pytest.approx(128 / 255)
    with pytest.raises(FinecutError, match=r"\[0, 1\]"):
        as_alpha(np.array([[1.5]]))


def test_gradient_error_by_hand() -> None:
    kernel = gaussian_derivative_kernel(1.4)
    assert kernel.shape == (9, 9) and np.sqrt((kernel**2).sum()) == pytest.approx(1.0)
    gt = np.zeros((40, 40))
    assert gradient_error(gt, gt) == 0.0
    assert gradient_error(np.full((40, 40), 0.3), gt) == pytest.approx(0.0, abs=1e-20)  # no gradient
    # a horizontal ramp of slope c: away from the border its Gaussian-derivative gradient is c * A with
    # A = (sum_v g(v)) * (sum_u u^2 g(u)) / sigma^2 / ||k||, from k[v, u] = g(v) g'(u), g'(u) = -u g(u) / sigma^2
    sigma, c = 1.4, 0.01
    u = np.arange(-4, 5, dtype=np.float64)
    g = np.exp(-(u**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    norm = np.sqrt(((g[:, None] * (-u * g / sigma**2)[None, :]) ** 2).sum())
    a = g.sum() * (u**2 * g).sum() / sigma**2 / norm
    ramp = np.tile(np.arange(40) * c, (40, 1))
    interior = np.zeros((40, 40), bool)
    interior[5:35, 5:35] = True
    assert gradient_error(ramp, gt, interior) == pytest.approx(interior.sum() * (c * a) ** 2 / 1000, rel=1e-9)
    errors = alpha_errors(ramp, gt, interior)
    assert set(errors) == {"sad", "mse", "grad"}


def test_score_alpha_prefers_the_prediction_alpha() -> None:
    gt_alpha = np.zeros((8, 8), np.float32)
    gt_alpha[2:6, 2:6] = 0.5
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    with_alpha = SimpleNamespace(alpha=gt_alpha.copy())
    scored = score_alpha(with_alpha, mask, gt_alpha, None)
    assert scored["source"] == "alpha" and scored["sad"] == 0.0
    assert scored["mask_sad"] == pytest.approx(16 * 0.5 / 1000)  # the same prediction's binary mask, scored too
    assert scored["mask_mse"] == pytest.approx(16 * 0.25 / 64)
    scored = score_alpha(SimpleNamespace(), mask, gt_alpha, None)
    assert scored["source"] == "mask" and scored["sad"] == pytest.approx(16 * 0.5 / 1000)
    assert scored["mask_sad"] == scored["sad"]


def test_alpha_folder_reads_8_and_16_bit_alphas(tmp_path: Path) -> None:
    root = tmp_path / "alphaset"
    alpha8 = np.zeros((20, 30), np.uint8)
    alpha8[5:15, 5:20] = 255
    alpha8[5:15, 20:25] = 100
    alpha16 = (alpha8.astype(np.uint32) * 257).astype(np.uint16)
    for name, alpha in (("a", alpha8), ("b", alpha16)):
        write_image(root / "images" / f"{name}.png", np.full((20, 30, 3), 90, np.uint8))
        (root / "alphas").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "alphas" / f"{name}.png"), alpha)
    dataset = AlphaFolder(root)
    assert len(dataset) == 2 and dataset.name == "alphaset"
    a, b = dataset[0], dataset[1]
    assert np.allclose(a.meta["alpha"], b.meta["alpha"], atol=1e-6)
    assert read_alpha(root / "alphas" / "b.png").dtype == np.float32
    assert a.gt.sum() == 150 and a.gt.dtype == np.int8  # alpha >= 0.5: the opaque part
    with pytest.raises(FinecutError, match="images/ and alphas/"):
        AlphaFolder(tmp_path)


# ------------------------------------------------------------------------------- through the one evaluator
class PromptEngine(Engine):
    """Test engine: a box fills its interior; positive scribbles paint disks of ``grow`` px around their points,
    negative ones erase; a prior mask alone is returned as is; clicks add / erase disks. ``spurious`` adds a blob at
    the top-left corner on every step with a click (what Progressive Merge must reject). ``refuse`` names a prompt
    type it raises on."""

    name = "prompttest"

    def __init__(self, grow: int = 6, spurious: bool = False, refuse: str | None = None) -> None:
        self.grow = grow
        self.spurious = spurious
        self.refuse = refuse

    def encode_image(self, image: np.ndarray) -> Any:
        return image.shape[:2]

    def predict(self, image, features, prompts, previous) -> EngineOutput:
        if self.refuse == "box" and prompts.box is not None:
            raise FinecutError("boxes are not supported by this engine")
        if self.refuse == "scribbles" and prompts.scribbles:
            raise FinecutError("scribbles are not supported by this engine")
        h, w = features
        if previous is not None:
            probs = previous.probs.copy()
        elif prompts.prior_mask is not None:
            probs = prompts.prior_mask.astype(np.float32)
        else:
            probs = np.zeros((h, w), np.float32)
        if prompts.box is not None:
            b = prompts.box
            probs[int(b.y0):int(b.y1), int(b.x0):int(b.x1)] = 1.0
        ys, xs = np.mgrid[:h, :w]
        for s in prompts.scribbles:
            for x, y in s.points[:: max(1, len(s.points) // 40)]:
                probs[(xs - x) ** 2 + (ys - y) ** 2 <= self.grow**2] = 1.0 if s.positive else 0.0
        for c in prompts.clicks:
            probs[(xs - c.x) ** 2 + (ys - c.y) ** 2 <= self.grow**2] = 1.0 if c.is_positive else 0.0
        if self.spurious and prompts.clicks:
            probs[:4, :4] = 1.0
        return EngineOutput(probs=probs)


def _sample(name: str = "blob", seed: int = 0) -> Sample:
    gt = _blob_gt()
    return Sample(name, _textured(gt, seed), gt)


def test_scribble_protocol_runs_nos_and_records_scribbles() -> None:
    config = EvalConfig(protocol="scribble", max_clicks=8)
    result = evaluate_sample(Predictor(PromptEngine()), _sample(), config)
    assert len(result.ious) == 8 and result.clicks == []
    assert len(result.extra["scribbles"]) >= 1 and result.extra["scribbles"][0][0] == "pos"
    assert result.ious[-1] > result.ious[0] > 0
    again = evaluate_sample(Predictor(PromptEngine()), _sample(), config)
    assert again.ious == result.ious and again.extra["scribbles"] == result.extra["scribbles"]


def test_scribble_protocol_starts_from_human_scribbles() -> None:
    gt = _blob_gt()
    human = [Scribble(((40.0, 60.0), (90.0, 60.0)), True, 5.0), Scribble(((5.0, 110.0), (150.0, 110.0)), False, 3.0)]
    config = EvalConfig(protocol="scribble", max_clicks=3)
    result = evaluate_sample(Predictor(PromptEngine()), _sample(), config, first_scribbles=human)
    assert result.extra["human_first"] == 2
    assert result.extra["scribbles"][:2] == [["pos", 5.0, 2, 40, 60, 90, 60], ["neg", 3.0, 2, 5, 110, 150, 110]]
    assert len(result.extra["scribbles"]) == 4 and iou(gt, gt == 1) == 1.0


def test_box_protocol_scores_one_prediction() -> None:
    sample = _sample()
    result = evaluate_sample(Predictor(PromptEngine()), sample, EvalConfig(protocol="box"))
    box = gt_box(sample.gt)
    filled = np.zeros(sample.gt.shape, bool)
    filled[box.y0:box.y1, box.x0:box.x1] = True
    assert result.ious == [round(iou(sample.gt, filled), 6)] and result.extra["box"] == list(box.as_tuple())
    jittered = evaluate_sample(Predictor(PromptEngine()), sample, EvalConfig(protocol="box", box_jitter=0.1))
    assert jittered.extra["box"] != result.extra["box"]
    assert EvalConfig(protocol="box", max_clicks=20).max_clicks == 1


def test_coarse_protocol_reports_coarse_and_refined() -> None:
    samples = [_sample("a"), _sample("b", 1)]
    run = run_evaluation(PromptEngine(), samples, None, EvalConfig(protocol="coarse", coarse_band=COARSE_LEVELS[3]),
                         progress=False)
    s = run.summary
    assert s["protocol"] == "coarse" and s["protocol_params"] == {"coarse_band": [0.55, 0.6]}
    assert 0.55 <= s["mean_init_iou"] <= 0.60 and s["coarse_out_of_band"] == 0
    assert s["final_miou"] == pytest.approx(s["mean_init_iou"], abs=1e-5)  # this engine returns the mask as is
    assert s["noc"] == {"85": None, "90": None, "95": None}
    with pytest.raises(FinecutError, match="coarse_band"):
        EvalConfig(protocol="coarse")


def test_correction_protocol_merge_keeps_the_initial_mask_elsewhere(tmp_path: Path) -> None:
    samples = [_sample("a"), _sample("b", 1)]
    runs = {}
    for merge in (False, True):
        config = EvalConfig(protocol="correction", merge=merge, max_clicks=5)
        runs[merge] = run_evaluation(PromptEngine(spurious=True), samples, tmp_path / f"m{int(merge)}", config,
                                     progress=False)
    off, on = runs[False], runs[True]
    assert off.summary["mean_init_iou"] == on.summary["mean_init_iou"]
    assert 0.75 <= off.summary["mean_init_iou"] <= 0.85 and off.summary["init_out_of_band"] == 0
    assert on.summary["protocol_params"]["merge"] is True and off.summary["protocol_params"]["merge"] is False
    # the spurious corner blob never touches a click, so the merged runs never take it
    assert all(r.extra["merged_steps"] == 5 for r in on.results)
    assert min(a.ious[-1] - b.ious[-1] for a, b in zip(on.results, off.results)) >= 0
    config = json.loads((tmp_path / "m1" / "config.json").read_text())
    assert config["init_masks"].startswith("SimulatedInitMasks(seed=0") and config["protocol"]["merge"] is True
    text = results_markdown([on.summary | {"_path": str(tmp_path / "m1" / "summary.json")},
                             off.summary | {"_path": str(tmp_path / "m0" / "summary.json")}])
    assert "## Mask correction (DAVIS-585 style)" in text and "NoC90 + PM" in text
    assert "## NoC90 overview" not in text


def test_unsupported_prompt_is_reported_not_raised(tmp_path: Path) -> None:
    run = run_evaluation(PromptEngine(refuse="box"), [_sample()], tmp_path / "box", EvalConfig(protocol="box"),
                         progress=False)
    assert "does not support box prompts" in run.summary["not_supported"]
    assert run.summary["num_samples"] == 0 and not (tmp_path / "box" / "samples.jsonl").exists()
    text = results_markdown([run.summary | {"_path": str(tmp_path / "box" / "summary.json")}])
    assert "## Box" in text and "Not supported" in text and "boxes are not supported" in text
    with pytest.raises(FinecutError, match="no object|not supported"):  # clicks are never "not supported"
        run_evaluation(PromptEngine(refuse="box"), [Sample("e", np.zeros((8, 8, 3), np.uint8),
                                                           np.zeros((8, 8), np.int8))], None,
                       EvalConfig(protocol="box"), progress=False)


def test_alpha_hook_scores_runs_on_an_alpha_set(tmp_path: Path) -> None:
    root = tmp_path / "mattes"
    gt = _blob_gt()
    alpha = np.where(gt == 1, 255, 0).astype(np.uint8)
    alpha = cv2.GaussianBlur(alpha, (7, 7), 0)
    write_image(root / "images" / "m0.png", _textured(gt))
    (root / "alphas").mkdir(parents=True)
    cv2.imwrite(str(root / "alphas" / "m0.png"), alpha)
    run = run_evaluation(PromptEngine(), AlphaFolder(root), tmp_path / "run", EvalConfig(max_clicks=4),
                         progress=False)
    a = run.summary["alpha"]
    assert a["source"] == "mask" and a["num_samples"] == 1 and a["sad"] > 0 and a["grad"] > 0
    text = results_markdown([run.summary | {"_path": str(tmp_path / "run" / "summary.json")}])
    assert "## Alpha mattes" in text and "## NoC90 overview" in text


def test_config_record_of_standard_runs_is_unchanged() -> None:
    record = EvalConfig().to_dict()
    assert set(record) == {"max_clicks", "threshold", "target_iou", "noc_thresholds", "mask_correction", "seed",
                           "limit", "protocol", "tolerant_offset", "honour_clicks"}
    scribble = EvalConfig(protocol="scribble", scribble_start="/x")
    assert EvalConfig.from_dict(scribble.to_dict()) == scribble
    with pytest.raises(FinecutError, match="scribble protocol only"):
        EvalConfig(scribble_start="/x")


# ----------------------------------------------------------------------------------------------------- CLI
def _folder(root: Path, n: int = 2) -> Path:
    for i in range(n):
        gt = np.zeros((48, 64), bool)
        gt[12:36, 16 + 2 * i:44 + 2 * i] = True
        image = np.full((48, 64, 3), 40, np.uint8)
        image[gt] = (200, 120, 40)
        write_image(root / "images" / f"im{i}.png", image)
        write_mask(root / "masks" / f"im{i}.png", gt)
    return root


def test_cli_runs_the_protocols_and_writes_a_section_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _folder(tmp_path / "tiny")
    out = tmp_path / "runs"
    rc = main(["evaluate", "--model", "grabcut", "--dataset", str(data), "--protocol", "scribble", "box", "coarse",
               "correction", "--coarse-levels", "2", "--box-jitter", "0", "0.1", "--merge", "both",
               "--max-clicks", "3", "--out", str(out), "--table", str(out / "RESULTS.md"), "--no-progress"])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == ["grabcut-tiny-box", "grabcut-tiny-box-jitter10", "grabcut-tiny-coarse-L2",
                     "grabcut-tiny-correction-merge", "grabcut-tiny-correction-nomerge", "grabcut-tiny-scribble"]
    for name in names:
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["protocol"] in name and summary["seed"] == 0 and "protocol_params" in summary
    table = (out / "RESULTS.md").read_text()
    for section in ("## Scribbles (NoS)", "## Box", "## Coarse masks", "## Mask correction"):
        assert section in table
    printed = capsys.readouterr().out
    assert "[scribble]" in printed and "NoS85" in printed and "[coarse]" in printed


def test_cli_refuses_human_scribbles_without_a_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _folder(tmp_path / "tiny", n=1)
    rc = main(["evaluate", "--model", "grabcut", "--dataset", str(data), "--protocol", "scribble",
               "--scribble-first", "1", "--out", str(tmp_path / "runs"), "--no-progress"])
    assert rc == 2
    assert "human scribble folder" in capsys.readouterr().err
