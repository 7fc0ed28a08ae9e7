"""Weight averaging (``finecut train --average``): every float tensor the weighted mean, configs must match."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import finecut
from finecut.cli import main as cli_main
from finecut.models.checkpoint import load_checkpoint, save_checkpoint
from finecut.models.registry import build_model
from finecut.training.average import average_checkpoints, average_state_dicts
from helpers_training import TINY_HRR


def _saved(tmp_path: Path, name: str, seed: int, **overrides: object) -> Path:
    torch.manual_seed(seed)
    net = build_model({"arch": "ntclick_hrr", **TINY_HRR, **overrides})
    meta = {"name": name, "training": {"step": seed * 100, "history": [{"name": f"run{seed}"}]}}
    return save_checkpoint(tmp_path / name, net, net.arch_config(), meta)[0]


def test_average_is_the_weighted_mean_and_keeps_the_last_record(tmp_path: Path) -> None:
    a, b = _saved(tmp_path, "a", 1), _saved(tmp_path, "b", 2)
    out = average_checkpoints([a, b], tmp_path / "soup", weights=[1, 3])
    soup, doc = load_checkpoint(out)
    na, nb = load_checkpoint(a)[0].state_dict(), load_checkpoint(b)[0].state_dict()
    for key, value in soup.state_dict().items():
        torch.testing.assert_close(value, 0.25 * na[key] + 0.75 * nb[key])
    assert doc["name"] == "soup" and doc["training"]["step"] == 200  # the last checkpoint's record
    assert doc["training"]["weight_average"] == {"of": [str(a), str(b)], "weights": [0.25, 0.75], "steps": [100, 200]}
    assert cli_main(["train", "--average", str(a), str(b), "--average-out", str(tmp_path / "cli")]) == 0
    uniform = load_checkpoint(tmp_path / "cli.json")[0].state_dict()
    torch.testing.assert_close(uniform["head.2.weight"], (na["head.2.weight"] + nb["head.2.weight"]) / 2)
    assert json.loads((tmp_path / "cli.json").read_text())["training"]["weight_average"]["weights"] == [0.5, 0.5]


def test_average_never_overwrites_an_existing_checkpoint_unless_asked(tmp_path: Path) -> None:
    a, b = _saved(tmp_path, "a", 1), _saved(tmp_path, "b", 2)
    before = {p: p.read_bytes() for p in (tmp_path / "a.json", tmp_path / "a.safetensors")}
    with pytest.raises(finecut.FinecutError, match="already exists"):
        average_checkpoints([a, b], tmp_path / "a")  # the output is one of the inputs: refused, untouched
    assert {p: p.read_bytes() for p in before} == before
    (tmp_path / "w.safetensors").write_bytes(b"someone's weights")  # half a checkpoint is refused too
    with pytest.raises(finecut.FinecutError, match="w.safetensors: already exists"):
        average_checkpoints([a, b], tmp_path / "w")
    assert (tmp_path / "w.safetensors").read_bytes() == b"someone's weights" and not (tmp_path / "w.json").exists()
    assert cli_main(["train", "--average", str(a), str(b), "--average-out", str(tmp_path / "a")]) == 2
    assert cli_main(["train", "--average", str(a), str(b), "--average-out", str(tmp_path / "a"), "--overwrite"]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["training"]["weight_average"]["weights"] == [0.5, 0.5]


def test_a_checkpoint_name_with_a_dot_keeps_it(tmp_path: Path) -> None:
    # "avg-0.7a-0.3b" once became "avg-0.7a-0.json": the part after the last dot was taken for a file extension
    a, b = _saved(tmp_path, "a", 1), _saved(tmp_path, "b", 2)
    out = tmp_path / "avg-0.7a-0.3b"
    assert cli_main(["train", "--average", str(a), str(b), "--average-weights", "0.7", "0.3",
                     "--average-out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.glob("avg*")) == ["avg-0.7a-0.3b.json", "avg-0.7a-0.3b.safetensors"]
    for spec in (out, str(out) + ".json", str(out) + ".safetensors"):
        assert load_checkpoint(spec)[1]["training"]["weight_average"]["weights"] == [0.7, 0.3]
    engine = finecut.load_model(str(out))  # a path spec with a dot in its name resolves too
    assert engine.checkpoint["training"]["weight_average"]["weights"] == [0.7, 0.3]


def test_average_refuses_other_architectures_and_bad_weights(tmp_path: Path) -> None:
    a, deeper = _saved(tmp_path, "a", 1), _saved(tmp_path, "c", 3, depth=3)
    with pytest.raises(finecut.FinecutError, match="differs"):
        average_checkpoints([a, deeper], tmp_path / "x")
    with pytest.raises(finecut.FinecutError, match="at least two"):
        average_checkpoints([a], tmp_path / "x")
    with pytest.raises(finecut.FinecutError, match="weight"):
        average_checkpoints([a, a], tmp_path / "x", weights=[1, -1])
    with pytest.raises(finecut.FinecutError, match="weight"):
        average_checkpoints([a, a], tmp_path / "x", weights=[float("nan"), 1])
    with pytest.raises(finecut.FinecutError):
        average_checkpoints([a, tmp_path / "missing.json"], tmp_path / "x")
    (tmp_path / "corrupt.safetensors").write_bytes(b"not a checkpoint")
    (tmp_path / "corrupt.json").write_text((tmp_path / "a.json").read_text())
    with pytest.raises(finecut.FinecutError):
        average_checkpoints([a, tmp_path / "corrupt.json"], tmp_path / "x")
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(finecut.FinecutError, match="other tensors"):
        average_state_dicts([{"w": torch.ones(2)}, {"v": torch.ones(2)}], [0.5, 0.5])
    ints = average_state_dicts([{"n": torch.tensor(3)}, {"n": torch.tensor(7)}], [0.5, 0.5])
    assert ints["n"].item() == 7  # integer counters: the last checkpoint's
    assert cli_main(["train", "--average", str(a), str(a)]) == 2  # no --average-out


def test_the_shipped_average_checkpoint_was_made_by_this_tool() -> None:
    doc = json.loads((Path(finecut.__file__).parent / "weights" / "focalclick-lite0-soup56.json").read_text())
    assert doc["training"]["weight_average"]["of"][0] == "focalclick-lite0-whole5"
    assert doc["training"]["weight_average"]["weights"] == [0.5, 0.5]


def test_a_run_started_from_an_average_keeps_it_in_its_history_and_card(tmp_path: Path) -> None:
    from finecut.training.card import _history_section
    from finecut.training.history import inherited_history

    a, b = _saved(tmp_path, "a", 1), _saved(tmp_path, "b", 2)
    soup_doc = json.loads(average_checkpoints([a, b], tmp_path / "soup").read_text())
    history = inherited_history(soup_doc, "soup")
    assert history[-1]["name"] == "soup"
    assert history[-1]["weight_average"] == {"of": [str(a), str(b)], "weights": [0.5, 0.5], "steps": [100, 200]}
    card = "\n".join(_history_section({"step": 5, "history": history}))
    assert f"soup (a weight average of `{a}` × 0.50 (step 100), `{b}` × 0.50 (step 200))" in card


def test_the_card_names_what_a_shipped_warm_start_name_meant_then() -> None:
    from finecut.training.card import _training_section

    training = {"step": 5, "config": {"init_checkpoint": "simpleclick-xtiny", "pretrained": "none"},
                "history": [{"name": "simpleclick-xtiny-v19"}]}
    text = "\n".join(_training_section(training))
    assert ("all weights from `simpleclick-xtiny` (warm start; at the time `simpleclick-xtiny-v19`, the run history's "
            "last row)") in text
    same = {**training, "history": [{"name": "simpleclick-xtiny"}]}
    assert "all weights from `simpleclick-xtiny` (warm start)" in "\n".join(_training_section(same))
