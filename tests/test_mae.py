"""MAE pretraining of SimpleClick's plain ViT: masking, loss, the encoder's view, `finecut train`, and the encoder
starting a SimpleClick run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_training import make_object_folder

from finecut.cli import main
from finecut.errors import FinecutError
from finecut.models.checkpoint import load_checkpoint, save_checkpoint
from finecut.models.registry import build_model
from finecut.training.config import TrainConfig
from finecut.training.mae import random_resized_crop
from finecut.training.trainer import load_backbone_checkpoint

ENCODER = {"img_size": 64, "embed_dim": 32, "depth": 2, "num_heads": 2}
TINY_MAE = {"arch": "mae_vit", "variant": "xtiny", **ENCODER, "mask_ratio": 0.75, "decoder_dim": 16,
            "decoder_depth": 1, "decoder_heads": 2}
TINY_SIMPLECLICK = {"arch": "simpleclick", "variant": "xtiny", **ENCODER, "window_size": 2, "neck_dims": 8,
                    "head_dim": 8, "prompt_channels": 3}


def tiny_mae() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(TINY_MAE)


def test_masking_ratio_and_determinism_per_seed() -> None:
    net = tiny_mae()
    images = torch.randn(3, 3, 64, 64)
    out = net(images, generator=torch.Generator().manual_seed(7))
    mask = out["mask"]
    assert mask.shape == (3, 16) and torch.all(mask.sum(1) == 12)  # 75 % of the 4x4 patches hidden per sample
    assert not torch.equal(mask[0], mask[1])  # each sample its own mask
    again = net(images, generator=torch.Generator().manual_seed(7))
    assert torch.equal(again["mask"], mask) and torch.allclose(again["loss"], out["loss"])
    other = net(images, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(other["mask"], mask)
    half = net(images, generator=torch.Generator().manual_seed(7), mask_ratio=0.5)
    assert torch.all(half["mask"].sum(1) == 8)


def test_loss_is_on_hidden_patches_only_with_normalised_pixel_targets() -> None:
    net = tiny_mae()
    images = torch.randn(2, 3, 64, 64)
    out = net(images, generator=torch.Generator().manual_seed(1))
    target = out["target"]
    assert torch.allclose(target.mean(-1), torch.zeros(2, 16), atol=1e-5)  # norm_pix_loss: per-patch normalised
    per_patch = ((out["pred"] - target) ** 2).mean(-1)
    hidden = out["mask"].bool()
    assert torch.allclose(out["loss"], per_patch[hidden].mean())
    # a perfect prediction of the hidden patches gives zero loss, whatever is predicted for the visible ones
    pred = torch.where(hidden[..., None], target, torch.randn_like(target))
    assert float(((pred - target) ** 2).mean(-1)[hidden].mean()) == 0.0


def test_encoder_never_sees_hidden_tokens() -> None:
    net = tiny_mae()
    seen: list[tuple[int, ...]] = []
    hooks = [block.attn.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape))) for block in net.blocks]
    images = torch.randn(2, 3, 64, 64)
    generator = torch.Generator().manual_seed(3)
    out = net(images, generator=generator)
    for hook in hooks:
        hook.remove()
    assert seen == [(2, 1, 4, 32)] * 2  # 4 of 16 tokens, global attention, in every encoder block
    # the encoder's output does not depend on the hidden patches' pixels
    hidden = out["mask"][0].bool().reshape(4, 4)
    changed = images.clone()
    for r, c in torch.nonzero(hidden).tolist():
        changed[0, :, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] = 100.0
    ids_keep, _, _ = net.random_masking(2, 16, 0.75, images.device, torch.Generator().manual_seed(3))
    assert torch.allclose(net.encode(images, ids_keep), net.encode(changed, ids_keep))


def test_random_resized_crop_shapes() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (50, 90, 3), dtype=np.uint8)
    for _ in range(20):
        crop = random_resized_crop(image, 32, (0.2, 1.0), (0.75, 4 / 3), 0.5, rng)
        assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8
    with pytest.raises(FinecutError, match="crop_scale"):
        TrainConfig.from_dict({"model": TINY_MAE, "mae": {"crop_scale": [0.5, 0.2]}})
    with pytest.raises(FinecutError, match=r"\[mae\] holds options"):
        TrainConfig.from_dict({"model": TINY_SIMPLECLICK, "mae": {"mask_ratio": 0.5}})


def test_encoder_weights_load_into_simpleclick(tmp_path: Path) -> None:
    net = tiny_mae()
    save_checkpoint(tmp_path / "mae", net, TINY_MAE, {"engine": "none"})
    sc = build_model(TINY_SIMPLECLICK)
    report = sc.load_pretrained(tmp_path / "mae.safetensors")
    backbone = {f"backbone.{k}" for k in sc.backbone.state_dict()}
    assert backbone <= set(report.loaded)
    for key, value in sc.backbone.state_dict().items():
        assert torch.equal(value, net.state_dict()[key]), key


def test_train_mae_then_start_simpleclick_from_it(tmp_path: Path) -> None:
    folder = make_object_folder(tmp_path / "data")
    data = f'[data]\nsources = ["{folder}"]\nweights = [1.0]\nbank = "{tmp_path / "bank.npz"}"\nmax_side = 96\n'
    mae_run = tmp_path / "mae"
    config = tmp_path / "mae.toml"
    config.write_text(
        f'run_dir = "{mae_run}"\npretrained = "none"\nsteps = 3\nbatch_size = 2\nsize = 64\nwarmup_steps = 1\n'
        "threads = 1\nlog_every = 1\ncheckpoint_every = 2\n"
        "[mae]\nmask_ratio = 0.75\ncrop_scale = [0.2, 1.0]\n"
        "[model]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in TINY_MAE.items()) + data)
    assert main(["train", str(config), "--no-progress"]) == 0
    doc = json.loads((mae_run / "last.json").read_text())
    assert doc["training"]["step"] == 3 and doc["model"]["arch"] == "mae_vit" and doc["engine"] == "none"
    records = [json.loads(line) for line in (mae_run / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 3 and all(np.isfinite(losses))
    mae_net, _ = load_checkpoint(mae_run / "last")

    sc_cfg = TrainConfig.from_dict({"run_dir": str(tmp_path / "sc"), "model": TINY_SIMPLECLICK, "pretrained": "none",
                                    "init_backbone_checkpoint": str(mae_run / "last"),
                                    "data": {"sources": [str(folder)], "weights": [1.0],
                                             "bank": str(tmp_path / "bank.npz"), "max_side": 96}})
    sc = build_model(TINY_SIMPLECLICK)
    counts = load_backbone_checkpoint(sc, sc_cfg)
    assert counts is not None and counts["loaded"] >= counts["backbone_tensors"] == len(sc.backbone.state_dict())
    for key, value in sc.backbone.state_dict().items():
        assert torch.equal(value, mae_net.state_dict()[key]), key

    # an encoder that does not cover the backbone is refused, not partly or silently skipped
    for name, change in (("shallow", {"depth": 1}), ("narrow", {"embed_dim": 16})):
        other = build_model({**TINY_MAE, **change})
        save_checkpoint(tmp_path / name, other, {**TINY_MAE, **change})
        sc_cfg.init_backbone_checkpoint = str(tmp_path / name)
        with pytest.raises(FinecutError, match="refusing a partial encoder|no transformer block weights match"):
            load_backbone_checkpoint(build_model(TINY_SIMPLECLICK), sc_cfg)
    with pytest.raises(FinecutError, match="cannot be combined"):
        TrainConfig.from_dict({"model": TINY_SIMPLECLICK, "init_backbone_checkpoint": "a", "init_checkpoint": "b"})

