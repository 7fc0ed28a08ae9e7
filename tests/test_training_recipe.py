"""The faster training recipe: small-crop stage, batch-prefetching worker, warm start from a checkpoint, NCHW lever."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import finecut
from finecut.datasets import open_dataset
from finecut.training.batch import BatchSampler
from finecut.training.augment import ViewConfig
from finecut.training.clicks import ClickSimConfig
from finecut.training.config import FocalClickOptions, TrainConfig
from finecut.training.objects import build_object_bank
from finecut.training.prefetch import PrefetchSampler
from finecut.training.trainer import train
from helpers_training import make_object_folder


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    return make_object_folder(tmp_path / "data")


def _config(tmp_path: Path, folder: Path, **over: object) -> TrainConfig:
    raw = {
        "run_dir": str(tmp_path / "run"),
        "model": {"arch": "focalclick", "head_channels": 16, "refiner_channels": 8},
        "pretrained": "none",
        "data": {"sources": [str(folder)], "weights": [1.0], "bank": str(tmp_path / "bank.npz"), "max_side": 96,
                 "val_fraction": 0.3},
        "steps": 4, "batch_size": 2, "size": 64, "warmup_steps": 1, "threads": 1,
        "log_every": 1, "checkpoint_every": 2, "val_every": 100, "val_objects": 2, "val_clicks": 2,
        "focalclick": {"refiner_size": 32},
    }
    focalclick_keys = {f.name for f in dataclasses.fields(FocalClickOptions)}
    raw["focalclick"] = {**raw["focalclick"], **{k: v for k, v in over.items() if k in focalclick_keys}}
    raw.update({k: v for k, v in over.items() if k not in focalclick_keys})
    return TrainConfig.from_dict(raw)


def test_size_schedule() -> None:
    cfg = TrainConfig(size=224, focalclick=FocalClickOptions(small_size=160, full_size_from=10))
    assert [cfg.size_at(s) for s in (0, 9, 10, 50)] == [160, 160, 224, 224]
    assert TrainConfig(size=224).size_at(0) == 224  # no small stage configured
    assert TrainConfig(size=96, model={"arch": "ntclick_ecp"}).size_at(0) == 96  # a method without one


def test_size_schedule_can_keep_every_kth_step_small_after_the_small_stage() -> None:
    cfg = TrainConfig(size=320, focalclick=FocalClickOptions(small_size=224, full_size_from=4, small_every=2))
    assert [cfg.size_at(s) for s in range(10)] == [224] * 4 + [320, 224] * 3
    every3 = TrainConfig(size=320, focalclick=FocalClickOptions(small_size=224, full_size_from=0, small_every=3))
    assert [every3.size_at(s) for s in range(6)] == [320, 320, 224, 320, 320, 224]
    # without a small size there is nothing to alternate with
    assert TrainConfig(size=320, focalclick=FocalClickOptions(small_every=2)).size_at(1) == 320
    # the refiner's small crop follows the same steps
    fc = FocalClickOptions(small_size=224, full_size_from=4, small_every=2, refiner_size=96, small_refiner_size=64)
    assert [TrainConfig(size=320, focalclick=fc).refiner_size_at(s) for s in range(3, 7)] == [64, 96, 64, 96]
    with pytest.raises(finecut.FinecutError, match="small_every"):
        FocalClickOptions(small_every=-1).check()


def test_refiner_crop_schedule() -> None:
    fc = FocalClickOptions(small_size=128, full_size_from=10, refiner_size=96, small_refiner_size=56)
    cfg = TrainConfig(size=224, focalclick=fc)
    assert [cfg.refiner_size_at(s) for s in (0, 9, 10, 50)] == [56, 56, 96, 96]
    # no small stage, or no small refiner crop: the refiner crop stays refiner_size
    assert TrainConfig(size=224, focalclick=FocalClickOptions(small_refiner_size=56)).refiner_size_at(0) == 96
    no_small_refiner = FocalClickOptions(small_size=128, full_size_from=10)
    assert TrainConfig(size=224, focalclick=no_small_refiner).refiner_size_at(0) == 96
    with pytest.raises(finecut.FinecutError, match="small_refiner_size"):
        FocalClickOptions(small_refiner_size=4).check()
    with pytest.raises(finecut.FinecutError, match="full_size_from"):
        FocalClickOptions(full_size_from=-1).check()


def test_training_feeds_the_refiner_the_scheduled_crop(folder: Path, tmp_path: Path) -> None:
    from finecut.models.focalclick import FocalClickRefiner

    sides: list[int] = []

    def record(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if isinstance(module, FocalClickRefiner) and torch.is_grad_enabled():
            sides.append(int(inputs[0].shape[-1]))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
            run_dir = train(_config(tmp_path, folder, steps=3, small_size=48, full_size_from=2, small_refiner_size=16),
                        progress=False)
    finally:
        handle.remove()
    assert sides == [16, 16, 32]  # the config's refiner_size (32) once the small stage ends
    from finecut.training.card import write_model_card

    card = write_model_card(run_dir / "last.json", tmp_path / "card.md").read_text()
    assert "48² until step 2 (refiner 16²)" in card


def _sampler(folder: Path, rng: np.random.Generator) -> BatchSampler:
    bank = build_object_bank([open_dataset(folder)], max_side=96, progress=False)
    return BatchSampler(bank, np.arange(len(bank)), {0: 1.0}, ViewConfig(size=64, hi_factor=2), ClickSimConfig(),
                        0.0, rng)


def test_sampler_draws_batches_at_a_requested_size(folder: Path) -> None:
    sampler = _sampler(folder, np.random.default_rng(0))
    small = sampler.sample(2, size=48)
    assert small.images.shape == (2, 3, 48, 48) and small.images_hi.shape == (2, 3, 96, 96)
    assert small.masks_np.shape == (2, 48, 48) and all(len(c) >= 1 for c in small.clicks)
    assert sampler.sample(1).images.shape == (1, 3, 64, 64)


def test_prefetch_worker_follows_the_size_schedule(folder: Path) -> None:
    sampler = _sampler(folder, np.random.default_rng(0))  # built here, forked into the worker

    def make(rng: np.random.Generator) -> BatchSampler:
        sampler.rng = rng
        return sampler

    source = PrefetchSampler(make, [0, 0, 0], depth=2, batch_size=2, size_of=lambda step: 32 if step < 3 else 64)
    try:
        sizes = [source.sample().images.shape[-1] for _ in range(5)]
    finally:
        source.close()
    assert sizes == [32, 32, 32, 64, 64]


def test_training_with_small_stage_prefetch_and_warm_start(folder: Path, tmp_path: Path) -> None:
    first = train(_config(tmp_path, folder, steps=2), progress=False)
    cfg = _config(tmp_path, folder, run_dir=str(tmp_path / "second"), init_checkpoint=str(first / "last.json"),
                  small_size=48, full_size_from=2, prefetch=2, steps=3, lr=0.0)
    # lr 0 throughout (warm-up included): the warm-started weights must come out unchanged
    run_dir = train(cfg, progress=False)
    before, after = load_file(str(first / "last.safetensors")), load_file(str(run_dir / "last.safetensors"))
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.endswith("num_batches_tracked")
               and "running_" not in k)
    doc = json.loads((run_dir / "last.json").read_text())
    assert doc["training"]["step"] == 3 and doc["training"]["config"]["init_checkpoint"] == str(first / "last.json")
    finecut.load_model(run_dir / "last.json")  # a usable checkpoint
    history = doc["training"]["history"]
    assert [(r["step"], r["samples_seen"]) for r in history] == [(2, 4)]  # the warm start's own run
    from finecut.training.card import write_model_card

    card = write_model_card(run_dir / "last.json", tmp_path / "card.md").read_text()
    assert "## Run history" in card and "48² until step 2" in card and "warm start" in card


def test_warm_start_refuses_another_architecture(folder: Path, tmp_path: Path) -> None:
    first = train(_config(tmp_path, folder, steps=1), progress=False)
    cfg = _config(tmp_path, folder, run_dir=str(tmp_path / "other"), init_checkpoint=str(first / "last.json"),
                  model={"arch": "focalclick", "head_channels": 8, "refiner_channels": 8})
    with pytest.raises(finecut.FinecutError, match="init_checkpoint.*differs"):
        train(cfg, progress=False)


def test_validation_curve_is_recorded(folder: Path, tmp_path: Path) -> None:
    run_dir = train(_config(tmp_path, folder, steps=2, val_every=1), progress=False)
    curve = json.loads((run_dir / "last.json").read_text())["training"]["validation_curve"]
    assert [r["step"] for r in curve] == [1, 2] and all("val_miou@1" in r for r in curve)


def test_val_every_zero_turns_validation_off(folder: Path, tmp_path: Path) -> None:
    run_dir = train(_config(tmp_path, folder, steps=2, val_every=0), progress=False)
    doc = json.loads((run_dir / "last.json").read_text())
    assert doc["training"]["step"] == 2 and not doc["training"].get("validation_curve")
    for bad in ({"val_every": -1}, {"log_every": 0}, {"checkpoint_every": 0}):
        with pytest.raises(finecut.FinecutError, match=f"{next(iter(bad))} must be >= "):
            TrainConfig.from_dict(bad)


def test_nchw_lever_trains(folder: Path, tmp_path: Path) -> None:
    run_dir = train(_config(tmp_path, folder, steps=1, channels_last=False), progress=False)
    assert json.loads((run_dir / "last.json").read_text())["training"]["step"] == 1


def test_distillation_loss() -> None:
    from finecut.training.focalclick import distillation_loss

    logits = torch.tensor([[[[2.0, -1.0], [0.0, 3.0]]]])
    probs = torch.sigmoid(logits)
    entropy = -(probs * probs.log() + (1 - probs) * (1 - probs).log()).mean()
    assert torch.allclose(distillation_loss(logits, probs), entropy, atol=1e-6)  # its minimum: the teacher's odds
    assert distillation_loss(logits, 1 - probs) > distillation_loss(logits, probs)
    big = torch.nn.functional.interpolate(probs, scale_factor=4, mode="nearest")
    assert distillation_loss(logits, big).shape == ()  # targets at another size are resized to the logits'


def test_training_with_a_teacher_logs_a_distillation_term(folder: Path, tmp_path: Path) -> None:
    teacher = train(_config(tmp_path, folder, steps=1), progress=False)
    cfg = _config(tmp_path, folder, run_dir=str(tmp_path / "student"), steps=2, seed=3,
                  distill_checkpoint=str(teacher / "last.json"), distill_weight=0.5,
                  model={"arch": "focalclick", "head_channels": 8, "refiner_channels": 8})  # another net
    run_dir = train(cfg, progress=False)
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    losses = [r for r in records if "distill" in r]
    assert losses and all(r["distill"] > 0 for r in losses)
    assert all(r["loss"] > r["seg"] for r in losses)  # the term is part of the optimised loss
    from finecut.training.card import write_model_card

    card = write_model_card(run_dir / "last.json", tmp_path / "student.md").read_text()
    assert f"soft targets from `{teacher / 'last.json'}`'s segmentor, weight 0.5" in card
    plain = train(_config(tmp_path, folder, run_dir=str(tmp_path / "plain"), steps=1), progress=False)
    records = [json.loads(line) for line in (plain / "log.jsonl").read_text().splitlines()]
    assert all(r.get("distill", 0.0) == 0.0 for r in records)
    with pytest.raises(finecut.FinecutError, match="distill_weight"):
        FocalClickOptions(distill_weight=-1.0).check()


def test_prefetch_workers_share_the_requests(folder: Path) -> None:
    sampler = _sampler(folder, np.random.default_rng(0))

    def make(rng: np.random.Generator) -> BatchSampler:
        sampler.rng = rng
        return sampler

    source = PrefetchSampler(make, [0, 0, 0], depth=1, batch_size=2, size_of=lambda step: 32, workers=3)
    try:
        assert len(source._processes) == 3 and all(p.is_alive() for p in source._processes)
        batches = [source.sample() for _ in range(6)]
    finally:
        source.close()
    assert all(b.images.shape == (2, 3, 32, 32) for b in batches)
    assert not any(p.is_alive() for p in source._processes)
    # each worker draws its own stream: not every batch is the same
    assert len({b.images.sum().item() for b in batches}) > 1
    with pytest.raises(ValueError, match="workers"):
        PrefetchSampler(make, [0], depth=1, batch_size=1, size_of=lambda step: 32, workers=0)


def test_device_option_is_checked() -> None:
    assert TrainConfig.from_dict({"device": "cuda:1"}).device == "cuda:1"
    for bad in ("gpu", "cuda:x", "CUDA"):
        with pytest.raises(finecut.FinecutError, match="device must be"):
            TrainConfig.from_dict({"device": bad})
    with pytest.raises(finecut.FinecutError, match="ntclick_hrr method trains on the CPU only"):
        TrainConfig.from_dict({"device": "cuda", "model": {"arch": "ntclick_hrr"}})
    with pytest.raises(finecut.FinecutError, match="prefetch_workers"):
        TrainConfig.from_dict({"focalclick": {"prefetch_workers": 0}})
    with pytest.raises(finecut.FinecutError, match="time_budget_minutes"):
        TrainConfig.from_dict({"time_budget_minutes": -1})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_run_without_a_gpu_says_so(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(finecut.FinecutError, match="sees no CUDA device"):
        train(_config(tmp_path, folder, device="cuda"), progress=False)


def test_time_budget_anneals_by_time_and_stops_the_run(folder: Path, tmp_path: Path) -> None:
    from finecut.training.trainer import lr_at

    cfg = TrainConfig(lr=1.0, steps=1000, warmup_steps=10, min_lr_fraction=0.0, time_budget_minutes=1.0)
    assert lr_at(5, cfg, train_seconds=59.0) == pytest.approx(0.6)  # warm-up is counted in steps
    assert lr_at(20, cfg, train_seconds=0.0) == pytest.approx(lr_at(20, TrainConfig(lr=1.0, steps=1000,
                                                                     warmup_steps=10, min_lr_fraction=0.0)))
    assert lr_at(20, cfg, train_seconds=30.0) == pytest.approx(0.5)  # half the budget: the cosine's middle
    assert lr_at(20, cfg, train_seconds=90.0) == pytest.approx(0.0)  # over budget: the floor
    # a tiny budget stops a long run early, with a checkpoint and the reason in the log
    run_dir = train(_config(tmp_path, folder, steps=10_000, time_budget_minutes=0.001), progress=False)
    doc = json.loads((run_dir / "last.json").read_text())
    assert 1 <= doc["training"]["step"] < 10_000
    events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "stopped (time budget)"
    assert events[0]["device"]  # the start event names the device
