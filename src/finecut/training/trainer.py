"""The training loop: one for every method, single process or torchrun DDP (methods that allow it).

``finecut train CONFIG`` runs :func:`train`. The loop owns what every run shares — the run directory and its files
(``config.json``, ``log.jsonl``, ``last.json`` + ``last.safetensors``, ``trainer_state.pt``), seeding, the object
bank and its held-out split, building and initialising the network (backbone weights, warm start), the optimizer and
its warm-up + cosine schedule, gradient clipping, resume, the time budget, logging, checkpoints and held-out
validation through the evaluator's click loop (:func:`finecut.training.validation.validate_in_training`). The method,
chosen by ``[model].arch`` from :data:`METHODS` (:data:`finecut.training.config.METHOD_OF_ARCH`), supplies the
per-step function (batch, forward passes, losses), the engine its checkpoints open as, and the engine validation
drives, if any (:class:`finecut.training.method.TrainingMethod`).

Checkpoints (weights + JSON config) and the optimizer state are written every ``checkpoint_every`` steps and when
training stops; ``resume`` continues from them (the sample streams are re-seeded from the step).
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
from finecut.models.checkpoint import save_checkpoint
from finecut.models.registry import build_model
from finecut.training.config import TrainConfig
from finecut.training.focalclick import FOCALCLICK
from finecut.training.focalclick_xl import FOCALCLICK_XL
from finecut.training.mae import MAE
from finecut.training.method import RunSetup, TrainingMethod
from finecut.training.ntclick import NTCLICK_ECP, NTCLICK_HRR
from finecut.training.objects import ObjectBank, build_object_bank

#: The training methods by name (``TrainConfig.method``, from ``[model].arch``).
METHODS: dict[str, TrainingMethod] = {m.name: m for m in (FOCALCLICK, NTCLICK_ECP, NTCLICK_HRR, FOCALCLICK_XL,
                                                             MAE)}


def method_for(cfg: TrainConfig) -> TrainingMethod:
    """The training method of ``cfg`` (:data:`METHODS`)."""
    return METHODS[cfg.method]


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(method: TrainingMethod) -> DistInfo:
    """This process's rank and the world size (a gloo process group under torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not method.distributed:
        raise FinecutError(f"{method.name} training runs in a single process; launch it without torchrun")
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size())


def training_device(cfg: TrainConfig, info: DistInfo) -> torch.device:
    """The device ``cfg.device`` names, checked: a CUDA device must exist and trains in one process (no torchrun).
    On CUDA, matrix products and convolutions use TF32 and cuDNN picks its fastest kernels."""
    device = torch.device(cfg.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FinecutError(f"device = {cfg.device!r}, but PyTorch sees no CUDA device here "
                               f"(torch {torch.__version__}); train with device = \"cpu\"")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise FinecutError(f"device = {cfg.device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
        if info.world > 1:
            raise FinecutError(f"device = {cfg.device!r}: GPU training runs in one process; launch it without "
                               "torchrun")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return device


def load_or_build_bank(cfg: TrainConfig, info: DistInfo, progress: bool = True) -> ObjectBank:
    """The config's object bank, built (on the main process) and saved first if its file does not exist yet."""
    path = Path(cfg.data.bank)
    if not path.exists():
        if info.main:
            from finecut.datasets import default_data_root, open_dataset

            root = Path(cfg.data.data_root) if cfg.data.data_root else default_data_root()
            datasets = [open_dataset(name, root=root, **cfg.data.options.get(name, {})) for name in cfg.data.sources]
            bank = build_object_bank(datasets, cfg.data.max_side, cfg.data.min_area_fraction,
                                     cfg.data.max_area_fraction, names=cfg.data.sources, progress=progress)
            bank.save(path)
        if info.world > 1:
            dist.barrier()
    bank = ObjectBank.load(path)
    if bank.sources != list(cfg.data.sources):
        raise FinecutError(f"{path}: object bank holds {bank.sources}, config asks for {cfg.data.sources}; "
                           "delete the bank file or point [data].bank elsewhere")
    return bank


def param_groups(net: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Adam's parameter groups: the backbone's (lr × ``backbone_lr_mult``) and the rest."""
    backbone, rest = [], []
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        (backbone if ".backbone." in f".{name}" else rest).append(p)
    return [{"params": backbone, "lr_mult": cfg.backbone_lr_mult}, {"params": rest, "lr_mult": 1.0}]


def init_checkpoint_path(cfg: TrainConfig) -> Path:
    """Where ``cfg.init_checkpoint`` points: a shipped model's name (``focalclick-lite0``) or a checkpoint path."""
    return init_checkpoint_path_of(cfg.init_checkpoint)


#: Architecture options a warm start may switch on: the run's network has the option set where the checkpoint's has it
#: 0 (or absent), and the weights under the listed key prefix, which the option adds, keep their initialisation (zero:
#: the network starts as the checkpoint's) — NTClick's HRR gaining its click input, FocalClick-XL's Detail-Net gaining
#: the primitive probabilities as an input. A dotted option names a key of a nested section (``detail_net``).
#: (``detail_net.residual`` adds no weights; the FocalClick-XL method zeroes the classifier it re-purposes.)
GROWN_OPTIONS: dict[str, str] = {"click_channels": "click_embed.", "detail_net.primitive_input": "detail.primitive.",
                                 "detail_net.residual": "detail.classifier."}


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``config`` with nested sections as dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def grown_prefixes(source: dict[str, Any], target: dict[str, Any]) -> list[str] | None:
    """The key prefixes of the weights a warm start from a checkpoint of architecture config ``source`` leaves at
    their initialisation in a network of config ``target`` ([] when the two are equal), or None when they differ in
    anything but the :data:`GROWN_OPTIONS` switched on."""
    source, target = _flat(source), _flat(target)
    switched = [option for option in GROWN_OPTIONS if not source.get(option, 0) and target.get(option, 0)]

    def rest(config: dict[str, Any]) -> dict[str, Any]:  # the config without the switched and the off options
        return {k: v for k, v in config.items() if k not in switched and not (k in GROWN_OPTIONS and not v)}

    return [GROWN_OPTIONS[option] for option in switched] if rest(source) == rest(target) else None


def load_initial_weights(net: nn.Module, cfg: TrainConfig) -> None:
    """Start every weight from ``cfg.init_checkpoint`` (a warm restart from a trained checkpoint), if one is set.

    The checkpoint's architecture config must equal ``cfg.model``, up to a :data:`GROWN_OPTIONS` option the run
    switches on (whose new weights keep their initialisation); it is read with the checks of
    :func:`finecut.models.checkpoint.load_checkpoint`.
    """
    if not cfg.init_checkpoint:
        return
    from finecut.models.checkpoint import load_checkpoint, read_checkpoint_config

    path = init_checkpoint_path(cfg)
    doc = read_checkpoint_config(path)
    part = assembled_part(doc, cfg)
    grown = None if part is not None else grown_prefixes(doc["model"], cfg.model)
    if part is None and grown is None:
        raise FinecutError(f"init_checkpoint {path}: its model config {doc['model']} differs from [model] "
                           f"{cfg.model}")
    source = load_checkpoint(path)[0]
    if part is not None:  # one network of an assembled checkpoint: same class, same built config
        source = getattr(source, part)
        grown = (grown_prefixes(source.arch_config(), net.arch_config())
                 if type(source) is type(net) and hasattr(net, "arch_config") else None)
        if grown is None:
            raise FinecutError(f"init_checkpoint {path}: its {part} ({getattr(source, 'config', None)}) differs from "
                               f"the network [model] builds ({getattr(net, 'config', None)})")
    report = net.load_state_dict(source.state_dict(), strict=not grown)
    left = [k for k in report.missing_keys if not any(k.startswith(p) for p in grown)] if grown else []
    if left or (grown and report.unexpected_keys):
        raise FinecutError(f"init_checkpoint {path}: weights missing {left} or unexpected {report.unexpected_keys}")


#: Assembled checkpoints whose networks start a run of one of their parts: assembled arch -> {part arch: attribute}.
ASSEMBLED_PARTS: dict[str, dict[str, str]] = {
    "ntclick": {"ntclick_hrr": "hrr", "ntclick_ecp": "ecp", "ntclick_ecp_effnet": "ecp"},
}


def assembled_part(doc: dict[str, Any], cfg: TrainConfig) -> str | None:
    """The attribute of the network that an ``init_checkpoint`` holding an assembled model (an ``ntclick`` ECP + HRR)
    gives a run training one of its parts (``[model].arch`` ``ntclick_hrr`` -> ``"hrr"``); None for a checkpoint
    of the run's own architecture."""
    model = doc.get("model")
    arch = model.get("arch") if isinstance(model, dict) else None
    return ASSEMBLED_PARTS.get(str(arch), {}).get(str(cfg.model.get("arch")))


def load_backbone_weights(net: nn.Module, cfg: TrainConfig) -> None:
    """Initialise the backbone from ``cfg.pretrained`` ("imagenet", a path, or "none")."""
    if cfg.pretrained in ("none", ""):
        return
    backbone = getattr(getattr(net, "segmentor", net), "backbone", None)
    if backbone is None or not hasattr(backbone, "load_pretrained"):
        raise FinecutError(f"{cfg.model.get('arch')}: no backbone weights to load; set pretrained = \"none\"")
    backbone.load_pretrained(None if cfg.pretrained == "imagenet" else cfg.pretrained)


def load_backbone_checkpoint(net: nn.Module, cfg: TrainConfig) -> dict[str, Any] | None:
    """Start the backbone from the encoder of the finecut checkpoint ``cfg.init_backbone_checkpoint`` (e.g. an MAE
    run's ``runs/mae-xtiny/last``: its ``patch_embed`` / ``pos_embed`` / ``blocks`` tensors), through the network's
    ``load_pretrained`` (position embeddings resized to the network's grid). Every backbone tensor must be loaded —
    a checkpoint that leaves any of them at init is refused. Returns the counts (logged by :func:`train`), or None
    when the option is unset."""
    if not cfg.init_backbone_checkpoint:
        return None
    from finecut.models.checkpoint import checkpoint_paths, read_checkpoint_config

    _, weights = checkpoint_paths(init_checkpoint_path_of(cfg.init_backbone_checkpoint))
    read_checkpoint_config(weights)  # a finecut checkpoint (JSON + weights), not a bare weights file
    target = getattr(net, "segmentor", net)
    backbone = getattr(target, "backbone", None)
    if backbone is None or not hasattr(target, "load_pretrained"):
        raise FinecutError(f"{cfg.model.get('arch')}: init_backbone_checkpoint needs a network with a backbone "
                           "that loads pretrained encoder weights (e.g. simpleclick)")
    report = target.load_pretrained(weights)
    backbone_keys = {f"backbone.{k}" for k in backbone.state_dict()}
    left = sorted(backbone_keys - set(report.loaded))
    if left:
        raise FinecutError(f"init_backbone_checkpoint {weights}: {len(left)} of {len(backbone_keys)} backbone "
                           f"tensors not found in it (e.g. {left[0]}); refusing a partial encoder")
    return {"event": "init_backbone", "checkpoint": str(weights), "loaded": len(report.loaded),
            "backbone_tensors": len(backbone_keys), "left_at_init": len(report.missing),
            "unused": len(report.unexpected)}


def init_checkpoint_path_of(name: str) -> Path:
    """A shipped model's or shipped pretraining checkpoint's name, or a checkpoint path (what ``init_checkpoint``
    options take)."""
    from finecut.registry import pretrained_checkpoints, shipped_checkpoints

    return shipped_checkpoints().get(name) or pretrained_checkpoints().get(name, Path(name))


@dataclass
class ResumeState:
    step: int = 0
    train_seconds: float = 0.0
    samples_seen: int = 0


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
    device = (torch.cuda.get_device_name(torch.device(cfg.device)) if cfg.device.startswith("cuda")
              else platform.processor() or "cpu")
    append_log(log_path, {"step": step, "event": "resumed" if step else "started", "processes": processes,
                          "host": platform.node(), "device": device, "config": cfg.to_dict()})


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
                   seconds: float, samples: int, engine: str, extra: dict[str, Any] | None = None,
                   pipeline: dict[str, Any] | None = None) -> None:
    """Write ``last.{json,safetensors}`` (config + training record, and the inference settings ``pipeline`` when
    given) and ``trainer_state.pt`` (optimizer, counters)."""
    meta: dict[str, Any] = {"engine": engine}
    if pipeline:
        meta["pipeline"] = dict(pipeline)
    meta["training"] = {"config": cfg.to_dict(), "step": step, "samples_seen": samples,
                        "train_seconds": round(seconds, 1), **(extra or {})}
    save_checkpoint(run_dir / "last", net, cfg.model, meta)
    tmp = run_dir / ".trainer_state.pt.tmp"
    torch.save({"optimizer": optimizer.state_dict(), "step": step, "train_seconds": seconds,
                "samples_seen": samples}, tmp)
    os.replace(tmp, run_dir / "trainer_state.pt")


def lr_at(step: int, cfg: TrainConfig, train_seconds: float = 0.0) -> float:
    """The learning rate at ``step``: linear warm-up over ``warmup_steps``, then a cosine to ``min_lr_fraction``;
    with ``time_budget_minutes`` the cosine follows ``train_seconds`` of the budget when that is further along."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    if cfg.time_budget_minutes > 0:
        t = max(t, min(1.0, train_seconds / (cfg.time_budget_minutes * 60)))
    floor = cfg.min_lr_fraction
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


class HeldOutValidation:
    """The run's periodic held-out check: ``val_objects`` objects of the bank's validation split, one fixed
    ``size``² view each (drawn at the first check), ``val_clicks`` standard-protocol clicks through the evaluator's
    loop on the method's validation engine."""

    def __init__(self, method: TrainingMethod, net: nn.Module, bank: ObjectBank, cfg: TrainConfig) -> None:
        from finecut.training.validation import in_training_indices

        self.net, self.bank, self.cfg = net, bank, cfg
        self.engine = method.validation_engine(net, cfg)
        self.indices = (in_training_indices(bank, cfg.data.val_fraction, cfg.val_objects)
                        if self.engine is not None else np.zeros(0, np.int64))
        self.samples: list | None = None

    def due(self, step: int) -> bool:
        return self.cfg.val_every > 0 and len(self.indices) > 0 and step % self.cfg.val_every == 0

    def __call__(self) -> dict[str, float]:
        from finecut.training.validation import held_out_views, validate_in_training

        if self.samples is None:
            self.samples = held_out_views(self.bank, self.indices, self.cfg.size)
        self.net.eval()
        try:
            return validate_in_training(self.engine, self.samples, self.cfg.val_clicks)
        finally:
            self.net.train()


def train(cfg: TrainConfig, resume: bool = False, max_minutes: float | None = None, progress: bool = True) -> Path:
    """Run (or resume) training; returns the run directory. Stops after ``steps`` or ``max_minutes``."""
    cfg.check()
    method = method_for(cfg)
    info = init_distributed(method)
    device = training_device(cfg, info)
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

    bank = load_or_build_bank(cfg, info, progress)
    train_idx, _ = bank.split(cfg.data.val_fraction)

    net = build_model(cfg.model)
    load_backbone_weights(net, cfg)
    # a resumed run has its weights already; a fresh one (or --resume of a run that never saved) starts the backbone
    backbone_init = None if resume and state_path.exists() else load_backbone_checkpoint(net, cfg)
    load_initial_weights(net, cfg)
    net = method.prepare(net, cfg).to(device)
    net.train()
    optimizer = torch.optim.Adam(param_groups(net, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)

    resumed = resume_from(run_dir, net, optimizer, cfg) if resume else ResumeState()
    step, elapsed_before, samples_before = resumed.step, resumed.train_seconds, resumed.samples_seen
    if step:
        rng = np.random.default_rng([cfg.seed, info.rank, step])
        torch.manual_seed(cfg.seed + info.rank + step)

    pipeline = inherited_pipeline(cfg)  # read once; every checkpoint keeps it, a method may run it
    steps = method.steps(RunSetup(cfg, net, bank, train_idx, rng, step, info.rank, info.world, pipeline))
    validation = HeldOutValidation(method, net, bank, cfg) if info.main else None
    history = inherited_runs(cfg) if info.main else []  # read once; every checkpoint records it
    engine = method.engine(cfg.model["arch"])
    log_path = run_dir / "log.jsonl"
    if info.main:
        log_start(log_path, step, cfg, info.world)
        if backbone_init is not None:
            append_log(log_path, {"step": step, **backbone_init})
            if progress:
                print(f"init_backbone_checkpoint: loaded {backbone_init['loaded']} tensors "
                      f"({backbone_init['backbone_tensors']} backbone), {backbone_init['left_at_init']} left at init")
    start = time.time()
    samples_this_run = 0
    last_val: dict[str, float] = {}

    def checkpoint() -> None:
        extra: dict[str, Any] = {"processes": info.world}
        if validation is not None and validation.engine is not None:
            extra["validation"] = last_val
            extra.update(run_lineage(run_dir, cfg, history))
        elif history:
            extra["history"] = history
        save_run_state(run_dir, net, optimizer, cfg, step, elapsed_before + time.time() - start,
                       samples_before + samples_this_run, engine, extra, pipeline)

    bar = tqdm(total=cfg.steps, initial=step, desc=method.name, disable=not (progress and info.main),
               dynamic_ncols=True)
    running: dict[str, float] = {}
    stop_reason = "steps"
    try:
        while step < cfg.steps:
            if max_minutes is not None and (time.time() - start) / 60 >= max_minutes:
                stop_reason = "time"
                break
            trained = elapsed_before + time.time() - start
            if cfg.time_budget_minutes > 0 and trained >= cfg.time_budget_minutes * 60:
                stop_reason = "time budget"
                break
            lr = lr_at(step, cfg, trained)
            losses = steps(step)
            optimizer_step(net, optimizer, losses["loss"], lr)
            step += 1
            samples_this_run += cfg.batch_size * info.world
            update_running(running, losses)
            bar.update(1)
            if info.main:
                bar.set_postfix(loss=f"{running['loss']:.3f}",
                                sps=f"{samples_this_run / (time.time() - start):.1f}")
                if step % cfg.log_every == 0:
                    append_log(log_path, progress_record(step, lr, running, samples_this_run, start, elapsed_before))
                if validation is not None and validation.due(step):
                    last_val = validation()
                    append_log(log_path, {"step": step, **{k: round(v, 4) for k, v in last_val.items()}})
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    checkpoint()
    finally:
        bar.close()
        steps.close()
    if info.main:
        checkpoint()
        log_stop(log_path, step, stop_reason)
    if info.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return run_dir


def inherited_pipeline(cfg: TrainConfig) -> dict[str, Any] | None:
    """The inference settings (``pipeline``) of ``cfg.init_checkpoint``, which the run's checkpoints keep, so that a
    warm restart is evaluated as the model it continues (e.g. FocalClick-XL's primitive-mask default ``detail:
    false``, the default model's 288 px passes); None without an init checkpoint, for one without settings, or when
    the run trains one network of an assembled checkpoint (the settings are the whole model's)."""
    if not cfg.init_checkpoint:
        return None
    from finecut.models.checkpoint import read_checkpoint_config

    doc = read_checkpoint_config(init_checkpoint_path(cfg))
    if assembled_part(doc, cfg) is not None:
        return None
    pipeline = doc.get("pipeline")
    return dict(pipeline) if isinstance(pipeline, dict) and pipeline else None


def inherited_runs(cfg: TrainConfig) -> list[dict[str, Any]]:
    """The runs ``cfg.init_checkpoint`` went through, itself last — or, for a run whose backbone starts from
    ``cfg.init_backbone_checkpoint`` (e.g. an MAE pretraining run), that checkpoint's runs; empty without either."""
    name = cfg.init_checkpoint or cfg.init_backbone_checkpoint
    if not name:
        return []
    from finecut.models.checkpoint import read_checkpoint_config
    from finecut.training.history import inherited_history

    return inherited_history(read_checkpoint_config(init_checkpoint_path_of(name)), name)


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
