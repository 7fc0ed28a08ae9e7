"""Model cards: rendered from a tiny trained checkpoint and fake evaluation summaries; the ``finecut card`` command."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from safetensors.torch import load_file

from finecut.cli import main as cli_main
from finecut.errors import FinecutError
from finecut.models.checkpoint import save_checkpoint
from finecut.models.registry import build_model
from finecut.training.card import find_summaries, parameter_count, write_model_card
from finecut.training.config import TrainConfig
from finecut.training.trainer import train

TINY_MODEL = {"arch": "focalclick", "head_channels": 16, "refiner_channels": 8}


def _make_folder(root: Path, count: int = 4, size: int = 80) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        img = np.full((size, size, 3), (40, 60, 200), np.uint8)
        mask = np.zeros((size, size), np.uint8)
        cv2.circle(mask, (int(rng.integers(25, 55)), int(rng.integers(25, 55))), int(rng.integers(10, 20)), 255, -1)
        img[mask > 0] = (220, 40, 30)
        cv2.imwrite(str(root / "images" / f"im{i}.png"), img)
        cv2.imwrite(str(root / "masks" / f"im{i}.png"), mask)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A focalclick checkpoint after one real training step (``run/last.json``)."""
    tmp = tmp_path_factory.mktemp("card")
    folder = _make_folder(tmp / "data")
    cfg = TrainConfig.from_dict({
        "run_dir": str(tmp / "tiny-run"), "model": TINY_MODEL, "pretrained": "none",
        "data": {"sources": [str(folder)], "weights": [2.0], "bank": str(tmp / "bank.npz"), "max_side": 80,
                 "val_fraction": 0.25, "synthetic_thin": 0.25},
        "steps": 1, "batch_size": 2, "size": 64, "refiner_size": 32, "warmup_steps": 1, "threads": 1,
        "log_every": 1, "checkpoint_every": 1, "val_every": 1, "val_objects": 1, "val_clicks": 2,
    })
    return train(cfg, progress=False) / "last.json"


def _summary(root: Path, run: str, model: str, dataset: str, noc85: float) -> Path:
    folder = root / run
    folder.mkdir(parents=True)
    doc = {"model": model, "dataset": dataset, "num_samples": 10, "noc": {"85": noc85, "90": noc85 + 1.5},
           "nof": {"85": 1, "90": 3}, "miou": [0.5 + 0.02 * k for k in range(20)], "seconds_per_click": 0.0421}
    (folder / "summary.json").write_text(json.dumps(doc))
    return folder / "summary.json"


def _row(text: str, first_cell: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r}")


def test_card_of_trained_checkpoint_with_evaluations(trained: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    _summary(results, "last-GrabCut", "last", "GrabCut", 3.25)
    _summary(results, "nested/tiny-Berkeley", str(trained.with_suffix("")), "Berkeley", 5.0)
    _summary(results, "grabcut-GrabCut", "grabcut", "GrabCut", 9.0)  # another model: left out
    out = write_model_card(trained, tmp_path / "card" / "MODEL.md", results)
    text = out.read_text()

    net = build_model(TINY_MODEL)
    expected = sum(p.numel() for p in net.parameters())
    assert f"Parameters: {expected:,} " in text
    assert parameter_count(trained.with_suffix(".safetensors"), TINY_MODEL) == expected
    assert text.startswith("# Model card: tiny-run")
    assert "`focalclick`, backbone" not in text  # the tiny config leaves the backbone at its default
    assert _row(text, "steps")[1] == "1 of 1 configured"
    assert _row(text, "samples seen")[1] == "2"
    assert _row(text, "processes")[1] == "1"
    assert _row(text, "synthetic fraction")[1] == "25 %"
    assert _row(text, "initialisation")[1] == "`none`"
    source = _row(text, str(trained.parents[1] / "data"))
    assert source[1:] == ["2.00", "100 %"]
    assert "val_miou@1" in text and "No validation scores" not in text

    grabcut = _row(text, "GrabCut")
    assert grabcut[:6] == ["GrabCut", "standard", "10", "3.25", "4.75", "3"]
    assert grabcut[6:10] == ["50.0", "58.0", "68.0", "0.042"]
    assert grabcut[10] == "`last-GrabCut`"
    assert _row(text, "Berkeley")[3] == "5.00" and "`nested/tiny-Berkeley`" in text
    assert "9.00" not in text  # the grabcut engine's summary is not this model's
    assert "Inference options" not in text  # these runs recorded no config.json


def test_card_names_the_inference_options_of_the_runs(trained: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    for run, dataset, rule in [("a", "GrabCut", "paper"), ("b", "Berkeley", "paper"), ("c", "DAVIS", "detached")]:
        folder = _summary(results, run, "last", dataset, 3.0).parent
        config = {"model": {"name": "last", "config": {"pipeline": {"negative_rule": rule, "threshold": 0.5}}}}
        (folder / "config.json").write_text(json.dumps(config))
    text = write_model_card(trained, tmp_path / "card.md", results).read_text()
    assert "Inference options differ between these runs:" in text
    assert '* `{"negative_rule": "paper", "threshold": 0.5}`: `a`, `b`' in text
    assert '* `{"negative_rule": "detached", "threshold": 0.5}`: `c`' in text
    (results / "c" / "config.json").unlink()
    text = write_model_card(trained, tmp_path / "card.md", results).read_text()
    assert 'Inference options of these runs: `{"negative_rule": "paper", "threshold": 0.5}`' in text


def test_card_without_training_record_or_results(tmp_path: Path) -> None:
    net = build_model(TINY_MODEL)
    json_path, weights_path = save_checkpoint(tmp_path / "bare", net, TINY_MODEL)
    out = write_model_card(weights_path, tmp_path / "bare.md")  # the .safetensors name works too
    text = out.read_text()
    stored = sum(t.numel() for t in load_file(str(weights_path)).values())
    params = sum(p.numel() for p in net.parameters())
    assert stored > params  # BatchNorm buffers are stored but are not parameters
    assert f"Parameters: {params:,} " in text and f"{stored:,} values" in text
    assert "No training record" in text and "No validation scores" in text and "No results folder given" in text
    empty = tmp_path / "empty-results"
    empty.mkdir()
    text = write_model_card(json_path, tmp_path / "bare2.md", empty, model_names=["x"]).read_text()
    assert "No evaluation summary" in text


def test_card_says_why_a_run_without_in_training_validation_has_no_scores(tmp_path: Path) -> None:
    record = {"config": {"val_every": 0, "steps": 10}, "step": 10, "samples_seen": 80, "train_seconds": 12.0}
    json_path, _ = save_checkpoint(tmp_path / "noval", build_model(TINY_MODEL), TINY_MODEL, {"training": record})
    text = write_model_card(json_path, tmp_path / "noval.md").read_text()
    section = text.split("## Validation", 1)[1].split("\n## ", 1)[0]
    assert "validation was off for this run (`val_every = 0`)" in section and "No validation scores" not in section


def test_card_names_the_crop_schedule(tmp_path: Path) -> None:
    record = {"config": {"size": 320, "small_size": 224, "full_size_from": 100, "small_every": 2, "steps": 10},
              "step": 10, "samples_seen": 80, "train_seconds": 12.0}
    json_path, _ = save_checkpoint(tmp_path / "sched", build_model(TINY_MODEL), TINY_MODEL, {"training": record})
    text = write_model_card(json_path, tmp_path / "sched.md").read_text()
    assert "320² (hi factor –); 224² until step 100, then one step in 2" in text


def test_regenerating_a_card_keeps_its_hand_written_notes(tmp_path: Path) -> None:
    json_path, _ = save_checkpoint(tmp_path / "ck", build_model(TINY_MODEL), TINY_MODEL)
    card = write_model_card(json_path, tmp_path / "ck.md")
    assert "## Notes" not in card.read_text()
    notes = "## Notes\n\n* Why it was shipped: held-out 1.81 / 2.90.\n\n### A sub-heading stays too\n"
    card.write_text(card.read_text().replace("No training record", "STALE") + "\n" + notes)
    text = write_model_card(json_path, card).read_text()
    assert text.endswith(notes) and text.count("## Notes") == 1
    assert "STALE" not in text and "No training record" in text  # the generated part is rendered afresh
    assert write_model_card(json_path, card).read_text() == text  # stable across reruns
    card.write_text(card.read_text().replace("## Notes\n", "## Notes (written by hand)\n"))
    renamed = "## Notes (written by hand)" + notes[len("## Notes"):]
    assert write_model_card(json_path, card).read_text().endswith(renamed)
    other = tmp_path / "README.md"
    other.write_text("# Someone's notes\n")
    with pytest.raises(FinecutError, match="is not a model card"):
        write_model_card(json_path, other)
    assert other.read_text() == "# Someone's notes\n"


def test_extra_model_names_and_bad_inputs(tmp_path: Path) -> None:
    net = build_model(TINY_MODEL)
    json_path, weights_path = save_checkpoint(tmp_path / "ck" / "last", net, TINY_MODEL)
    results = tmp_path / "results"
    _summary(results, "renamed-GrabCut", "lite0-step1800", "GrabCut", 4.06)
    assert find_summaries(results, {"last"}) == []
    assert len(find_summaries(results, {"lite0-step1800"})) == 1
    text = write_model_card(json_path, tmp_path / "c.md", results, model_names=["lite0-step1800"]).read_text()
    assert _row(text, "GrabCut")[3] == "4.06"

    with pytest.raises(FinecutError, match="results folder not found"):
        write_model_card(json_path, tmp_path / "c.md", tmp_path / "missing")
    with pytest.raises(FinecutError, match="checkpoint config not found"):
        write_model_card(tmp_path / "nope.json", tmp_path / "c.md")
    (results / "broken").mkdir()
    (results / "broken" / "summary.json").write_text("{not json")
    with pytest.raises(FinecutError, match=r"broken/summary.json"):
        write_model_card(json_path, tmp_path / "c.md", results)
    weights_path.write_bytes(b"garbage")
    with pytest.raises(FinecutError, match="corrupt checkpoint weights"):
        write_model_card(json_path, tmp_path / "c.md")


def test_card_command(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    _summary(results, "last-DAVIS", "last", "DAVIS", 7.5)
    out = tmp_path / "card.md"
    assert cli_main(["card", str(trained), "--out", str(out), "--results", str(results)]) == 0
    assert str(out) in capsys.readouterr().out
    assert _row(out.read_text(), "DAVIS")[3] == "7.50"


def test_card_of_the_shipped_ntclick_names_the_ecp_warm_start_and_binary_term(tmp_path: Path) -> None:
    shipped = Path(__file__).parents[1] / "src" / "finecut" / "weights" / "ntclick.json"
    text = write_model_card(shipped, tmp_path / "ntclick.md").read_text()
    assert "### ECP" in text and "### HRR" in text
    # the ECP's last run is a warm start from the model before ("ntclick" then: the row says which checkpoint that
    # was, its run history's last row); that history names the first run's start
    assert ("all weights from `ntclick` (warm start; at the time `ntclick ECP of 2026-12-03"
            in _row(text, "initialisation")[1])
    assert _row(text, "ECP loss")[1].startswith("3-class cross-entropy + 1.00 × binary")
    ecp = text[text.index("### ECP"):text.index("### HRR")]
    assert "#### Run history" in ecp and "from the segmentor of focalclick-lite0-whole5" in ecp
    assert "#### Run history" in text[text.index("### HRR"):]  # the HRR's earlier runs as well
