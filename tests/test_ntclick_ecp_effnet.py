"""The EfficientNet ECP (``ntclick_ecp_effnet``): shapes at odd sizes, initialisation from the shipped default, the
NTClick engine with it + the shipped HRR (through a saved checkpoint), and two training steps via ``finecut train``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import finecut
from finecut import fbu
from finecut.cli import main as cli_main
from finecut.errors import FinecutError
from finecut.models.checkpoint import load_checkpoint, save_checkpoint
from finecut.models.ntclick import NTClickNet, build_ntclick, is_ecp
from finecut.models.ntclick_ecp_effnet import NTClickECPEffNet, init_from_focalclick
from finecut.models.registry import build_model, list_models
from finecut.pipelines.ntclick import NTClickEngine
from finecut.prompts import Click, ClickKind, Prompts
from finecut.registry import build_engine, shipped_checkpoints
from finecut.training.config import TrainConfig
from helpers_training import make_object_folder

SMALL = {"arch": "ntclick_ecp_effnet", "img_size": 64}


def test_registered_and_shapes_at_odd_sizes() -> None:
    assert "ntclick_ecp_effnet" in list_models()
    torch.manual_seed(0)
    net = build_model(SMALL)
    assert is_ecp(net) and net.config.input_multiple == 32
    assert net.input_spec.prompt_layout == ("previous_mask", "positive", "negative", "tolerant")
    out = net(torch.randn(2, 3, 45, 71), torch.zeros(2, 4, 45, 71))
    assert out["logits"].shape == (2, 3, 45, 71)
    out["logits"].mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    three = build_model({**SMALL, "prompt_channels": 3})
    assert three.input_spec.prompt_layout == ("positive", "negative", "tolerant")
    assert three(torch.randn(1, 3, 33, 64), torch.zeros(1, 3, 33, 64))["logits"].shape == (1, 3, 33, 64)
    with pytest.raises(FinecutError):
        net(torch.randn(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
    with pytest.raises(FinecutError):
        build_model({**SMALL, "img_size": 50})
    assert build_model(net.arch_config()).config == net.config


def test_init_from_the_shipped_default_reproduces_its_fg_bg_split() -> None:
    path = shipped_checkpoints()["focalclick-lite0-v2"]
    net = build_model(SMALL).eval()
    report = init_from_focalclick(net, path)
    assert report.left_at_init == []
    assert report.sliced == ["click_fusion.net.0.weight", "head.classifier.bias", "head.classifier.weight"]
    assert len(report.copied) > 300 and report.unused and all(k.startswith("refiner.") for k in report.unused)
    source, _ = load_checkpoint(path)
    torch.manual_seed(1)
    image = torch.randn(1, 3, 64, 96)
    maps = (torch.rand(1, 4, 64, 96) > 0.95).float()
    with torch.no_grad():
        binary = torch.sigmoid(source.eval().segmentor(image, maps)["logits"][:, 0])
        probs = torch.softmax(net(image, maps)["logits"], dim=1)
    split = probs[:, fbu.FBU_FOREGROUND] / (probs[:, fbu.FBU_FOREGROUND] + probs[:, fbu.FBU_BACKGROUND])
    assert torch.allclose(split, binary, atol=1e-5)
    assert float(probs[:, fbu.FBU_UNCERTAIN].mean()) < 0.2  # uncertain_bias -2: rarely "uncertain" at first
    # the 3-channel layout takes the default's positive / negative / tolerant columns by name
    three = build_model({**SMALL, "prompt_channels": 3})
    init_from_focalclick(three, path)
    src = source.state_dict()["segmentor.click_fusion.net.0.weight"]
    assert torch.equal(three.state_dict()["click_fusion.net.0.weight"], src[:, 1:])


def _effnet_ntclick() -> NTClickNet:
    """The EfficientNet ECP (from the default) + the shipped NTClick HRR, in one ``ntclick`` net."""
    shipped, _ = load_checkpoint(shipped_checkpoints()["ntclick"])
    ecp = build_model(SMALL)
    init_from_focalclick(ecp, shipped_checkpoints()["focalclick-lite0-v2"])
    return NTClickNet(ecp, shipped.hrr).eval()


def test_engine_runs_with_the_effnet_ecp_and_the_shipped_hrr(tmp_path: Path) -> None:
    net = _effnet_ntclick()
    config = net.arch_config()
    assert config["ecp"]["arch"] == "ntclick_ecp_effnet"
    save_checkpoint(tmp_path / "nt", net, config, {"engine": "ntclick"})
    rebuilt = build_ntclick(**{k: v for k, v in config.items() if k != "arch"})
    assert isinstance(rebuilt.ecp, NTClickECPEffNet)
    engine = finecut.load_model(tmp_path / "nt.json")
    assert isinstance(engine, NTClickEngine) and isinstance(engine.ecp, NTClickECPEffNet)
    assert engine.options["ecp_size"] == 64
    assert isinstance(build_engine(net, {"engine": "ntclick"}), NTClickEngine)
    image = np.zeros((90, 130, 3), np.uint8)
    image[:] = (40, 60, 200)
    image[25:65, 40:95] = (220, 40, 30)
    features = engine.encode_image(image)
    prompts = Prompts(clicks=(Click(67, 45), Click(5, 5, ClickKind.NEGATIVE), Click(40, 45, ClickKind.TOLERANT)))
    out = engine.predict(image, features, prompts, None)
    assert out.probs.shape == (90, 130) and out.mask is not None and out.mask.shape == (90, 130)
    assert np.isfinite(out.probs).all()


def test_old_ntclick_configs_keep_their_layout() -> None:
    torch.manual_seed(0)
    vit = build_ntclick(ecp={"img_size": 64, "embed_dim": 32, "depth": 1, "num_heads": 2,
                             "pyramid_channels": [8, 8, 16, 16], "head_channels": 16},
                        hrr={"embed_dim": 32, "depth": 2, "num_heads": 2})
    assert "arch" not in vit.arch_config()["ecp"]
    with pytest.raises(FinecutError):
        build_ntclick(ecp={"arch": "ntclick_hrr"})


def test_config_checks() -> None:
    cfg = TrainConfig.from_dict({"model": SMALL, "ntclick_ecp": {"init_segmentor": "focalclick-lite0-v2"}})
    assert cfg.method == "ntclick_ecp" and cfg.to_dict()["ntclick_ecp"]["init_segmentor"] == "focalclick-lite0-v2"
    with pytest.raises(FinecutError, match="init_segmentor"):
        TrainConfig.from_dict({"model": {"arch": "ntclick_ecp", "img_size": 64},
                               "ntclick_ecp": {"init_segmentor": "focalclick-lite0-v2"}})
    shipped = TrainConfig.from_file(Path(__file__).parents[1] / "configs" / "ntclick-ecp-effnet.toml")
    assert shipped.model["arch"] == "ntclick_ecp_effnet" and shipped.ntclick_ecp.init_segmentor


def test_two_training_steps_through_finecut_train(tmp_path: Path) -> None:
    folder = make_object_folder(tmp_path / "data", count=4, min_axes=(14, 12))
    run_dir = tmp_path / "run"
    lines = [
        f'run_dir = "{run_dir}"', 'pretrained = "none"', "steps = 2", "batch_size = 2", "size = 64",
        "warmup_steps = 1", "threads = 1", "log_every = 1", "checkpoint_every = 2", "max_iterative_clicks = 1",
        "iterative_probability = 1.0",
        "[ntclick_ecp]", 'init_segmentor = "focalclick-lite0-v2"',
        "[model]", 'arch = "ntclick_ecp_effnet"', "img_size = 64",
        "[data]", f'sources = ["{folder}"]', "weights = [1.0]", f'bank = "{tmp_path / "bank.npz"}"',
        "max_side = 96", "val_fraction = 0.2",
    ]
    config = tmp_path / "ecp.toml"
    config.write_text("\n".join(lines) + "\n")
    assert cli_main(["train", str(config)]) == 0
    doc = json.loads((run_dir / "last.json").read_text())
    assert doc["model"]["arch"] == "ntclick_ecp_effnet" and doc["training"]["step"] == 2
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert any("ce" in record for record in log)
    net, _ = load_checkpoint(run_dir / "last.json")
    assert isinstance(net, NTClickECPEffNet)
