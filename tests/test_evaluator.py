"""The evaluation loop and runner on tiny synthetic datasets with small test-only engines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from doubles import ConstantEngine, DiskEngine

from finecut.datasets.base import Dataset, Sample, SampleRef
from finecut.engines.base import Engine, EngineOutput
from finecut.errors import FinecutError
from finecut.evaluation import (
    EvalConfig,
    InitMaskFolder,
    evaluate_sample,
    load_summary,
    next_click,
    results_markdown,
    run_evaluation,
    summarize,
    write_results_table,
)
from finecut.evaluation.loop import SampleResult
from finecut.io import write_image, write_mask
from finecut.predictor import Predictor

RADIUS = 4


def paint_disk(radius: int = RADIUS, **options: Any) -> DiskEngine:
    """The shared test engine painting disks (or squares) of ``radius`` around clicks in order: positive 1, else 0."""
    return DiskEngine(radius, rule="paint", **options)


def _disk_sample(name: str = "disk", size: int = 24, tag: int = 0) -> Sample:
    """An object that is exactly the engine's disk around the object's centre: IoU 1 after one click."""
    ys, xs = np.mgrid[:size, :size]
    c = size // 2
    gt = ((xs - c) ** 2 + (ys - c) ** 2 <= RADIUS**2).astype(np.int8)
    image = np.full((size, size, 3), tag, dtype=np.uint8)
    return Sample(name, image, gt)


def _bar_sample(name: str = "bar", tag: int = 0) -> Sample:
    """A 9 x 36 bar: 9 x 9 squares (the square engine) tile it click by click, IoU 0.25, 0.5, 0.75, 1."""
    gt = np.zeros((20, 40), dtype=np.int8)
    gt[6:15, 2:38] = 1
    image = np.full((20, 40, 3), tag, dtype=np.uint8)
    return Sample(name, image, gt)


def _line_sample(name: str = "line", tag: int = 0) -> Sample:
    """A one-pixel line the disk engine can never fit: IoU stays low, NoC = 20."""
    gt = np.zeros((20, 40), dtype=np.int8)
    gt[10, 2:38] = 1
    image = np.full((20, 40, 3), tag, dtype=np.uint8)
    return Sample(name, image, gt)


def _file_dataset(tmp_path: Path, samples: list[Sample], name: str = "tiny") -> Dataset:
    """A real lazily loaded Dataset: images written as PNGs, ground truths returned from memory."""
    refs = []
    for s in samples:
        path = tmp_path / "images" / f"{s.name}.png"
        write_image(path, s.image)
        gt = s.gt.copy()
        refs.append(SampleRef(s.name, path, load_gt=lambda gt=gt: gt))
    return Dataset(name, refs, root=tmp_path)


# ---------------------------------------------------------------- the per-sample loop


def test_first_click_at_object_centre_reaches_iou_one() -> None:
    engine = paint_disk()
    result = evaluate_sample(Predictor(engine), _disk_sample(), EvalConfig())
    assert result.clicks[0] == (12, 12, "pos")
    assert result.ious[0] == 1.0
    assert len(result.ious) == 20 and len(result.clicks) == 20
    assert result.noc == {"85": 1, "90": 1, "95": 1}
    assert engine.encode_calls == 1
    assert result.seconds >= result.set_image_seconds >= 0


def test_loop_passes_all_clicks_and_previous_prediction() -> None:
    engine = paint_disk()
    evaluate_sample(Predictor(engine), _bar_sample(), EvalConfig(max_clicks=5))
    assert [c["clicks"] for c in engine.calls] == [1, 2, 3, 4, 5]
    assert [c["previous_clicks"] for c in engine.calls] == [None, 1, 2, 3, 4]
    assert all(c["prior"] is None for c in engine.calls)


def test_clicks_follow_next_click_on_each_prediction() -> None:
    engine = paint_disk()
    sample = _bar_sample()
    result = evaluate_sample(Predictor(engine), sample, EvalConfig(max_clicks=6))
    # replay: each click is next_click on the mask the engine produced from the clicks before it
    predictor = Predictor(paint_disk())
    predictor.set_image(sample.image)
    pred = np.zeros(sample.gt.shape, dtype=bool)
    clicks = []
    for expected in result.clicks:
        click = next_click(sample.gt, pred, clicks)
        assert (int(click.x), int(click.y), "pos" if click.is_positive else "neg") == expected
        clicks.append(click)
        pred = predictor.predict(clicks=clicks, threshold=0.49).mask


def test_sample_that_never_reaches_threshold_scores_max_clicks() -> None:
    result = evaluate_sample(Predictor(paint_disk()), _line_sample(), EvalConfig())
    assert max(result.ious) < 0.85
    assert result.noc == {"85": 20, "90": 20, "95": 20}
    summary = summarize([result], EvalConfig())
    assert summary["nof"] == {"85": 1, "90": 1, "95": 1}


def test_square_engine_tiles_the_bar() -> None:
    result = evaluate_sample(Predictor(paint_disk(square=True)), _bar_sample(), EvalConfig())
    assert result.ious[:4] == [0.25, 0.5, 0.75, 1.0]
    assert result.clicks[:4] == [(6, 10, "pos"), (15, 10, "pos"), (24, 10, "pos"),
                                 (33, 10, "pos")]
    assert result.noc == {"85": 4, "90": 4, "95": 4}


def test_stop_at_target_gives_same_clicks_as_full_run() -> None:
    full = evaluate_sample(Predictor(paint_disk(square=True)), _bar_sample(), EvalConfig(max_clicks=8))
    short = evaluate_sample(Predictor(paint_disk(square=True)), _bar_sample(),
                            EvalConfig(max_clicks=8, target_iou=0.7))
    assert len(short.ious) == 3
    assert short.clicks == full.clicks[:3]
    assert short.ious == full.ious[:3]
    # NoC85 and NoC90 lie above the target the run stopped at: unknown, not 8
    assert short.noc == {"85": None, "90": None, "95": None}
    assert full.noc == {"85": 4, "90": 4, "95": 4}
    summary = summarize([short], EvalConfig(max_clicks=8, target_iou=0.7, noc_thresholds=(0.5, 0.9)))
    assert summary["noc"] == {"50": None, "90": None}  # the short result was scored with other thresholds
    short2 = evaluate_sample(Predictor(paint_disk(square=True)), _bar_sample(),
                             EvalConfig(max_clicks=8, target_iou=0.7, noc_thresholds=(0.5, 0.9)))
    assert short2.noc == {"50": 2, "90": None}


def test_stop_at_target_reports_noc_but_not_miou() -> None:
    config = EvalConfig(target_iou=0.9)
    results = [evaluate_sample(Predictor(paint_disk()), s, config) for s in (_disk_sample(), _line_sample())]
    assert len(results[0].ious) == 1 and len(results[1].ious) == 20
    summary = summarize(results, config)
    assert summary["miou"] is None
    assert summary["noc"]["90"] == pytest.approx((1 + 20) / 2)
    assert summary["nof"]["90"] == 1


def test_threshold_is_applied_to_probabilities() -> None:
    sample = _disk_sample()
    raw = Predictor(ConstantEngine(0.495), honour_clicks=False)  # the engine's own probabilities, no click rule
    low = evaluate_sample(raw, sample, EvalConfig(max_clicks=1))
    high = evaluate_sample(raw, sample, EvalConfig(max_clicks=1, threshold=0.5))
    object_fraction = float((sample.gt == 1).mean())
    assert low.ious[0] == pytest.approx(object_fraction, abs=1e-6)  # everything predicted at the default 0.49
    assert high.ious[0] == 0.0  # nothing predicted at 0.5


def test_mask_correction_starts_from_initial_mask_and_passes_it_as_prior() -> None:
    sample = _bar_sample()
    init = sample.gt == 1
    init[:, 20:] = False  # the right part of the bar is missing
    engine = paint_disk()
    result = evaluate_sample(Predictor(engine), sample, EvalConfig(max_clicks=3), init_mask=init)
    assert result.init_iou == pytest.approx(init.sum() / (sample.gt == 1).sum(), abs=1e-6)
    x, y, kind = result.clicks[0]
    assert kind == "pos" and x >= 20 and 9 <= y <= 11  # the first click fixes the missing part
    assert all(np.array_equal(c["prior"], init) for c in engine.calls)
    assert result.ious[0] > result.init_iou


def test_region_limits_scoring_and_click_simulation() -> None:
    gt = np.zeros((20, 40), dtype=np.int8)
    gt[4:16, 24:36] = 1  # a big object outside the region ...
    gt[8:11, 4:7] = 1  # ... and a small one inside
    region = np.zeros((20, 40), dtype=bool)
    region[:, :20] = True
    sample = Sample("roi", np.zeros((20, 40, 3), dtype=np.uint8), gt, region=region)
    result = evaluate_sample(Predictor(paint_disk(radius=2)), sample, EvalConfig(max_clicks=4))
    assert all(x < 20 for x, _, _ in result.clicks)
    assert result.clicks[0] == (5, 9, "pos")
    assert result.extra["region"] is True and result.extra["violations"] >= 0
    # scoring inside the region: disk r=2 at (5,9) covers the 3x3 object plus 4 arm pixels -> 9/13
    assert result.ious[0] == pytest.approx(9 / 13, abs=1e-6)


def test_sample_result_round_trips_through_json() -> None:
    result = evaluate_sample(Predictor(paint_disk()), _bar_sample(), EvalConfig(max_clicks=4))
    again = SampleResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again.ious == result.ious and again.clicks == result.clicks and again.noc == result.noc
    with pytest.raises(FinecutError, match="malformed"):
        SampleResult.from_json({"name": "x"})


def test_config_rejects_bad_values() -> None:
    with pytest.raises(FinecutError, match="threshold"):
        EvalConfig(threshold=1.5)
    with pytest.raises(FinecutError, match="max clicks"):
        EvalConfig(max_clicks=0)
    with pytest.raises(FinecutError, match="target IoU"):
        EvalConfig(target_iou=0.0)


# ---------------------------------------------------------------- the runner and its files


def test_run_writes_all_report_files(tmp_path: Path) -> None:
    samples = [_disk_sample("a"), _bar_sample("b"), _line_sample("c")]
    out = tmp_path / "run"
    run = run_evaluation(paint_disk(), samples, out, EvalConfig(seed=7), dataset_name="Synth", progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "miou.png", "samples.jsonl", "summary.json", "summary.md"
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == {"name": "disk", "config": {"name": "disk", "radius": RADIUS, "rule": "paint"}}
    assert config["dataset"]["name"] == "Synth" and config["dataset"]["count"] == 3
    assert config["protocol"]["threshold"] == 0.49 and config["protocol"]["max_clicks"] == 20
    assert config["protocol"]["seed"] == 7 and config["protocol"]["mask_correction"] is False
    assert config["finecut_version"] and config["date"] and config["host"]["cpu"]
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [line["name"] for line in lines] == ["a", "b", "c"]
    assert all(len(line["ious"]) == 20 and len(line["clicks"]) == 20 for line in lines)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_samples"] == 3 and summary["model"] == "disk" and summary["dataset"] == "Synth"
    nocs90 = [line["noc"]["90"] for line in lines]
    assert summary["noc"]["90"] == pytest.approx(np.mean(nocs90))
    assert summary["nof"]["90"] == sum(n == 20 for n in nocs90) >= 1
    assert len(summary["miou"]) == 20
    assert summary["miou"][0] == pytest.approx(np.mean([line["ious"][0] for line in lines]))
    total_clicks = sum(len(line["ious"]) for line in lines)
    assert summary["seconds_per_click"] == pytest.approx(sum(line["seconds"] for line in lines) / total_clicks, rel=1e-3)
    md = (out / "summary.md").read_text()
    assert "| samples | NoC85 | NoC90 | NoC95 |" in md and "disk on Synth" in md
    png = cv2.imread(str(out / "miou.png"))
    assert png is not None and png.shape[2] == 3
    assert run.summary["noc"] == summary["noc"]
    assert load_summary(out)["num_samples"] == 3


def test_run_refuses_non_empty_folder_then_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_evaluation(paint_disk(), [_disk_sample()], out, EvalConfig(max_clicks=2), progress=False)
    with pytest.raises(FinecutError, match="not empty.*--resume.*--overwrite"):
        run_evaluation(paint_disk(), [_disk_sample()], out, EvalConfig(max_clicks=2), progress=False)
    (out / "notes.txt").write_text("mine")
    run_evaluation(paint_disk(), [_bar_sample()], out, EvalConfig(max_clicks=2), overwrite=True, progress=False)
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert [json.loads(line)["name"] for line in lines] == ["bar"]
    assert (out / "notes.txt").read_text() == "mine"  # files the run did not make are left alone


def test_resume_skips_done_samples_and_drops_a_truncated_line(tmp_path: Path) -> None:
    samples = [_disk_sample("s0", tag=0), _bar_sample("s1", tag=1), _line_sample("s2", tag=2),
               _disk_sample("s3", tag=3)]
    dataset = _file_dataset(tmp_path / "data", samples)
    out = tmp_path / "run"
    config = EvalConfig(max_clicks=5)
    with pytest.raises(FinecutError, match="refuses image 2"):
        run_evaluation(paint_disk(fail_on="2"), dataset, out, config, progress=False)
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert [json.loads(line)["name"] for line in lines] == ["s0", "s1"]
    with open(out / "samples.jsonl", "a") as fh:
        fh.write('{"index": 2, "name": "s2", "ious": [0.1')  # an interrupted write
    engine = paint_disk()
    run = run_evaluation(engine, dataset, out, config, resume=True, progress=False)
    assert engine.encode_calls == 2  # only s2 and s3 were evaluated
    assert [r.name for r in run.results] == ["s0", "s1", "s2", "s3"]
    names = [json.loads(line)["name"] for line in (out / "samples.jsonl").read_text().splitlines()]
    assert names == ["s0", "s1", "s2", "s3"]
    assert run.summary["num_samples"] == 4
    fresh = run_evaluation(paint_disk(), dataset, None, config, progress=False)
    assert fresh.summary["noc"] == run.summary["noc"] and fresh.summary["miou"] == run.summary["miou"]


def test_resume_refuses_a_different_configuration(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_evaluation(paint_disk(), [_disk_sample()], out, EvalConfig(max_clicks=2), progress=False)
    with pytest.raises(FinecutError, match="cannot resume.*protocol"):
        run_evaluation(paint_disk(), [_disk_sample()], out, EvalConfig(max_clicks=2, threshold=0.6), resume=True,
                       progress=False)
    with pytest.raises(FinecutError, match="cannot resume.*model"):
        run_evaluation(paint_disk(radius=3), [_disk_sample()], out, EvalConfig(max_clicks=2), resume=True,
                       progress=False)


def test_limit_evaluates_first_samples_only(tmp_path: Path) -> None:
    dataset = _file_dataset(tmp_path / "data", [_disk_sample(f"s{i}", tag=i) for i in range(4)])
    engine = paint_disk()
    run = run_evaluation(engine, dataset, None, EvalConfig(max_clicks=2, limit=2), progress=False)
    assert [r.name for r in run.results] == ["s0", "s1"] and engine.encode_calls == 2
    assert run.config["dataset"] == {"name": "tiny", "root": str(tmp_path / "data"), "count": 2, "total": 4}


def test_empty_dataset_and_duplicate_names_are_errors(tmp_path: Path) -> None:
    with pytest.raises(FinecutError, match="empty: no samples"):
        run_evaluation(paint_disk(), Dataset("empty", []), None, progress=False)
    dup = _file_dataset(tmp_path / "d", [_disk_sample("x", tag=1)])
    dup.refs.append(dup.refs[0])
    with pytest.raises(FinecutError, match="two samples are named 'x'"):
        run_evaluation(paint_disk(), dup, None, progress=False)


def test_mask_correction_from_a_folder_of_initial_masks(tmp_path: Path) -> None:
    samples = [_bar_sample("b1", tag=1), _bar_sample("b2", tag=2)]
    init = samples[0].gt == 1
    init[:, 20:] = False
    write_mask(tmp_path / "init" / "b1.png", init)
    write_mask(tmp_path / "init" / "b2.png", samples[1].gt == 1)  # already perfect
    folder = InitMaskFolder(tmp_path / "init")
    engine = paint_disk()
    run = run_evaluation(engine, samples, tmp_path / "run", EvalConfig(max_clicks=3), init_masks=folder,
                         progress=False)
    assert run.config["protocol"]["mask_correction"] is True
    assert run.results[0].init_iou < 1.0 and run.results[1].init_iou == 1.0
    assert run.summary["mask_correction"] is True
    assert run.summary["mean_init_iou"] == pytest.approx((run.results[0].init_iou + 1.0) / 2)
    assert "Mask correction" in (tmp_path / "run" / "summary.md").read_text()
    with pytest.raises(FinecutError, match="no initial mask for sample 'other'"):
        run_evaluation(paint_disk(), [_bar_sample("other")], None, init_masks=folder, progress=False)
    write_mask(tmp_path / "bad" / "b1.png", np.zeros((5, 5), dtype=bool))
    with pytest.raises(FinecutError, match=r"bad/b1.png.*shape"):
        run_evaluation(paint_disk(), [samples[0]], None, init_masks=InitMaskFolder(tmp_path / "bad"),
                       progress=False)


def test_mask_correction_without_initial_masks_is_an_error() -> None:
    with pytest.raises(FinecutError, match="mask correction needs an initial mask"):
        run_evaluation(paint_disk(), [_bar_sample()], None, EvalConfig(mask_correction=True), progress=False)


def test_region_samples_mark_the_summary() -> None:
    s = _bar_sample()
    region_sample = Sample("r", s.image, s.gt, region=np.ones(s.gt.shape, dtype=bool))
    run = run_evaluation(paint_disk(), [region_sample], None, EvalConfig(max_clicks=2), progress=False)
    assert run.summary["region"] is True


def test_results_table_merges_runs(tmp_path: Path) -> None:
    for radius in (2, 4):
        for ds, samples in (("Alpha", [_bar_sample()]), ("Beta", [_disk_sample()])):
            engine = paint_disk(radius=radius)
            run_evaluation(engine, samples, tmp_path / "runs" / f"disk{radius}-{ds}", model_name=f"disk{radius}",
                           dataset_name=ds, progress=False)
    table = write_results_table(tmp_path / "RESULTS.md", root=tmp_path / "runs")
    text = table.read_text()
    assert "## NoC90 overview" in text
    assert "| model | Alpha | Beta |" in text
    assert ("| model | samples | NoC85 | NoC90 | NoF90 | mIoU@1 | mIoU@5 | mIoU@10 | s/click | clicks not honoured "
            "| run |") in text
    assert "[disk4-Beta](runs/disk4-Beta/summary.md)" in text
    assert text.count("| disk2 |") == 2 + 1  # two dataset sections + overview row starts with "| disk2 |"
    assert (tmp_path / "miou-Alpha.png").is_file() and (tmp_path / "miou-Beta.png").is_file()
    with pytest.raises(FinecutError, match="no evaluation summaries"):
        results_markdown([])
    published = {"source_note": "from a paper", "rows": [{"model": "Paper net", "source": "Tab. 1",
                                                          "Alpha": {"85": 1.5, "90": 2.25}}]}
    (tmp_path / "published.json").write_text(json.dumps(published))
    text = write_results_table(tmp_path / "RESULTS.md", root=tmp_path / "runs").read_text()
    assert "## Published numbers for comparison" in text and "from a paper" in text
    assert "| Paper net | 1.50 | 2.25 | – | – | Tab. 1 |" in text
    assert "cannot be reproduced" not in text
    published["not_reproduced"] = [{"what": "Tab. 9", "why": "its set is not here"}]
    (tmp_path / "published.json").write_text(json.dumps(published))
    text = write_results_table(tmp_path / "RESULTS.md", root=tmp_path / "runs").read_text()
    assert "Published results that cannot be reproduced here:\n\n* **Tab. 9**: its set is not here" in text
    notes = tmp_path / "NOTES.md"  # a file that is not a generated table is never overwritten
    notes.write_text("# My notes\n")
    with pytest.raises(FinecutError, match="not a results table"):
        write_results_table(notes, root=tmp_path / "runs")
    assert notes.read_text() == "# My notes\n"


class FixedIoUEngine(Engine):
    """Predicts the first ``k`` object pixels (row-major) so that the IoU is exactly ``k / object_size``."""

    name = "fixed"

    def __init__(self, gt: np.ndarray, k: int) -> None:
        self.gt, self.k = gt, k

    def predict(self, image, features, prompts, previous) -> EngineOutput:
        flat = (self.gt == 1).ravel().copy()
        flat[np.flatnonzero(flat)[self.k:]] = False
        return EngineOutput(probs=flat.reshape(self.gt.shape).astype(np.float32))


def test_noc_uses_exact_iou_not_the_rounded_record() -> None:
    # IoU = 1699999 / 2000000 = 0.8499995: rounds to 0.85 in the record but does not reach 0.85
    gt = np.zeros((1000, 2001), dtype=np.int8)
    gt.ravel()[:2_000_000] = 1
    sample = Sample("big", np.zeros((1000, 2001, 3), dtype=np.uint8), gt)
    result = evaluate_sample(Predictor(FixedIoUEngine(gt, 1_699_999)), sample, EvalConfig(max_clicks=1))
    assert result.ious == [0.85]  # the record is rounded ...
    result3 = evaluate_sample(Predictor(FixedIoUEngine(gt, 1_699_999)), sample,
                              EvalConfig(max_clicks=2, target_iou=0.85))
    assert len(result3.ious) == 2  # ... but the exact value does not trigger the stop at 0.85
    assert result3.noc["85"] == 2  # never reached: scores max_clicks


def test_ntclick_protocol_records_tolerant_clicks_and_is_seeded() -> None:
    line = _line_sample()
    runs = {}
    for seed in (0, 0, 1):
        config = EvalConfig(max_clicks=4, protocol="ntclick", tolerant_offset=3, seed=seed)
        result = run_evaluation(paint_disk(), [line], None, config, progress=False).results[0]
        runs.setdefault(seed, []).append(result.clicks)
    assert all(kind == "tol" for _, _, kind in runs[0][0])  # a 1-px line lies wholly in the uncertain band
    assert runs[0][0] == runs[0][1]  # same seed, same clicks
    standard = run_evaluation(paint_disk(), [line], None, EvalConfig(max_clicks=4), progress=False).results[0]
    assert all(kind != "tol" for _, _, kind in standard.clicks)
    with pytest.raises(FinecutError, match="unknown click protocol"):
        EvalConfig(protocol="other")
