"""Every training config in ``configs/`` parses and its ``[model]`` builds (on the meta device: nothing allocated)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from finecut.errors import FinecutError
from finecut.models.registry import build_model, list_models
from finecut.training.config import TrainConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.toml"))


def test_config_folder_is_not_empty() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"focalclick-lite0", "focalclick-mitb0", "focalclick-hrnet18s", "focalclick-mitb3",
            "simpleclick-xtiny"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_parses_and_model_builds(path: Path) -> None:
    cfg = TrainConfig.from_file(path)
    assert cfg.model["arch"] in list_models()
    assert Path(cfg.run_dir).parts[0] == "runs" and Path(cfg.run_dir).name == path.stem
    assert len(cfg.data.weights) == len(cfg.data.sources) and all(w > 0 for w in cfg.data.weights)
    assert cfg.steps > 0 and cfg.batch_size > 0 and cfg.size % 32 == 0
    assert cfg.pretrained in ("none", "imagenet") or Path(cfg.pretrained).suffix
    with torch.device("meta"):
        net = build_model(cfg.model)
    params = sum(p.numel() for p in net.parameters())
    assert params > 100_000
    assert all(p.is_meta for p in net.parameters())
    if not cfg.model["arch"].startswith("ntclick"):  # NTClick has its own loop; the others get prompt_channels maps
        assert net.prompt_channels == cfg.model.get("prompt_channels", net.prompt_channels) >= 3


@pytest.mark.parametrize("path", [p for p in CONFIGS if not p.stem.startswith("focalclick-lite0") and "ntclick" not in p.stem],
                         ids=lambda p: p.stem)
def test_short_run_configs_need_no_downloaded_weights(path: Path) -> None:
    cfg = TrainConfig.from_file(path)
    assert cfg.pretrained == "none"
    assert 1000 <= cfg.steps <= 3000 and cfg.batch_size == 8


def test_reader_options_reach_the_dataset_and_evaluation_splits_are_refused() -> None:
    cfg = TrainConfig.from_dict({"data": {"sources": ["COCO128", "DRIVE"], "weights": [1.0, 0.5],
                                          "options": {"DRIVE": {"split": "training"}}}})
    assert cfg.data.options == {"DRIVE": {"split": "training"}}
    with pytest.raises(FinecutError, match="DRIVE needs options"):
        TrainConfig.from_dict({"data": {"sources": ["DRIVE"], "weights": [1.0]}})
    with pytest.raises(FinecutError, match="DRIVE needs options"):
        TrainConfig.from_dict({"data": {"sources": ["DRIVE"], "weights": [1.0],
                                        "options": {"DRIVE": {"split": "test"}}}})
    for bench in ("GrabCut", "berkeley", "DAVIS", "CrackForest"):
        with pytest.raises(FinecutError, match="evaluation benchmark"):
            TrainConfig.from_dict({"data": {"sources": ["COCO128", bench], "weights": [1.0, 1.0]}})
    with pytest.raises(FinecutError, match="not in \\[data\\].sources"):
        TrainConfig.from_dict({"data": {"sources": ["COCO128"], "weights": [1.0], "options": {"DRIVE": {}}}})
    with pytest.raises(FinecutError, match="2 sources but 1 weights"):
        TrainConfig.from_dict({"data": {"sources": ["COCO128", "BSDS500"], "weights": [1.0]}})
