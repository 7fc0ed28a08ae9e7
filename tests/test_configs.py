"""Every training config in ``configs/`` parses and its ``[model]`` builds (on the meta device: nothing allocated)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch

from finecut.errors import FinecutError
from finecut.models.registry import build_model, list_models
from finecut.registry import available_models, pretrained_checkpoints
from finecut.training.config import (
    FLAT_KEYS,
    METHOD_OF_ARCH,
    METHOD_OPTIONS,
    FocalClickOptions,
    NTClickHRROptions,
    TrainConfig,
    flat_config,
)

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
    # a source may weigh 0 (the samplers skip it): a bank's source list must match the config's, even where a run
    # draws none of it (MAE reads photos, and CCP-person's photos are CCP's)
    assert len(cfg.data.weights) == len(cfg.data.sources) and all(w >= 0 for w in cfg.data.weights)
    assert any(w > 0 for w in cfg.data.weights)
    assert cfg.steps > 0 and cfg.batch_size > 0 and cfg.size % 32 == 0
    assert cfg.pretrained in ("none", "imagenet") or Path(cfg.pretrained).suffix
    with torch.device("meta"):
        net = build_model(cfg.model)
    params = sum(p.numel() for p in net.parameters())
    assert params > 100_000
    assert all(p.is_meta for p in net.parameters())
    # NTClick's ECP takes its own layout, its HRR no prompt maps; MAE pretraining (mae_vit) takes no prompts at all
    if not cfg.model["arch"].startswith("ntclick") and cfg.model["arch"] != "mae_vit":
        assert net.prompt_channels == cfg.model.get("prompt_channels", net.prompt_channels) >= 3
    # the shipped configs use the sectioned layout: no top-level option of the flat one
    raw = tomllib.loads(path.read_text())
    assert not set(raw) & set(FLAT_KEYS), f"{path.name}: flat-layout keys {sorted(set(raw) & set(FLAT_KEYS))}"
    assert set(raw) & set(METHOD_OPTIONS) <= {cfg.method}


@pytest.mark.parametrize("path", [p for p in CONFIGS if not p.stem.startswith("focalclick-lite0") and "ntclick" not in p.stem
                                  and not p.stem.startswith("mae-") and not p.stem.endswith("-gpu1")],
                         ids=lambda p: p.stem)
def test_short_run_configs_need_no_downloaded_weights(path: Path) -> None:
    cfg = TrainConfig.from_file(path)
    assert cfg.pretrained == "none"
    assert cfg.batch_size == 8 and cfg.steps >= 500
    # a CPU run: at most 3,000 steps, or a time budget that ends it first (its step count only a cap)
    assert cfg.steps <= 3000 or 0 < (cfg.time_budget_minutes or 0) <= 120, (cfg.steps, cfg.time_budget_minutes)


@pytest.mark.parametrize("path", [p for p in CONFIGS if "gpu" in p.stem], ids=lambda p: p.stem)
def test_gpu_configs_are_time_boxed_and_travel_light(path: Path) -> None:
    """The lent-GPU runs (scripts/device_train.sh): one CUDA process, a time budget the schedule anneals to, workers
    to feed it, a compact bank carried in .gpu/, and nothing to download (the GPU machine has no network)."""
    cfg = TrainConfig.from_file(path)
    assert cfg.device == "cuda" and cfg.time_budget_minutes > 0 and cfg.pretrained == "none"
    assert cfg.focalclick is not None and cfg.focalclick.prefetch_workers > 1
    assert cfg.focalclick.prefetch >= cfg.focalclick.prefetch_workers
    assert cfg.data.bank.startswith(".gpu/")


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.stem.startswith("mae-")], ids=lambda p: p.stem)
def test_mae_pretraining_configs(path: Path) -> None:
    """MAE pretraining is the one long self-supervised run (no click training, whole photos): larger batches and
    more steps than the short click runs, still no downloaded weights; a SimpleClick config starts from it."""
    cfg = TrainConfig.from_file(path)
    assert cfg.method == "mae" and cfg.pretrained == "none" and cfg.mae is not None
    assert cfg.model["img_size"] == cfg.size
    finetune = TrainConfig.from_file(CONFIG_DIR / f"simpleclick-{path.stem.removeprefix('mae-')}-mae.toml")
    # the run's own last checkpoint, or the same run shipped as a pretraining checkpoint (weights/pretrained/)
    assert finetune.init_backbone_checkpoint in (f"{cfg.run_dir}/last", path.stem)
    if finetune.init_backbone_checkpoint == path.stem:
        assert path.stem in pretrained_checkpoints()
    assert finetune.model["variant"] == cfg.model["variant"] and finetune.size == cfg.size


def test_shipped_mae_encoder_starts_simpleclick_click_training() -> None:
    """The shipped MAE run (weights/pretrained/) resolves by name, fills every backbone tensor of the SimpleClick
    config that names it, and is a training start, not a model ``load_model`` lists."""
    from finecut.training.trainer import init_checkpoint_path_of, load_backbone_checkpoint

    shipped = pretrained_checkpoints()
    assert "mae-xtiny-v3" in shipped and "mae-xtiny-v3" not in available_models()
    assert init_checkpoint_path_of("mae-xtiny-v3") == shipped["mae-xtiny-v3"]
    cfg = TrainConfig.from_file(CONFIG_DIR / "simpleclick-xtiny-v3-mae.toml")
    assert cfg.init_backbone_checkpoint == "mae-xtiny-v3"
    torch.manual_seed(0)
    net = build_model(cfg.model)
    before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    report = load_backbone_checkpoint(net, cfg)
    assert report is not None and report["loaded"] == report["backbone_tensors"] == len(before)
    after = net.backbone.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before if before[k].numel() > 1)


def test_a_run_from_a_pretrained_backbone_inherits_the_pretraining_run_in_its_history() -> None:
    """The model card's run history starts with the MAE run whose encoder a click-training run started from."""
    from finecut.training.trainer import inherited_runs

    cfg = TrainConfig.from_file(CONFIG_DIR / "simpleclick-xtiny-v3-mae.toml")
    runs = inherited_runs(cfg)
    assert [run["name"] for run in runs] == ["mae-xtiny-v3"]
    assert runs[0]["step"] == 2000 and runs[0]["processes"] == 2 and runs[0]["train_seconds"] > 3000
    assert runs[0]["config"]["batch_size"] == 32


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


def test_every_trainable_arch_has_a_method_and_an_engine() -> None:
    from finecut.training.trainer import METHODS

    assert set(METHODS) == set(METHOD_OF_ARCH.values())
    assert set(METHOD_OF_ARCH) <= set(list_models())
    for arch, method in METHOD_OF_ARCH.items():
        assert METHODS[method].engine(arch) in ("focalclick", "simpleclick", "ntclick_ecp", "ntclick_hrr", "focalclick_xl",
                                                "none")  # "none": an MAE pretraining checkpoint opens as no engine
    assert METHODS["mae"].engine("mae_vit") == "none"
    assert METHODS["focalclick"].engine("focalclick") == "focalclick"
    assert METHODS["focalclick"].engine("simpleclick") == "simpleclick"
    with pytest.raises(FinecutError, match="assembled, not trained"):
        TrainConfig.from_dict({"model": {"arch": "ntclick"}})
    with pytest.raises(FinecutError, match="no training method"):
        TrainConfig.from_dict({"model": {"arch": "nonesuch"}})


FLAT = {
    "run_dir": "runs/x", "steps": 10, "size": 64, "refiner_size": 48, "small_size": 32, "full_size_from": 5,
    "prefetch": 2, "channels_last": False, "compile": False, "refiner_loss_weight": 0.5,
    "hrr_bce_weight": 0.3, "hrr_ecp_checkpoint": "e.json", "hrr_ecp_probability": 0.5, "hrr_native_scale": 0.25,
    "model": {"arch": "focalclick"}, "data": {"sources": ["COCO128"], "weights": [1.0]},
}


def test_flat_layout_loads_into_the_method_section() -> None:
    """A config of the earlier flat layout: its method's options move into the section, the other methods' options
    (carried by every flat config and ignored by its run) are dropped."""
    cfg = TrainConfig.from_dict(FLAT)
    assert cfg.focalclick == FocalClickOptions(refiner_size=48, refiner_loss_weight=0.5, small_size=32,
                                               full_size_from=5, channels_last=False, compile=False, prefetch=2)
    assert cfg.ntclick_hrr is None and cfg.size_at(0) == 32 and cfg.size_at(5) == 64
    sectioned = {k: v for k, v in FLAT.items() if k not in FLAT_KEYS}
    sectioned["focalclick"] = {"refiner_size": 48, "small_size": 32, "full_size_from": 5, "prefetch": 2,
                               "channels_last": False, "refiner_loss_weight": 0.5}
    assert TrainConfig.from_dict(sectioned) == cfg
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # what config.json / checkpoints record reads back
    hrr = TrainConfig.from_dict({**FLAT, "model": {"arch": "ntclick_hrr"}})
    assert hrr.focalclick is None
    assert hrr.ntclick_hrr == NTClickHRROptions(bce_weight=0.3, ecp_checkpoint="e.json", ecp_probability=0.5,
                                                native_scale=0.25)
    assert "focalclick" not in hrr.to_dict() and hrr.to_dict()["ntclick_hrr"]["native_scale"] == 0.25
    ecp = TrainConfig.from_dict({**FLAT, "model": {"arch": "ntclick_ecp"}})
    assert ecp.focalclick is None and ecp.ntclick_hrr is None and ecp.size_at(0) == 64


def test_flat_view_of_recorded_configs_reads_both_layouts() -> None:
    cfg = TrainConfig.from_dict(FLAT)
    flat = flat_config(cfg.to_dict())
    assert flat["refiner_size"] == 48 and flat["small_size"] == 32 and "focalclick" not in flat
    assert "hrr_bce_weight" not in flat
    old = {"steps": 3, "refiner_size": 96, "hrr_bce_weight": 1.0}  # a checkpoint of the flat layout
    assert flat_config(old) == old


def test_sections_are_checked() -> None:
    base = {"model": {"arch": "focalclick"}, "data": {"sources": ["COCO128"], "weights": [1.0]}}
    with pytest.raises(FinecutError, match=r"\[ntclick_hrr\] holds options of the ntclick_hrr method"):
        TrainConfig.from_dict({**base, "ntclick_hrr": {"bce_weight": 1.0}})
    with pytest.raises(FinecutError, match=r"unknown \[focalclick\] option\(s\): refiner"):
        TrainConfig.from_dict({**base, "focalclick": {"refiner": 1}})
    with pytest.raises(FinecutError, match="given twice"):
        TrainConfig.from_dict({**base, "prefetch": 1, "focalclick": {"prefetch": 2}})
    with pytest.raises(FinecutError, match="unknown training option"):
        TrainConfig.from_dict({**base, "bce_weight": 1.0})


def test_empty_or_missing_config_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("# only a comment\n")
    with pytest.raises(FinecutError, match="empty"):
        TrainConfig.from_file(empty)
    with pytest.raises(FinecutError, match="not found"):
        TrainConfig.from_file(tmp_path / "missing.toml")


def test_shipped_simpleclick_xtiny_loads_by_name_with_its_history() -> None:
    import finecut

    engine = finecut.load_model("simpleclick-xtiny")
    # v20 / v22 average: v22 is v20 continued 1,200 steps with a salient-object data mix; v20 was v19 continued
    # 1,381 steps with v10's recipe; v19 was the uniform weight average of v17 (v16 continued 1,206 steps) and v18
    # (v17 continued 1,110 steps)
    assert engine.config()["model"]["arch"] == "simpleclick" and engine.config()["trained_steps"] == 1200
    average = engine.checkpoint["training"]["weight_average"]
    assert average["of"][0] == "simpleclick-xtiny-v20"
    assert average["weights"] == [0.5, 0.5] and average["steps"] == [1381, 1200]
    assert "weight_average" not in engine.checkpoint["training"]["history"][-1]
    v19_average = engine.checkpoint["training"]["history"][-2]["weight_average"]
    assert v19_average["weights"] == [0.5, 0.5] and v19_average["steps"] == [1206, 1110]
    # later clicks are zoomed to 320 px, an object's first pass (the whole image) stays at the trained 224 px
    assert engine.options["target_size"] == 320 and engine.options["first_target_size"] == 224
    assert engine.options["square_input"] is True
    # flip TTA and the zoomed-in second pass of the first click: ahead on held-out NoC85, NoC90 and the first click
    # (results/heldout_simpleclick.md)
    assert engine.options["flip_tta"] is True and engine.options["zoom_first_pass"] is True
    history = [run["name"] for run in engine.checkpoint["training"]["history"]]
    assert history == ["mae-xtiny-v3", "simpleclick-xtiny-run2", "simpleclick-xtiny-v5", "simpleclick-xtiny-v8",
                       "simpleclick-xtiny-v10", "simpleclick-xtiny-v12", "simpleclick-xtiny-v14",
                       "simpleclick-xtiny-v15", "simpleclick-xtiny-v16", "simpleclick-xtiny-v17",
                       "simpleclick-xtiny-v19", "simpleclick-xtiny-v20"]
    assert engine.checkpoint["training"]["config"]["size"] == 320
