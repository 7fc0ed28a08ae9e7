"""The trainer: iterative-click training of a FocalClick segmentor + refiner, single process or torchrun DDP.

Per step: draw a batch of object views and random clicks; with some probability run 1..N extra forward passes without
gradient, each adding the simulated user's next click and feeding the prediction back as the previous mask (RITM's
iterative training); then one forward/backward of the segmentor (normalized focal loss) and of the refiner on a focus
box (boundary-weighted NFL + BCE on its boundary head). Checkpoints (weights + JSON config) and the optimizer state are
written every ``checkpoint_every`` steps; ``resume`` continues from them.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm

from finecut.errors import FinecutError
from finecut.evaluation.protocol import iou, next_click, noc
from finecut.models.checkpoint import save_checkpoint
from finecut.models.registry import build_model
from finecut.models.roi_align import roi_align
from finecut.training.augment import ViewConfig, random_view
from finecut.training.batch import Batch, BatchSampler, prompt_maps, to_tensor_images
from finecut.training.clicks import ClickSimConfig, next_training_click
from finecut.training.config import TrainConfig
from finecut.training.focus import sample_focus_boxes
from finecut.training.losses import boundary_bce, boundary_weighted_nfl, normalized_focal_loss
from finecut.training.objects import ObjectBank, build_object_bank


class TrainingStep(nn.Module):
    """Segmentor + refiner forward and losses in one module, so DDP sees a single forward."""

    def __init__(self, net: nn.Module, refiner_size: int, hi_factor: int, refiner_weight: float) -> None:
        super().__init__()
        self.net = net
        self.refiner_size = refiner_size
        self.hi_factor = hi_factor
        self.refiner_weight = refiner_weight

    def forward(self, images: torch.Tensor, maps: torch.Tensor, masks: torch.Tensor, images_hi: torch.Tensor,
                masks_hi: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        seg = segmentor_of(self.net)(images, maps)
        loss_seg = normalized_focal_loss(seg["logits"], masks)
        refiner = getattr(self.net, "refiner", None)
        if refiner is None:  # a single-network model (SimpleClick): segmentation loss only
            zero = loss_seg.detach() * 0
            return {"loss": loss_seg, "seg": loss_seg.detach(), "refine": zero, "boundary": zero,
                    "logits": seg["logits"].detach()}
        r = self.refiner_size
        crop_img = roi_align(images_hi, boxes, (r, r), spatial_scale=self.hi_factor)
        crop_maps = roi_align(maps, boxes, (r, r))
        crop_logits = roi_align(seg["logits"], boxes, (r, r))
        feat_size = max(1, r // 2)
        stride = images.shape[-1] / seg["features"].shape[-1]
        crop_feats = roi_align(seg["features"], boxes, (feat_size, feat_size), spatial_scale=1.0 / stride)
        crop_gt = (roi_align(masks_hi, boxes, (r, r), spatial_scale=self.hi_factor) > 0.5).float()
        ref = refiner(crop_img, crop_maps, crop_logits, crop_feats)
        loss_ref = boundary_weighted_nfl(ref["logits"], crop_gt)
        loss_bnd = boundary_bce(ref["boundary"], crop_gt)
        total = loss_seg + self.refiner_weight * (loss_ref + loss_bnd)
        return {"loss": total, "seg": loss_seg.detach(), "refine": loss_ref.detach(), "boundary": loss_bnd.detach(),
                "logits": seg["logits"].detach()}


def segmentor_of(net: nn.Module) -> nn.Module:
    """The network that maps (image, prompt maps) to logits: FocalClick's segmentor, or the net itself."""
    return getattr(net, "segmentor", net)


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed() -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size())


def load_or_build_bank(cfg: TrainConfig, info: DistInfo) -> ObjectBank:
    path = Path(cfg.data.bank)
    if not path.exists():
        if info.main:
            from finecut.datasets import default_data_root, open_dataset

            root = Path(cfg.data.data_root) if cfg.data.data_root else default_data_root()
            datasets = [open_dataset(name, root=root, **cfg.data.options.get(name, {})) for name in cfg.data.sources]
            bank = build_object_bank(datasets, cfg.data.max_side, cfg.data.min_area_fraction,
                                     cfg.data.max_area_fraction, names=cfg.data.sources)
            bank.save(path)
        if info.world > 1:
            dist.barrier()
    bank = ObjectBank.load(path)
    if bank.sources != list(cfg.data.sources):
        raise FinecutError(f"{path}: object bank holds {bank.sources}, config asks for {cfg.data.sources}; "
                           "delete the bank file or point [data].bank elsewhere")
    return bank


def _param_groups(net: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    backbone, rest = [], []
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        (backbone if ".backbone." in f".{name}" else rest).append(p)
    return [{"params": backbone, "lr_mult": cfg.backbone_lr_mult}, {"params": rest, "lr_mult": 1.0}]


def init_checkpoint_path(cfg: TrainConfig) -> Path:
    """Where ``cfg.init_checkpoint`` points: a shipped model's name (``focalclick-lite0``) or a checkpoint path."""
    from finecut.registry import shipped_checkpoints

    return shipped_checkpoints().get(cfg.init_checkpoint, Path(cfg.init_checkpoint))


def load_initial_weights(net: nn.Module, cfg: TrainConfig) -> None:
    """Start every weight from ``cfg.init_checkpoint`` (a warm restart from a trained checkpoint), if one is set.

    The checkpoint's architecture config must equal ``cfg.model``; it is read with the checks of
    :func:`finecut.models.checkpoint.load_checkpoint`.
    """
    if not cfg.init_checkpoint:
        return
    from finecut.models.checkpoint import load_checkpoint, read_checkpoint_config

    path = init_checkpoint_path(cfg)
    doc = read_checkpoint_config(path)
    if doc["model"] != cfg.model:
        raise FinecutError(f"init_checkpoint {path}: its model config {doc['model']} differs from [model] "
                           f"{cfg.model}")
    net.load_state_dict(load_checkpoint(path)[0].state_dict(), strict=True)


class _DirectBatches:
    """Batches drawn in the training process itself, at the schedule's crop size."""

    def __init__(self, sampler: BatchSampler, cfg: TrainConfig) -> None:
        self.sampler, self.cfg = sampler, cfg

    def __call__(self, step: int) -> Batch:
        return self.sampler.sample(self.cfg.batch_size, self.cfg.size_at(step))

    def close(self) -> None:
        """Nothing to release (the prefetching source stops its worker here)."""


class _PrefetchedBatches:
    """Batches drawn ``cfg.prefetch`` steps ahead by a worker process (:mod:`finecut.training.prefetch`)."""

    def __init__(self, make_sampler: Any, cfg: TrainConfig, rank: int, step: int) -> None:
        from finecut.training.prefetch import PrefetchSampler

        self.source = PrefetchSampler(make_sampler, [cfg.seed, rank, step, 1], cfg.prefetch, cfg.batch_size,
                                      cfg.size_at, first=step)

    def __call__(self, step: int) -> Batch:
        return self.source.sample()

    def close(self) -> None:
        self.source.close()


def batch_source(make_sampler: Any, cfg: TrainConfig, rng: np.random.Generator, rank: int, step: int) -> Any:
    """A callable ``step -> Batch``: in-process sampling, or a prefetching worker when ``cfg.prefetch > 0``."""
    if cfg.prefetch > 0:
        return _PrefetchedBatches(make_sampler, cfg, rank, step)
    return _DirectBatches(make_sampler(rng), cfg)


@dataclass
class ResumeState:
    step: int = 0
    train_seconds: float = 0.0
    samples_seen: int = 0


def load_backbone_weights(net: nn.Module, cfg: TrainConfig) -> None:
    """Initialise the backbone from ``cfg.pretrained`` ("imagenet", a path, or "none")."""
    if cfg.pretrained in ("none", ""):
        return
    backbone = getattr(segmentor_of(net), "backbone", None)
    if backbone is None or not hasattr(backbone, "load_pretrained"):
        raise FinecutError(f"{cfg.model.get('arch')}: no backbone weights to load; set pretrained = \"none\"")
    backbone.load_pretrained(None if cfg.pretrained == "imagenet" else cfg.pretrained)


def resume_from(run_dir: Path, net: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> ResumeState:
    """Load the last checkpoint's weights and the optimizer state of ``run_dir`` (nothing if there is none)."""
    state_path = run_dir / "trainer_state.pt"
    if not state_path.exists():
        return ResumeState()
    from safetensors.torch import load_file

    state = torch.load(state_path, map_location="cpu", weights_only=False)
    net.load_state_dict(load_file(str(run_dir / "last.safetensors")))
    optimizer.load_state_dict(state["optimizer"])
    step = int(state["step"])
    return ResumeState(step, float(state.get("train_seconds", 0.0)),
                       int(state.get("samples_seen", step * cfg.batch_size)))


def append_log(log_path: Path, record: dict[str, Any]) -> None:
    """Append one JSON record to a run's ``log.jsonl``."""
    with log_path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")


def log_start(log_path: Path, step: int, cfg: TrainConfig, processes: int = 1) -> None:
    """Append a start/resume event with the full config, so a run resumed with changed settings stays traceable."""
    append_log(log_path, {"step": step, "event": "resumed" if step else "started", "processes": processes,
                          "host": platform.node(), "config": cfg.to_dict()})


def log_stop(log_path: Path, step: int, reason: str) -> None:
    append_log(log_path, {"step": step, "event": f"stopped ({reason})", "host": platform.node()})


def progress_record(step: int, lr: float, running: dict[str, float], samples: int, start: float,
                    elapsed_before: float) -> dict[str, Any]:
    """The periodic ``log.jsonl`` line: smoothed losses, this run's throughput and the total training time."""
    now = time.time()
    return {"step": step, "lr": lr, **{k: round(v, 5) for k, v in running.items()},
            "samples_per_s": round(samples / (now - start), 2), "train_seconds": round(elapsed_before + now - start, 1)}


def update_running(running: dict[str, float], values: dict[str, torch.Tensor]) -> None:
    """Exponential moving averages (0.95) of the step's loss terms."""
    for key, value in values.items():
        v = float(value.detach())
        running[key] = running[key] * 0.95 + v * 0.05 if key in running else v


def optimizer_step(net: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, lr: float) -> None:
    """Set the scheduled lr (times each group's ``lr_mult``), backpropagate, clip gradients at norm 5, step."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
    optimizer.step()


def save_run_state(run_dir: Path, net: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig, step: int,
                   seconds: float, samples: int, engine: str, extra: dict[str, Any] | None = None) -> None:
    """Write ``last.{json,safetensors}`` (config + training record) and ``trainer_state.pt`` (optimizer, counters)."""
    meta = {"engine": engine, "training": {"config": cfg.to_dict(), "step": step, "samples_seen": samples,
                                           "train_seconds": round(seconds, 1), **(extra or {})}}
    save_checkpoint(run_dir / "last", net, cfg.model, meta)
    tmp = run_dir / ".trainer_state.pt.tmp"
    torch.save({"optimizer": optimizer.state_dict(), "step": step, "train_seconds": seconds,
                "samples_seen": samples}, tmp)
    os.replace(tmp, run_dir / "trainer_state.pt")


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    floor = cfg.min_lr_fraction
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def iterate_clicks(net: nn.Module, batch: Batch, num_iters: int, cfg: TrainConfig, rng: np.random.Generator,
                   channels: int) -> torch.Tensor:
    """RITM iterative training: extra no-grad passes, each adding a click on the current error. Returns prev mask."""
    previous = batch.previous
    for _ in range(num_iters):
        with torch.no_grad():
            maps = prompt_maps(batch.clicks, previous, cfg.click_radius, channels, cfg.memory_format)
            probs = torch.sigmoid(segmentor_of(net)(batch.images, maps)["logits"])
        preds = (probs[:, 0] > 0.49).numpy()
        for i in range(len(batch.clicks)):
            click = next_training_click(batch.masks_np[i], preds[i], batch.clicks[i], rng)
            if click is not None:
                batch.clicks[i].append(click)
        previous = probs
    return previous


@torch.no_grad()
def validate(net: nn.Module, bank: ObjectBank, indices: np.ndarray, cfg: TrainConfig) -> dict[str, float]:
    """Standard-protocol clicks on fixed object-centred validation views, segmentor only, no zoom-in."""
    net.eval()
    rng = np.random.default_rng(12345)
    view_cfg = ViewConfig(size=cfg.size, hi_factor=1, object_centric=1.0, expand_range=(1.4, 1.4), flip=False,
                          brightness=0, contrast=0, saturation=0)
    channels = net.prompt_channels
    all_ious = []
    for index in indices:
        obj = bank.objects[index]
        view = random_view(bank.image(index), bank.mask(index), obj.bbox, rng, view_cfg)
        gt = view.mask.astype(np.int8)
        image = to_tensor_images(view.image[None])
        pred = np.zeros_like(view.mask)
        previous = torch.zeros(1, 1, cfg.size, cfg.size)
        clicks: list = []
        ious = []
        for _ in range(cfg.val_clicks):
            clicks.append(next_click(gt, pred, clicks))
            maps = prompt_maps([clicks], previous, cfg.click_radius, channels)
            probs = torch.sigmoid(segmentor_of(net)(image, maps)["logits"])
            pred = probs[0, 0].numpy() > 0.49
            previous = probs
            ious.append(iou(gt, pred))
        all_ious.append(ious)
    net.train()
    arr = np.asarray(all_ious)
    return {
        "val_miou@1": float(arr[:, 0].mean()),
        "val_miou@3": float(arr[:, min(2, arr.shape[1] - 1)].mean()),
        "val_miou@5": float(arr[:, min(4, arr.shape[1] - 1)].mean()),
        f"val_noc85@{cfg.val_clicks}": float(np.mean([noc(r, 0.85, cfg.val_clicks) for r in arr])),
        f"val_noc90@{cfg.val_clicks}": float(np.mean([noc(r, 0.90, cfg.val_clicks) for r in arr])),
    }


def train(cfg: TrainConfig, resume: bool = False, max_minutes: float | None = None, progress: bool = True) -> Path:
    """Run (or resume) training; returns the run directory. Stops after ``steps`` or ``max_minutes``."""
    if cfg.model.get("arch") in ("ntclick_ecp", "ntclick_hrr"):  # NTClick's networks have their own loop
        from finecut.training.ntclick import train_ntclick

        return train_ntclick(cfg, resume=resume, max_minutes=max_minutes, progress=progress)
    info = _init_distributed()
    torch.set_num_threads(max(1, cfg.threads))
    torch.set_flush_denormal(True)  # denormal floats slow CPU convolutions down several times
    run_dir = Path(cfg.run_dir)
    state_path = run_dir / "trainer_state.pt"
    if info.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume and state_path.exists():
            raise FinecutError(f"{run_dir}: holds a previous run (pass --resume to continue it, or pick another run_dir)")
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    torch.manual_seed(cfg.seed + info.rank)
    rng = np.random.default_rng(cfg.seed * 1000 + info.rank)

    bank = load_or_build_bank(cfg, info)
    train_idx, val_idx = bank.split(cfg.data.val_fraction)
    val_rng = np.random.default_rng(7)
    val_idx = val_rng.choice(val_idx, size=min(cfg.val_objects, len(val_idx)), replace=False) if len(val_idx) else val_idx

    net = build_model(cfg.model)
    load_backbone_weights(net, cfg)
    load_initial_weights(net, cfg)
    net = net.to(memory_format=cfg.memory_format)
    if cfg.compile:
        for module in (segmentor_of(net), getattr(net, "refiner", None)):
            if module is not None:
                module.compile()
    net.train()
    groups = _param_groups(net, cfg)
    optimizer = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)

    resumed = resume_from(run_dir, net, optimizer, cfg) if resume else ResumeState()
    step, elapsed_before, samples_before = resumed.step, resumed.train_seconds, resumed.samples_seen
    if step:
        rng = np.random.default_rng([cfg.seed, info.rank, step])
        torch.manual_seed(cfg.seed + info.rank + step)

    # the number of iterative passes per step has its own stream, so runs that differ in sampling draw the same sequence
    iter_rng = np.random.default_rng([cfg.seed, info.rank, step, 2])
    step_module = TrainingStep(net, cfg.refiner_size, cfg.hi_factor, cfg.refiner_loss_weight)
    model_ddp: nn.Module = step_module
    if info.world > 1:
        model_ddp = nn.parallel.DistributedDataParallel(step_module, find_unused_parameters=False)

    weights = {i: float(w) for i, w in enumerate(cfg.data.weights)}

    def make_sampler(sampler_rng: np.random.Generator) -> BatchSampler:
        return BatchSampler(bank, train_idx, weights, ViewConfig(size=cfg.size, hi_factor=cfg.hi_factor),
                            ClickSimConfig(), cfg.prior_mask_probability, sampler_rng, cfg.data.synthetic_thin)

    next_batch = batch_source(make_sampler, cfg, rng, info.rank, step)
    history = inherited_runs(cfg) if info.main else []  # read once; every checkpoint records it
    channels = net.prompt_channels
    log_path = run_dir / "log.jsonl"
    if info.main:
        log_start(log_path, step, cfg, info.world)
    start = time.time()
    samples_this_run = 0
    bar = tqdm(total=cfg.steps, initial=step, desc="train", disable=not (progress and info.main), dynamic_ncols=True)
    running: dict[str, float] = {}
    last_val: dict[str, float] = {}
    stop_reason = "steps"
    while step < cfg.steps:
        if max_minutes is not None and (time.time() - start) / 60 >= max_minutes:
            stop_reason = "time"
            break
        lr = lr_at(step, cfg)
        batch = next_batch(step)
        batch.images = batch.images.contiguous(memory_format=cfg.memory_format)  # no-op unless NCHW is asked for
        batch.images_hi = batch.images_hi.contiguous(memory_format=cfg.memory_format)
        num_iters = (int(iter_rng.integers(1, cfg.max_iterative_clicks + 1))
                     if iter_rng.random() < cfg.iterative_probability else 0)
        previous = iterate_clicks(net, batch, num_iters, cfg, rng, channels)
        maps = prompt_maps(batch.clicks, previous, cfg.click_radius, channels, cfg.memory_format)
        preds_np = (batch.previous[:, 0].numpy() > 0.5) if num_iters == 0 else (previous[:, 0].numpy() > 0.49)
        boxes = sample_focus_boxes(batch.masks_np, preds_np, rng)
        out = model_ddp(batch.images, maps, batch.masks, batch.images_hi, batch.masks_hi, boxes)
        optimizer_step(net, optimizer, out["loss"], lr)
        step += 1
        samples_this_run += cfg.batch_size * info.world
        update_running(running, {key: out[key] for key in ("loss", "seg", "refine", "boundary")})
        bar.update(1)
        if info.main:
            bar.set_postfix(loss=f"{running['loss']:.3f}", sps=f"{samples_this_run / (time.time() - start):.1f}")
            if step % cfg.log_every == 0:
                append_log(log_path, progress_record(step, lr, running, samples_this_run, start, elapsed_before))
            if step % cfg.val_every == 0 and len(val_idx):
                last_val = validate(net, bank, val_idx, cfg)
                append_log(log_path, {"step": step, **{k: round(v, 4) for k, v in last_val.items()}})
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                _checkpoint(run_dir, net, optimizer, cfg, step, elapsed_before + time.time() - start,
                            samples_before + samples_this_run, info, last_val, history)
    bar.close()
    next_batch.close()
    if info.main:
        _checkpoint(run_dir, net, optimizer, cfg, step, elapsed_before + time.time() - start,
                    samples_before + samples_this_run, info, last_val, history)
        log_stop(log_path, step, stop_reason)
    if info.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return run_dir


def inherited_runs(cfg: TrainConfig) -> list[dict[str, Any]]:
    """The runs ``cfg.init_checkpoint`` went through, itself last (empty without a warm start)."""
    if not cfg.init_checkpoint:
        return []
    from finecut.models.checkpoint import read_checkpoint_config
    from finecut.training.history import inherited_history

    return inherited_history(read_checkpoint_config(init_checkpoint_path(cfg)), cfg.init_checkpoint)


def run_lineage(run_dir: Path, cfg: TrainConfig, history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``history`` (the runs of ``cfg.init_checkpoint``, oldest first; read from it unless given) and
    ``validation_curve`` (this run's held-out records) for the checkpoint's training record
    (:mod:`finecut.training.history`)."""
    from finecut.training.history import validation_curve

    out: dict[str, Any] = {"validation_curve": validation_curve(run_dir / "log.jsonl")}
    history = inherited_runs(cfg) if history is None else history
    if history:
        out["history"] = history
    return out


def _checkpoint(run_dir: Path, net: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig, step: int,
                seconds: float, samples: int, info: DistInfo, last_val: dict[str, float],
                history: list[dict[str, Any]]) -> None:
    engine = "focalclick" if hasattr(net, "refiner") else "simpleclick"
    save_run_state(run_dir, net, optimizer, cfg, step, seconds, samples, engine,
                   {"processes": info.world, "validation": last_val, **run_lineage(run_dir, cfg, history)})
