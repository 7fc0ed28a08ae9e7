"""Every click honoured: the rule, its counting in the evaluator, and the Predictor switch."""

from __future__ import annotations

import numpy as np
import pytest

import finecut
from finecut.click_honour import click_violations, honour_clicks, rejected_components
from finecut.engines.base import Engine, EngineOutput
from finecut.evaluation.config import EvalConfig
from finecut.evaluation.loop import evaluate_sample
from finecut.evaluation.summary import summarize
from finecut.datasets.base import Sample
from finecut.prompts import Click


class FixedEngine(Engine):
    """Returns the same probabilities whatever the prompts: a network that ignores clicks."""

    name = "fixed"

    def __init__(self, probs: np.ndarray) -> None:
        self.probs = probs.astype(np.float32)

    def predict(self, image, features, prompts, previous):  # type: ignore[no-untyped-def]
        return EngineOutput(self.probs.copy())


def _probs() -> np.ndarray:
    probs = np.zeros((40, 60), np.float32)
    probs[5:20, 5:25] = 0.9  # the object
    probs[25:35, 40:55] = 0.8  # a false-positive blob
    return probs


def test_violations_counted() -> None:
    mask = _probs() > 0.5
    clicks = [Click(10, 10), Click(50, 5), Click(45, 30, "negative"), Click(2, 2, "negative"), Click(8, 8, "tolerant")]
    assert click_violations(mask, clicks) == 2  # the positive at (50, 5) and the negative on the blob


def test_rejected_components_keep_what_a_positive_click_holds() -> None:
    mask = _probs() > 0.5
    clicks = [Click(10, 10), Click(45, 30, "negative"), Click(12, 12, "negative")]
    rejected = rejected_components(mask, clicks)
    assert rejected[25:35, 40:55].all() and not rejected[5:20, 5:25].any()


def test_a_negative_click_on_a_branch_keeps_the_structure_tolerant_clicks_selected() -> None:
    # a thin tree (one component): a trunk and a false branch; tolerant clicks near the trunk, no positive click
    mask = np.zeros((60, 80), bool)
    mask[30, 5:75] = True  # trunk, 1 px wide
    mask[5:30, 60] = True  # branch, joined to the trunk
    probs = mask.astype(np.float32)
    clicks = [Click(20, 34, "tolerant"), Click(60, 10, "negative")]  # tolerant 4 px below the trunk
    assert not rejected_components(mask, clicks).any()
    new_mask, _, _ = honour_clicks(mask, probs, clicks, radius=2)
    assert click_violations(new_mask, clicks) == 0
    assert new_mask[30, 5:75].all()  # the trunk survives, only the negative click's disk is cut
    assert new_mask[20:30, 60].all() and not new_mask[8:13, 60].any()
    # the same negative click with the tolerant click far from every structure: the blob is rejected
    far = [Click(20, 55, "tolerant"), Click(60, 10, "negative")]
    assert rejected_components(mask, far).sum() == mask.sum()
    assert rejected_components(mask, far, reach=30).sum() == 0


def test_honour_clicks_fixes_every_violation_and_keeps_probs_consistent() -> None:
    probs = _probs()
    mask = probs > 0.5
    clicks = [Click(10, 10), Click(50, 5), Click(45, 30, "negative"), Click(12, 12, "negative")]
    new_mask, new_probs, changed = honour_clicks(mask, probs, clicks, radius=2)
    assert click_violations(new_mask, clicks) == 0 and changed > 0
    assert not new_mask[25:35, 40:55].any()  # the rejected blob is gone
    assert new_mask[5:20, 5:25].sum() > 0.9 * 15 * 20  # the object survives the negative click inside it
    assert np.array_equal(new_probs > 0.5, new_mask)
    assert mask.sum() == (probs > 0.5).sum()  # inputs untouched


def test_later_click_wins_and_no_change_without_violation() -> None:
    probs = _probs()
    mask = probs > 0.5
    same, same_probs, changed = honour_clicks(mask, probs, [Click(10, 10)])
    assert changed == 0 and same is mask and same_probs is probs
    clicks = [Click(30, 38), Click(30, 38, "negative")]
    new_mask, _, _ = honour_clicks(mask, probs, clicks, radius=1)
    assert not new_mask[38, 30]


def _sample() -> Sample:
    image = np.zeros((40, 60, 3), np.uint8)
    gt = np.zeros((40, 60), np.int8)
    gt[5:20, 5:25] = 1
    gt[5:15, 30:45] = 1  # a second part the engine never finds
    return Sample("s", image, gt)


@pytest.mark.parametrize("honour", [True, False])
def test_evaluator_counts_violations(honour: bool) -> None:
    predictor = finecut.Predictor(FixedEngine(_probs()), honour_clicks=honour)
    config = EvalConfig(max_clicks=4, honour_clicks=honour)
    result = evaluate_sample(predictor, _sample(), config)
    summary = summarize([result], config)
    if honour:
        assert summary["click_violations"] == 0
    else:
        assert summary["click_violations"] > 0
    assert result.extra["violations"] == summary["click_violations"]


def test_predictor_rule_on_by_default_and_reported_in_state() -> None:
    predictor = finecut.Predictor(FixedEngine(_probs()))
    predictor.set_image(np.zeros((40, 60, 3), np.uint8))
    pred = predictor.predict(clicks=[Click(50, 5)])
    assert pred.mask[5, 50] and pred.state["honoured_pixels"] > 0 and pred.probs[5, 50] == 1.0
    raw = finecut.Predictor(FixedEngine(_probs()), honour_clicks=False)
    raw.set_image(np.zeros((40, 60, 3), np.uint8))
    assert not raw.predict(clicks=[Click(50, 5)]).mask[5, 50]


def test_raw_runs_are_labelled_in_reports() -> None:
    from finecut.evaluation.report import run_label

    config = EvalConfig(max_clicks=2, honour_clicks=False)
    predictor = finecut.Predictor(FixedEngine(_probs()), honour_clicks=False)
    summary = {"model": "fixed", **summarize([evaluate_sample(predictor, _sample(), config)], config)}
    assert run_label(summary) == "fixed (raw masks)" and summary["honour_clicks"] is False


def test_close_clicks_of_different_kinds_are_both_honoured() -> None:
    probs = np.zeros((40, 60), np.float32)
    clicks = [Click(30, 20), Click(32, 20, "negative")]  # 2 px apart: the negative's disk covers the positive
    new_mask, new_probs, _ = honour_clicks(probs > 0.5, probs, clicks, radius=3)
    assert click_violations(new_mask, clicks) == 0 and new_mask[20, 30] and not new_mask[20, 32]
    assert np.array_equal(new_probs > 0.5, new_mask)
