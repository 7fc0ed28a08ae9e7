"""The training benchmarks' own arithmetic (benchmarks/train_throughput.py, benchmarks/train_budget.py): median of
repeated runs, the whole-schedule rate, re-rendering a saved run, the budget plan and the configs it writes."""

from __future__ import annotations

import importlib.util
import json
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from finecut.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_median_trial_and_recipe_rate() -> None:
    tt = script("train_throughput")
    trials = [{"samples_per_s": 9.0}, {"error": "exit 1"}, {"samples_per_s": 7.0}, {"samples_per_s": 8.0}]
    assert tt.median_trial(trials) == {"samples_per_s": 8.0, "all_samples_per_s": [9.0, 7.0, 8.0]}
    assert tt.median_trial([{"error": "x"}]) == {"error": "x"}
    cfg = TrainConfig.from_file(ROOT / "configs" / "focalclick-lite0-v4.toml")
    rows = {"new-small": {"samples_per_s": 20.0}, "new-full": {"samples_per_s": 10.0}}
    share = cfg.focalclick.full_size_from / cfg.steps
    # total samples / total time: per sample, share/20 + (1 - share)/10 seconds
    assert tt.recipe_rate(rows, cfg) == pytest.approx(1 / (share / 20 + (1 - share) / 10))
    assert tt.recipe_rate(rows, cfg, 1.0) == pytest.approx(20.0)
    assert tt.recipe_rate({"new-small": {"error": "x"}}, cfg) is None


def test_default_settings_have_each_lever_once() -> None:
    tt = script("train_throughput")
    settings = tt.default_settings(224, 128, 8, 96, 56, 0)
    names = [s.name for s in settings]
    assert len(names) == len(set(names)) and "small128-refiner56" in names and "refiner56" in names
    by_name = {s.name: s for s in settings}
    assert by_name["new-small"].size == 128 and by_name["new-small"].refiner == 56
    assert by_name["today"].refiner == 0 and by_name["today"].size == 224
    assert "refiner crop 56" in by_name["new-small"].describe()


def test_throughput_table_renders_again_from_its_json(tmp_path: Path) -> None:
    tt = script("train_throughput")
    setting = {"name": "today", "processes": 2, "threads": 1, "size": 224, "iterative": True, "prefetch": 0,
               "channels_last": True, "compile": False, "batch": 0, "refiner": 0}
    small = {**setting, "name": "new-small", "size": 128, "refiner": 56}
    full = {**setting, "name": "new-full"}
    result = {"seconds_per_step": 1.0, "load_start": 1.0}
    saved = {"machine": {"host": "h", "cpu": "c", "cores": 2, "python": "3.11", "torch": "t", "date": "d"},
             "runs": [{**setting, **result, "samples_per_s": 8.0, "all_samples_per_s": [8.0, 7.5]},
                      {**small, **result, "samples_per_s": 24.0}, {**full, **result, "samples_per_s": 8.0}],
             "load_before": [1, 1, 1], "load_after": [2, 2, 2], "command": "train_throughput.py --repeat 2",
             "args": {"steps": 5, "warmup": 1, "repeat": 2, "config": "configs/focalclick-lite0-v4.toml"}}
    (tmp_path / "saved.json").write_text(json.dumps(saved))
    out = tmp_path / "table.md"
    assert tt.main(["--config", "configs/focalclick-lite0-v4.toml", "--render", str(tmp_path / "saved.json"),
                    "--out", str(out)]) == 0
    text = out.read_text()
    assert "| today |" in text and "8.00, 7.50" in text and "Every setting ran 2 times" in text
    assert "`train_throughput.py --repeat 2`" in text and "| small-stage share |" in text
    assert "**2.73x** today's recipe" in text  # 95 % at 3x, 5 % at 1x: 1 / (0.95/3 + 0.05) = 2.73


def test_budget_plan_fills_the_budget_and_configs_differ_only_in_the_levers(tmp_path: Path) -> None:
    tb = script("train_budget")
    steps, full_from = tb.plan_steps(10, 0.9, 16, small_rate=8.0, full_rate=4.0, small_share=0.75)
    seconds = 16 * (0.75 * steps / 8.0 + 0.25 * steps / 4.0)
    assert seconds <= 10 * 60 * 0.9 < seconds + 16 * 0.25 and full_from == round(0.75 * steps)
    assert tb.plan_steps(10, 0.9, 16, 4.0, 4.0, 0.0) == (int(540 * 4 / 16), 0)

    raw = tomllib.loads((ROOT / "configs" / "focalclick-lite0-v4.toml").read_text())
    path = tb.budget_config(raw, "new", tmp_path, 100, 95, False, 16, 5e-4)
    written = tomllib.loads(path.read_text())
    assert written["init_checkpoint"] == "" and written["pretrained"] == "imagenet" and written["lr"] == 5e-4
    assert written["steps"] == 100 and written["batch_size"] == 16 and written["threads"] == 1
    assert written["focalclick"]["full_size_from"] == 95 and written["focalclick"]["small_refiner_size"] == 56
    assert written["model"] == raw["model"] and written["data"] == raw["data"]
    assert raw["init_checkpoint"] == "focalclick-lite0-v2"  # the caller's dict is left as it was
    TrainConfig.from_file(path).check()  # a config the trainer accepts


def test_backbone_costs_are_read_by_name(tmp_path: Path) -> None:
    tb = script("train_budget")
    cost = tmp_path / "backbone_cost.json"
    cost.write_text(json.dumps({"backbones": [
        {"name": "efficientnet_lite0", "train_step_s": 0.7}, {"name": "efficientnet_lite2", "train_step_s": 1.05}]}))
    step_s = tb.backbone_step_seconds(cost)
    assert step_s == {"efficientnet_lite0": 0.7, "efficientnet_lite2": 1.05}
    # the larger backbone gets proportionally fewer steps for the same budget
    lite0 = tb.plan_steps(60, 0.9, 16, 8.0, 4.0, 0.8)[0]
    lite2 = tb.plan_steps(60, 0.9, 16, 8.0 / 1.5, 4.0 / 1.5, 0.8)[0]
    assert abs(lite2 / lite0 - 1 / 1.5) < 0.01


def test_small_stage_rate_is_carried_to_the_configs_crop_and_summaries_are_found_by_source(tmp_path: Path) -> None:
    tb = script("train_budget")
    # measured at 128² crops; a config whose small stage is 160² gets (128/160)² of that rate
    assert abs(tb.at_size(25.6, 128, 160) - 16.384) < 1e-9 and tb.at_size(9.0, 224, 224) == 9.0
    saved = tmp_path / "rates.json"
    saved.write_text(json.dumps({"runs": [{"name": "new-small", "size": 128, "samples_per_s": 25.6},
                                          {"name": "new-full", "size": 224, "samples_per_s": 9.0}]}))
    assert tb.sizes_from(saved) == {"new-small": 128, "new-full": 224}
    # finecut train --validate names its folder after the checkpoint and the held-out sources
    folder = tmp_path / "validation" / "last-COCO128+ECSSD"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"noc": {"90": 8.0}}))
    assert tb.summary_of(tmp_path, ["COCO128", "ECSSD"])["noc"]["90"] == 8.0
    with pytest.raises(SystemExit, match="no validation summary"):
        tb.summary_of(tmp_path, None)


def test_click_response_counts_where_clicks_land_and_what_they_change() -> None:
    """benchmarks/ntclick_click_response.py: per later click, the FBU class and HRR scope from the prediction's
    state, the pixels changed and the errors fixed within the radius, and repeats of an earlier click."""
    import numpy as np

    from finecut.datasets.base import Sample
    from finecut.predictor import Prediction
    from finecut.prompts import Click, ClickKind, Prompts

    cr = script("ntclick_click_response")
    gt = np.zeros((40, 40), np.int8)
    gt[20, 5:35] = 1  # a one-pixel line
    first = np.zeros((40, 40), bool)
    first[20, 5:15] = True  # the first click found a third of it
    second = first.copy()
    second[20, 15:20] = True  # the second click adds 5 pixels

    def prediction(mask: np.ndarray, label: str, by_hrr: bool) -> Prediction:
        return Prediction(mask=mask, probs=mask.astype(np.float32), prompts=Prompts(),
                          state={"click_label": label, "click_by_hrr": by_hrr})

    class Recorded:
        steps = [([Click(10, 20, ClickKind.TOLERANT)], prediction(first, "uncertain", True)),
                 ([Click(10, 20, ClickKind.TOLERANT), Click(25, 21, ClickKind.TOLERANT)],
                  prediction(second, "uncertain", True)),
                 ([Click(10, 20, ClickKind.TOLERANT), Click(25, 21, ClickKind.TOLERANT),
                   Click(26, 20, ClickKind.TOLERANT)], prediction(second, "background", False))]

    stats = cr.ClickStats()
    cr.measure(Recorded(), Sample("line", np.zeros((40, 40, 3), np.uint8), gt), [0.33, 0.5, 0.5], 20.0, 10.0, stats)
    assert stats.clicks == 2 and stats.labels == {"uncertain": 1, "background": 1} and stats.by_hrr == 1
    assert stats.changed == [5, 0] and stats.repeats == 1  # the third click is within 10 px of the second
    # errors within 20 px: click 2 had the 20 missed pixels in reach and fixed 5; click 3 had 15 and fixed none
    assert (stats.errors_before, stats.errors_after) == (35, 30)
    assert stats.iou_gain == pytest.approx([17.0, 0.0])
    line = cr.row("m", "set", stats)
    assert line.startswith("| m | set | 2 | 50 | 50 | 0 | 50 |")
