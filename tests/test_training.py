"""Training pieces on tiny synthetic data: object bank, views, click simulation, losses, train/resume/load, DDP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import finecut
from finecut.datasets import open_dataset
from finecut.errors import FinecutError
from finecut.prompts import ClickKind
from finecut.training.augment import ViewConfig, random_view
from finecut.training.clicks import ClickSimConfig, corrupt_mask, next_training_click, sample_initial_clicks
from finecut.training.config import TrainConfig
from finecut.training.losses import boundary_map, boundary_weighted_nfl, normalized_focal_loss
from finecut.training.objects import ObjectBank, build_object_bank
from finecut.training.trainer import train
from helpers_training import make_object_folder


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    return make_object_folder(tmp_path / "data")


def test_object_bank_roundtrip(folder: Path, tmp_path: Path) -> None:
    dataset = open_dataset(folder)
    bank = build_object_bank([dataset], max_side=64, progress=False)
    assert len(bank) == 6 and max(bank.images[0].shape[:2]) == 64
    path = tmp_path / "bank.npz"
    bank.save(path)
    loaded = ObjectBank.load(path)
    assert len(loaded) == len(bank) and loaded.sources == bank.sources
    for i in range(len(bank)):
        assert np.array_equal(loaded.mask(i), bank.mask(i))
        assert np.array_equal(loaded.image(i), bank.image(i))
        x0, y0, x1, y1 = loaded.objects[i].bbox
        ys, xs = np.nonzero(loaded.mask(i))
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
    train_idx, val_idx = loaded.split(0.5)
    assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(len(loaded)))


def test_compact_object_bank_keeps_masks_exact_and_images_close(folder: Path, tmp_path: Path) -> None:
    """save(image_quality=...) writes WebP images and PNG box masks (what travels to a GPU machine): the masks, boxes,
    names and split come back exactly, the images within JPEG-like error, in a much smaller file."""
    bank = build_object_bank([open_dataset(folder)], max_side=96, progress=False)
    raw, compact = tmp_path / "raw.npz", tmp_path / "compact.npz"
    bank.save(raw)
    bank.save(compact, image_quality=80)
    assert compact.stat().st_size < raw.stat().st_size / 3
    loaded = ObjectBank.load(compact)
    assert loaded.image_names == bank.image_names and loaded.sources == bank.sources
    assert [o.bbox for o in loaded.objects] == [o.bbox for o in bank.objects]
    for i in range(len(bank)):
        assert np.array_equal(loaded.mask(i), bank.mask(i))
        error = np.abs(loaded.image(i).astype(int) - bank.image(i).astype(int)).mean()
        assert loaded.image(i).shape == bank.image(i).shape and error < 8
    assert [a.tolist() for a in loaded.split(0.5)] == [a.tolist() for a in bank.split(0.5)]
    with pytest.raises(FinecutError, match="image_quality"):
        bank.save(tmp_path / "bad.npz", image_quality=0)
    (tmp_path / "broken.npz").write_bytes(compact.read_bytes()[:200])
    with pytest.raises(FinecutError, match="cannot read object bank"):
        ObjectBank.load(tmp_path / "broken.npz")


def test_object_bank_select_and_downscale(folder: Path) -> None:
    bank = build_object_bank([open_dataset(folder)], max_side=96, progress=False)
    picked = bank.select([4, 1])
    assert len(picked) == 2 and len(picked.images) == 2
    assert picked.image_names == [bank.image_names[bank.objects[i].image_index] for i in (4, 1)]
    assert np.array_equal(picked.mask(0), bank.mask(4)) and np.array_equal(picked.image(1), bank.image(1))
    small = bank.downscaled(48)
    assert len(small) == len(bank) and max(small.images[0].shape[:2]) == 48
    for i in range(len(small)):
        mask = small.mask(i)
        assert mask.shape == small.image(i).shape[:2] and mask.sum() == small.objects[i].area
        ys, xs = np.nonzero(mask)
        assert small.objects[i].bbox == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert abs(mask.mean() - bank.mask(i).mean()) < 0.02  # the same share of the image


def test_object_bank_stores_a_photo_shared_by_two_sources_once(tmp_path: Path) -> None:
    """CCP and CCP-person read the same photos: one decoded image, both sources' objects on it, one split side."""
    root = tmp_path / "ccp"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k in range(6):
        labels = np.zeros((40, 30), np.uint8)
        labels[5:20, 5:25] = 1
        labels[20:35, 8:22] = 2
        cv2.imwrite(str(root / "images" / f"{k:04d}.jpg"), np.full((40, 30, 3), 40 * k, np.uint8))
        cv2.imwrite(str(root / "masks" / f"{k:04d}.png"), labels)
    common = {"kind": "folder", "images_dir": "images", "masks_dir": "masks", "objects": "instances"}
    parts = open_dataset(root, name="parts", **common)
    whole = open_dataset(root, name="whole", union_only=True, **common)
    bank = build_object_bank([parts, whole], max_side=64, progress=False, names=["parts", "whole"])
    assert len(bank.images) == 6 and len(bank) == 18
    assert bank.image_names == [f"parts/{k:04d}.jpg" for k in range(6)]
    by_image: dict[int, list[int]] = {}
    for obj in bank.objects:
        by_image.setdefault(obj.image_index, []).append(obj.source)
    assert all(sorted(sources) == [0, 0, 1] for sources in by_image.values())
    train_idx, val_idx = bank.split(0.5)
    val_images = {bank.objects[i].image_index for i in val_idx}
    assert not val_images & {bank.objects[i].image_index for i in train_idx}


def test_views_keep_image_and_mask_aligned(folder: Path) -> None:
    bank = build_object_bank([open_dataset(folder)], max_side=96, progress=False)
    rng = np.random.default_rng(1)
    cfg = ViewConfig(size=48, hi_factor=2, brightness=0, contrast=0, saturation=0)
    for i in range(len(bank)):
        view = random_view(bank.image(i), bank.mask(i), bank.objects[i].bbox, rng, cfg)
        assert view.image.shape == (48, 48, 3) and view.image_hi.shape == (96, 96, 3)
        inner = cv2.erode(view.mask_hi.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        outer = ~cv2.dilate(view.mask_hi.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        outer &= view.image_hi.sum(axis=2) > 0  # skip zero padding outside the photo
        assert inner.any()
        red, blue = view.image_hi[..., 0].astype(int), view.image_hi[..., 2].astype(int)
        assert (red[inner] > blue[inner]).mean() > 0.98
        assert (blue[outer] > red[outer]).mean() > 0.98


def test_native_scale_views_keep_the_image_resolution() -> None:
    """``native_scale`` views cut size·hi_factor source pixels: one view pixel per image pixel (NTClick's HRR)."""
    height, width = 300, 420
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :, 0] = (np.arange(width) % 200)[None, :]  # red = column index mod 200
    image[:, :, 1] = (np.arange(height) % 200)[:, None]  # green = row index mod 200
    mask = np.zeros((height, width), bool)
    mask[100:200, 150:300] = True
    rng = np.random.default_rng(0)
    cfg = ViewConfig(size=64, hi_factor=2, native_scale=1.0, flip=False, brightness=0, contrast=0, saturation=0)
    for _ in range(5):
        view = random_view(image, mask, (150, 100, 300, 200), rng, cfg)
        assert view.image_hi.shape == (128, 128, 3)
        dx = np.diff(view.image_hi[:, :, 0].astype(int), axis=1)
        dy = np.diff(view.image_hi[:, :, 1].astype(int), axis=0)
        assert np.median(dx) == 1 and np.median(dy) == 1  # no zoom: neighbours are neighbouring source pixels
        assert view.mask_hi.any()
    # the default views zoom: a whole-object crop of this 150-pixel-wide object is not at scale 1
    zoomed = random_view(image, mask, (150, 100, 300, 200), np.random.default_rng(1),
                         ViewConfig(size=64, hi_factor=2, object_centric=1.0, flip=False, brightness=0, contrast=0,
                                    saturation=0))
    assert np.median(np.diff(zoomed.image_hi[:, :, 0].astype(int), axis=1)) > 1


def test_click_simulation_respects_the_mask() -> None:
    rng = np.random.default_rng(0)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 20:44] = True
    cfg = ClickSimConfig(tolerant_probability=1.0)
    for _ in range(20):
        clicks = sample_initial_clicks(mask, rng, cfg)
        assert clicks[0].kind is ClickKind.POSITIVE
        for c in clicks:
            r, col = c.pixel
            if c.kind is ClickKind.POSITIVE:
                assert mask[r, col]
            elif c.kind is ClickKind.NEGATIVE:
                assert not mask[r, col]
        assert any(c.kind is ClickKind.TOLERANT for c in clicks)
    pred = mask.copy()
    pred[16:48, 20:30] = False  # a false-negative strip
    click = next_training_click(mask, pred, [], rng)
    assert click is not None and click.is_positive and mask[click.pixel] and not pred[click.pixel]
    assert next_training_click(mask, mask, [], rng) is None
    corrupted = corrupt_mask(mask, rng)
    assert corrupted.shape == mask.shape and corrupted.dtype == bool


def test_losses() -> None:
    target = torch.zeros(2, 1, 32, 32)
    target[:, :, 8:24, 8:24] = 1
    good = (target * 2 - 1) * 8
    bad = -good
    assert normalized_focal_loss(good, target) < 0.01 < normalized_focal_loss(bad, target)
    assert boundary_weighted_nfl(good, target) < boundary_weighted_nfl(bad, target)
    edge = boundary_map(target, 1)
    assert edge[0, 0, 16, 16] == 0 and edge[0, 0, 8, 16] == 1 and edge[0, 0, 0, 0] == 0


def _tiny_config(tmp_path: Path, folder: Path, steps: int) -> TrainConfig:
    return TrainConfig.from_dict({
        "run_dir": str(tmp_path / "run"),
        "model": {"arch": "focalclick", "head_channels": 16, "refiner_channels": 8},
        "pretrained": "none",
        "data": {"sources": [str(folder)], "weights": [1.0], "bank": str(tmp_path / "bank.npz"), "max_side": 96,
                 "val_fraction": 0.3},
        "steps": steps, "batch_size": 2, "size": 64, "warmup_steps": 1, "threads": 1,
        "log_every": 1, "checkpoint_every": 2, "val_every": 2, "val_objects": 2, "val_clicks": 2,
        "focalclick": {"refiner_size": 32},
    })


def test_train_resume_and_load_checkpoint(folder: Path, tmp_path: Path) -> None:
    cfg = _tiny_config(tmp_path, folder, steps=2)
    run_dir = train(cfg, progress=False)
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in records) and any("val_miou@1" in r for r in records)
    with pytest.raises(finecut.FinecutError, match="--resume"):
        train(cfg, progress=False)
    cfg.steps = 3
    train(cfg, resume=True, progress=False)
    doc = json.loads((run_dir / "last.json").read_text())
    assert doc["training"]["step"] == 3 and doc["model"]["arch"] == "focalclick" and doc["engine"] == "focalclick"
    events = [r for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "event" in r
              and r["event"] in ("started", "resumed")]
    assert [(e["event"], e["step"], e["config"]["steps"]) for e in events] == [("started", 0, 2), ("resumed", 2, 3)]
    engine = finecut.load_model(run_dir / "last.json")
    predictor = finecut.Predictor(engine)
    image = open_dataset(folder)[0].image
    predictor.set_image(image)
    first = predictor.predict(clicks=[finecut.Click(40, 40)])
    second = predictor.predict(clicks=[finecut.Click(40, 40), finecut.Click(5, 5, "negative")], previous=first)
    assert second.probs.shape == image.shape[:2] and second.mask.dtype == bool
    assert 0.0 <= second.probs.min() and second.probs.max() <= 1.0


def test_corrupt_checkpoint_gives_clear_error(folder: Path, tmp_path: Path) -> None:
    run_dir = train(_tiny_config(tmp_path, folder, steps=1), progress=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(run_dir / "last.json", broken / "m.json")
    (broken / "m.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(finecut.FinecutError, match="corrupt checkpoint weights"):
        finecut.load_model(broken / "m.json")
    (broken / "m.json").write_text("{not json")
    with pytest.raises(finecut.FinecutError, match="corrupt checkpoint config"):
        finecut.load_model(broken / "m.json")


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
                    reason="torchrun not installed")
def test_ddp_two_cpu_processes_on_gloo(folder: Path, tmp_path: Path) -> None:
    cfg = _tiny_config(tmp_path, folder, steps=2)
    config_path = tmp_path / "tiny.toml"
    data = cfg.data
    config_path.write_text(
        f'run_dir = "{cfg.run_dir}"\npretrained = "none"\nsteps = 2\nbatch_size = 2\nsize = 64\n'
        "warmup_steps = 1\nthreads = 1\nlog_every = 1\ncheckpoint_every = 2\nval_every = 100\n"
        "[focalclick]\nrefiner_size = 32\n"
        '[model]\narch = "focalclick"\nhead_channels = 16\nrefiner_channels = 8\n'
        f'[data]\nsources = ["{data.sources[0]}"]\nweights = [1.0]\nbank = "{data.bank}"\nmax_side = 96\n'
        "val_fraction = 0.3\n"
    )
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", "29517", "-m", "finecut.cli", "train", str(config_path),
         "--no-progress"],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads((Path(cfg.run_dir) / "last.json").read_text())
    assert doc["training"]["step"] == 2 and doc["training"]["samples_seen"] == 2 * 2 * 2


def test_validation_on_held_out_bank_images(folder: Path, tmp_path: Path) -> None:
    from finecut.evaluation.config import EvalConfig
    from finecut.training.validation import evaluate_on_validation, validation_samples

    cfg = _tiny_config(tmp_path, folder, steps=1)
    run_dir = train(cfg, progress=False)
    bank = ObjectBank.load(cfg.data.bank)
    samples = validation_samples(bank, 0.5, count=10)
    _, val_idx = bank.split(0.5)
    assert len(samples) == len(val_idx) > 0
    assert samples[0].gt.shape == samples[0].image.shape[:2] and set(np.unique(samples[0].gt)) <= {0, 1}
    result = evaluate_on_validation(finecut.load_model(run_dir / "last.json"), bank, 0.5, 10, tmp_path / "val",
                                    config=EvalConfig(max_clicks=3), progress=False)
    assert result.summary["num_samples"] == len(val_idx) and (tmp_path / "val" / "summary.json").is_file()
    # restricted to some training sets: only their held-out objects, named after them; unknown names refused
    source = bank.sources[bank.objects[int(val_idx[0])].source]
    only = validation_samples(bank, 0.5, count=10, sources=[source])
    wanted = [i for i in val_idx if bank.sources[bank.objects[int(i)].source] == source]
    assert only.name == f"train-val[{source}]" and list(only.indices) == sorted(int(i) for i in wanted)
    with pytest.raises(FinecutError, match="not in the object bank"):
        validation_samples(bank, 0.5, count=10, sources=["NoSuchSet"])


def _hand_written_validation(net: torch.nn.Module, samples: list, clicks: int, radius: float) -> dict[str, float]:
    """The trainer's own click loop before it went through the evaluator's (kept here as the reference)."""
    from finecut.evaluation.protocol import iou, next_click, noc
    from finecut.training.batch import prompt_maps, to_tensor_images

    all_ious = []
    with torch.no_grad():
        for sample in samples:
            gt = sample.gt
            image = to_tensor_images(sample.image[None])
            pred = np.zeros(gt.shape, bool)
            previous = torch.zeros(1, 1, *gt.shape)
            done: list = []
            ious = []
            for _ in range(clicks):
                done.append(next_click(gt, pred, done))
                probs = torch.sigmoid(net(image, prompt_maps([done], previous, radius, 4))["logits"])
                pred = probs[0, 0].numpy() > 0.49
                previous = probs
                ious.append(iou(gt, pred))
            all_ious.append(ious)
    arr = np.asarray(all_ious)
    return {"val_miou@1": float(arr[:, 0].mean()), "val_miou@3": float(arr[:, 2].mean()),
            "val_miou@5": float(arr[:, 4].mean()),
            f"val_noc85@{clicks}": float(np.mean([noc(r, 0.85, clicks) for r in arr])),
            f"val_noc90@{clicks}": float(np.mean([noc(r, 0.90, clicks) for r in arr]))}


def test_in_training_validation_runs_the_evaluator_loop_with_the_old_numbers(folder: Path, tmp_path: Path) -> None:
    """Held-out validation goes through finecut.evaluation's per-sample loop; its numbers are those of the trainer's
    former hand-written loop (to the evaluator's 6-digit IoUs), and the global random state training uses is kept."""
    from finecut.models.checkpoint import load_checkpoint
    from finecut.training.focalclick import FOCALCLICK, segmentor_of
    from finecut.training.validation import held_out_views, in_training_indices, validate_in_training

    cfg = _tiny_config(tmp_path, folder, steps=1)
    run_dir = train(cfg, progress=False)
    net = load_checkpoint(run_dir / "last.json")[0].eval()
    bank = ObjectBank.load(cfg.data.bank)
    indices = in_training_indices(bank, 1.0, 6)  # every object
    samples = held_out_views(bank, indices, cfg.size)
    assert len(samples) == 6 and samples[0].image.shape == (64, 64, 3) and samples[0].gt.dtype == np.int8
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    ours = validate_in_training(FOCALCLICK.validation_engine(net, cfg), samples, 6)
    assert torch.equal(torch.random.get_rng_state(), state)  # the evaluator's per-sample seeding was undone
    reference = _hand_written_validation(segmentor_of(net), samples, 6, cfg.click_radius)
    assert ours.keys() == reference.keys()
    for key in ours:
        assert ours[key] == pytest.approx(reference[key], abs=1e-6), key


def test_validate_command_takes_inference_options_in_the_loader_syntax(folder: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from finecut.cli import main as cli_main

    cfg = _tiny_config(tmp_path, folder, steps=1)
    run_dir = train(cfg, progress=False)
    config_path = tmp_path / "tiny.toml"
    config_path.write_text(
        f'run_dir = "{cfg.run_dir}"\npretrained = "none"\n[model]\narch = "focalclick"\nhead_channels = 16\n'
        f'refiner_channels = 8\n[data]\nsources = ["{cfg.data.sources[0]}"]\nweights = [1.0]\n'
        f'bank = "{cfg.data.bank}"\nval_fraction = 0.3\n')
    checkpoint = run_dir / "last.json"
    assert cli_main(["train", str(config_path), "--validate", f"{checkpoint}:target_size=64", "--val-count", "2",
                     "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "validation (" in out.out and (run_dir / "validation" / "last-target_size64" / "summary.json").is_file()
    assert cli_main(["train", str(config_path), "--validate", str(checkpoint), "--option", "target_size=64",
                     "--val-count", "2", "--no-progress"]) == 0  # the deprecated spelling still works
    assert "deprecated" in capsys.readouterr().err
    assert cli_main(["train", str(config_path), "--validate", str(checkpoint), "--val-protocol", "box",
                     "--val-count", "2", "--no-progress"]) == 0  # one box per held-out object
    assert "box protocol" in capsys.readouterr().out
    summary = json.loads((run_dir / "validation" / "last-box" / "summary.json").read_text())
    assert summary["protocol"] == "box" and summary["num_samples"] == 2
    assert cli_main(["train", str(config_path), "--validate", str(checkpoint), "--val-protocol", "coarse",
                     "--val-count", "2", "--no-progress"]) == 0  # coarse masks from the 0.75-0.80 band
    config = json.loads((run_dir / "validation" / "last-coarse" / "config.json").read_text())
    assert config["protocol"]["coarse_band"] == [0.75, 0.8]
    dotted = tmp_path / "avg-0.7a-0.3b"  # a checkpoint name with a dot keeps it in the run folder and the row name
    for ext in (".json", ".safetensors"):
        shutil.copy(run_dir / f"last{ext}", f"{dotted}{ext}")
    assert cli_main(["train", str(config_path), "--validate", f"{dotted}:target_size=64", "--val-count", "2",
                     "--no-progress"]) == 0
    summary = json.loads((run_dir / "validation" / "avg-0.7a-0.3b-target_size64" / "summary.json").read_text())
    assert summary["model"] == "avg-0.7a-0.3b:target_size=64"
    assert cli_main(["train", str(config_path), "--validate", str(checkpoint), "--val-protocol", "nope",
                     "--no-progress"]) == 2 and "--val-protocol 'nope'" in capsys.readouterr().err
    assert cli_main(["train"]) == 2 and "a training CONFIG is needed" in capsys.readouterr().err


def test_held_out_scores_per_source_are_each_sources_own_summary() -> None:
    """The per-source breakdown of a validation run: each training set's samples summarised alone (the pooled score
    can hide where a model changed), in source-name order, and a Markdown row per source."""
    from finecut.evaluation.config import EvalConfig
    from finecut.evaluation.loop import SampleResult
    from finecut.training.validation import source_table, summaries_by_source

    def result(name: str, ious: list[float], noc90: int) -> SampleResult:
        return SampleResult(index=0, name=name, ious=ious, clicks=[], noc={"85": 1, "90": noc90, "95": 3},
                            seconds=0.1, set_image_seconds=0.0, size=(8, 8))

    config = EvalConfig(max_clicks=3)
    results = [result("ECSSD/1.jpg#0", [0.5, 0.95, 0.97], 2), result("COCO128/2.jpg#4", [0.2, 0.6, 0.8], 3),
               result("ECSSD/3.jpg#1", [0.9, 0.93, 0.96], 1), result("COCO128/2.jpg#5", [0.4, 0.7, 0.88], 3)]
    by_source = summaries_by_source(results, config)
    assert list(by_source) == ["COCO128", "ECSSD"]
    assert by_source["ECSSD"]["num_samples"] == 2 and by_source["ECSSD"]["noc"]["90"] == pytest.approx(1.5)
    assert by_source["COCO128"]["nof"]["90"] == 2 and by_source["ECSSD"]["nof"]["90"] == 0
    assert by_source["COCO128"]["miou"][0] == pytest.approx(0.3)
    table = source_table(by_source).splitlines()
    assert len(table) == 4 and table[2].startswith("| COCO128 | 2 | 1.00 | 3.00 | 2 | 30.0 |")
    assert table[3] == "| ECSSD | 2 | 1.00 | 1.50 | 0 | 70.0 | - |"  # 3 clicks: no mIoU@5
