"""The FocalClick training method: iterative-click training of a segmentor + refiner (single process or DDP).

Per step: draw a batch of object views and random clicks; with some probability run 1..N extra forward passes without
gradient, each adding the simulated user's next click and feeding the prediction back as the previous mask (RITM's
iterative training); then one forward/backward of the segmentor (normalized focal loss) and of the refiner on a focus
box (boundary-weighted NFL + BCE on its boundary head). A network without a refiner (SimpleClick, a RITM-style
``focalclick_segmentor``) gets the segmentation loss only. Options: ``[focalclick]``
(:class:`~finecut.training.config.FocalClickOptions`); held-out validation runs the segmentor alone
(:class:`~finecut.training.validation.SegmentorEngine`).

Distillation (``[focalclick].distill_checkpoint``): a trained checkpoint's segmentor, frozen, sees the same image,
clicks and previous mask as the student in the training pass (in its own prompt layout); its probabilities are soft
targets for an extra BCE term on the student's segmentation logits (``distill_weight``), e.g. the trained default
teaching SimpleClick.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from finecut.models.roi_align import roi_align
from finecut.training.augment import ViewConfig
from finecut.training.batch import Batch, BatchSampler, prompt_maps
from finecut.training.clicks import ClickSimConfig, next_training_click
from finecut.training.config import FocalClickOptions, TrainConfig
from finecut.training.focus import sample_focus_boxes
from finecut.training.losses import boundary_bce, boundary_weighted_nfl, normalized_focal_loss
from finecut.training.method import RunSetup, Steps, TrainingMethod

if TYPE_CHECKING:
    from finecut.engines.base import Engine

#: The loss terms a step logs, in log order.
LOSS_KEYS = ("loss", "seg", "refine", "boundary", "distill")


def segmentor_of(net: nn.Module) -> nn.Module:
    """The network that maps (image, prompt maps) to logits: FocalClick's segmentor, or the net itself."""
    return getattr(net, "segmentor", net)


def options_of(cfg: TrainConfig) -> FocalClickOptions:
    """``cfg``'s ``[focalclick]`` section (its defaults when the config has none)."""
    return cfg.focalclick if cfg.focalclick is not None else FocalClickOptions()


class TrainingStep(nn.Module):
    """Segmentor + refiner forward and losses in one module, so DDP sees a single forward."""

    def __init__(self, net: nn.Module, hi_factor: int, refiner_weight: float, distill_weight: float = 0.0) -> None:
        super().__init__()
        self.net = net
        self.hi_factor = hi_factor
        self.refiner_weight = refiner_weight
        self.distill_weight = distill_weight

    def forward(self, images: torch.Tensor, maps: torch.Tensor, masks: torch.Tensor, images_hi: torch.Tensor,
                masks_hi: torch.Tensor, boxes: torch.Tensor, refiner_size: int,
                soft_targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One step's losses; ``refiner_size`` is the focus crop's side at this step (the schedule's,
        :meth:`~finecut.training.config.TrainConfig.refiner_size_at`)."""
        seg = segmentor_of(self.net)(images, maps)
        loss_seg = normalized_focal_loss(seg["logits"], masks)
        zero = loss_seg.detach() * 0
        loss_distill = zero if soft_targets is None else distillation_loss(seg["logits"], soft_targets)
        seg_total = loss_seg + self.distill_weight * loss_distill
        refiner = getattr(self.net, "refiner", None)
        if refiner is None:  # a single-network model (SimpleClick): segmentation loss only
            return {"loss": seg_total, "seg": loss_seg.detach(), "refine": zero, "boundary": zero,
                    "distill": loss_distill.detach(), "logits": seg["logits"].detach()}
        r = refiner_size
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
        total = seg_total + self.refiner_weight * (loss_ref + loss_bnd)
        return {"loss": total, "seg": loss_seg.detach(), "refine": loss_ref.detach(), "boundary": loss_bnd.detach(),
                "distill": loss_distill.detach(), "logits": seg["logits"].detach()}


def distillation_loss(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE of the student's logits (B, 1, h, w) against a teacher's probabilities (B, 1, H, W), the targets
    resized to the logits' size when they differ."""
    if soft_targets.shape[-2:] != logits.shape[-2:]:
        soft_targets = F.interpolate(soft_targets, size=logits.shape[-2:], mode="bilinear", align_corners=False)
    return F.binary_cross_entropy_with_logits(logits, soft_targets.clamp(0.0, 1.0))


class Teacher:
    """A trained checkpoint's segmentor, frozen, giving soft targets in its own prompt layout and normalisation."""

    def __init__(self, name: str, memory_format: torch.memory_format, device: torch.device | None = None) -> None:
        from finecut.model_inputs import IMAGENET_MEAN, IMAGENET_STD
        from finecut.models.checkpoint import load_checkpoint
        from finecut.registry import shipped_checkpoints

        net, _ = load_checkpoint(shipped_checkpoints().get(name, name))  # a shipped model's name or a checkpoint path
        self.net = segmentor_of(net).to(device=device, memory_format=memory_format).eval().requires_grad_(False)
        spec = net.input_spec
        self.layout = spec.prompt_layout
        self.memory_format = memory_format
        # training batches are ImageNet-normalised; a teacher normalised otherwise gets its own
        self.renorm: tuple[torch.Tensor, torch.Tensor] | None = None
        if (tuple(spec.mean), tuple(spec.std)) != (tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)):
            def col(v: tuple[float, ...]) -> torch.Tensor:
                return torch.tensor(v, dtype=torch.float32, device=device).view(1, 3, 1, 1)
            scale = col(IMAGENET_STD) / col(spec.std)
            self.renorm = (scale, (col(IMAGENET_MEAN) - col(spec.mean)) / col(spec.std))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, clicks: list, previous: torch.Tensor, radius: float) -> torch.Tensor:
        if self.renorm is not None:
            images = images * self.renorm[0] + self.renorm[1]
        maps = prompt_maps(clicks, previous, radius, self.layout, self.memory_format)
        return torch.sigmoid(self.net(images, maps)["logits"])


def iterate_clicks(net: nn.Module, batch: Batch, num_iters: int, cfg: TrainConfig, rng: np.random.Generator,
                   channels: int) -> torch.Tensor:
    """RITM iterative training: extra no-grad passes, each adding a click on the current error. Returns prev mask."""
    memory_format = options_of(cfg).memory_format
    previous = batch.previous
    for _ in range(num_iters):
        with torch.no_grad():
            maps = prompt_maps(batch.clicks, previous, cfg.click_radius, channels, memory_format)
            probs = torch.sigmoid(segmentor_of(net)(batch.images, maps)["logits"])
        preds = (probs[:, 0] > 0.49).cpu().numpy()
        for i in range(len(batch.clicks)):
            click = next_training_click(batch.masks_np[i], preds[i], batch.clicks[i], rng)
            if click is not None:
                batch.clicks[i].append(click)
        previous = probs
    return previous


def to_device(batch: Batch, device: torch.device, memory_format: torch.memory_format) -> Batch:
    """``batch`` with its tensors on ``device`` (copied there when it is a GPU; the NumPy masks and clicks stay) and its
    images in ``memory_format``."""
    def move(t: torch.Tensor) -> torch.Tensor:
        return t.to(device, non_blocking=True)

    batch.images = move(batch.images).contiguous(memory_format=memory_format)  # no-op unless NCHW is asked for
    batch.images_hi = move(batch.images_hi).contiguous(memory_format=memory_format)
    batch.masks, batch.masks_hi, batch.previous = move(batch.masks), move(batch.masks_hi), move(batch.previous)
    return batch


class DirectBatches:
    """Batches drawn in the training process itself, at the schedule's crop size."""

    def __init__(self, sampler: BatchSampler, cfg: TrainConfig) -> None:
        self.sampler, self.cfg = sampler, cfg

    def __call__(self, step: int) -> Batch:
        return self.sampler.sample(self.cfg.batch_size, self.cfg.size_at(step))

    def close(self) -> None:
        """Nothing to release (the prefetching source stops its worker here)."""


class PrefetchedBatches:
    """Batches drawn ``[focalclick].prefetch`` steps ahead by a worker process (:mod:`finecut.training.prefetch`)."""

    def __init__(self, make_sampler: Callable[[np.random.Generator], BatchSampler], cfg: TrainConfig, rank: int,
                 step: int) -> None:
        from finecut.training.prefetch import PrefetchSampler

        options = options_of(cfg)
        self.source = PrefetchSampler(make_sampler, [cfg.seed, rank, step, 1], options.prefetch, cfg.batch_size,
                                      cfg.size_at, first=step, workers=options.prefetch_workers)

    def __call__(self, step: int) -> Batch:
        return self.source.sample()

    def close(self) -> None:
        self.source.close()


def batch_source(make_sampler: Callable[[np.random.Generator], BatchSampler], cfg: TrainConfig,
                 rng: np.random.Generator, rank: int, step: int) -> DirectBatches | PrefetchedBatches:
    """A callable ``step -> Batch``: in-process sampling, or a prefetching worker when ``[focalclick].prefetch > 0``."""
    if options_of(cfg).prefetch > 0:
        return PrefetchedBatches(make_sampler, cfg, rank, step)
    return DirectBatches(make_sampler(rng), cfg)


class FocalClickSteps(Steps):
    """The FocalClick step of one run: batch, iterative clicks, focus boxes, one (DDP) forward."""

    def __init__(self, setup: RunSetup) -> None:
        cfg, net = setup.cfg, setup.net
        options = options_of(cfg)
        self.cfg, self.net, self.rng = cfg, net, setup.rng
        self.memory_format = options.memory_format
        self.device = next(net.parameters()).device
        # the number of iterative passes per step has its own stream, so runs that differ in sampling draw the same
        # sequence
        self.iter_rng = np.random.default_rng([cfg.seed, setup.rank, setup.step, 2])
        self.teacher = (Teacher(options.distill_checkpoint, self.memory_format, self.device)
                        if options.distill_checkpoint else None)
        step_module = TrainingStep(net, cfg.hi_factor, options.refiner_loss_weight,
                                   options.distill_weight if self.teacher is not None else 0.0)
        self.model: nn.Module = step_module
        if setup.world > 1:
            self.model = nn.parallel.DistributedDataParallel(step_module, find_unused_parameters=False)
        weights = setup.source_weights
        bank, train_indices = setup.bank, setup.train_indices

        def make_sampler(sampler_rng: np.random.Generator) -> BatchSampler:
            return BatchSampler(bank, train_indices, weights, ViewConfig(size=cfg.size, hi_factor=cfg.hi_factor),
                                ClickSimConfig(), cfg.prior_mask_probability, sampler_rng, cfg.data.synthetic_thin)

        self.next_batch = batch_source(make_sampler, cfg, setup.rng, setup.rank, setup.step)
        self.channels = net.prompt_channels

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        cfg, rng = self.cfg, self.rng
        batch = to_device(self.next_batch(step), self.device, self.memory_format)
        num_iters = (int(self.iter_rng.integers(1, cfg.max_iterative_clicks + 1))
                     if self.iter_rng.random() < cfg.iterative_probability else 0)
        previous = iterate_clicks(self.net, batch, num_iters, cfg, rng, self.channels)
        maps = prompt_maps(batch.clicks, previous, cfg.click_radius, self.channels, self.memory_format)
        preds_np = (batch.previous[:, 0] > 0.5 if num_iters == 0 else previous[:, 0] > 0.49).cpu().numpy()
        boxes = sample_focus_boxes(batch.masks_np, preds_np, rng).to(self.device)
        soft = None if self.teacher is None else self.teacher(batch.images, batch.clicks, previous, cfg.click_radius)
        out = self.model(batch.images, maps, batch.masks, batch.images_hi, batch.masks_hi, boxes,
                         cfg.refiner_size_at(step), soft)
        return {key: out[key] for key in LOSS_KEYS}

    def close(self) -> None:
        self.next_batch.close()


class FocalClickMethod(TrainingMethod):
    """FocalClick (segmentor + refiner); SimpleClick and RITM-style single networks train their segmentation half."""

    name = "focalclick"
    distributed = True
    engines: ClassVar[dict[str, str]] = {"focalclick": "focalclick", "simpleclick": "simpleclick", "focalclick_segmentor": "simpleclick"}

    def prepare(self, net: nn.Module, cfg: TrainConfig) -> nn.Module:
        options = options_of(cfg)
        net = net.to(memory_format=options.memory_format)
        if options.compile:
            for module in (segmentor_of(net), getattr(net, "refiner", None)):
                if module is not None:
                    module.compile()
        return net

    def steps(self, setup: RunSetup) -> Steps:
        return FocalClickSteps(setup)

    def validation_engine(self, net: nn.Module, cfg: TrainConfig) -> Engine:
        from finecut.training.validation import SegmentorEngine

        return SegmentorEngine(segmentor_of(net), cfg.click_radius, net.prompt_channels)


FOCALCLICK = FocalClickMethod()
