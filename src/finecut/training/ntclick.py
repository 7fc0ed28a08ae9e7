"""NTClick training: the ECP (3-class FBU map from clicks) and the HRR (refinement of the uncertain band), one at a time.

``finecut train CONFIG`` trains one of them when ``[model].arch`` is ``ntclick_ecp`` or ``ntclick_hrr`` (the methods
:data:`NTCLICK_ECP` and :data:`NTCLICK_HRR`); ``finecut train --assemble ECP HRR OUT`` (:func:`assemble_ntclick`)
joins the two trained checkpoints into one ``ntclick`` checkpoint that :func:`finecut.load_model` opens as the
NTClick engine.

**ECP** (supplementary §1.3): object views from the bank (:func:`~finecut.training.augment.random_view`) at
``size``; FBU ground truth :func:`finecut.fbu.train_fbu_map` (random elliptical kernel 15–30); clicks of the three
kinds drawn from their FBU regions (positive from foreground, negative from background, tolerant from the uncertain
band); with ``iterative_probability`` 1..``max_iterative_clicks`` extra no-grad passes, each adding a click of the
right kind in the largest misclassified region and feeding the prediction back as the previous mask (the prediction
seen through a perfect HRR: ``P(fg) + P(uncertain) · mask``); with ``prior_mask_probability`` the first previous mask
is a corrupted ground truth. Loss: cross-entropy over the 3 classes (+ ``[ntclick_ecp].binary_weight`` × a BCE of the
fg / bg odds). With ``[ntclick_ecp].hrr_checkpoint`` a frozen HRR finishes a ``hrr_probability`` share of those passes
as the engine does (:func:`final_prediction`) and the NTClick protocol's simulated user clicks on the *final* mask's
mistakes instead, the final probabilities fed back (:func:`ecp_iterate`).

**HRR** (supplementary §2.2): random square crops (a multiple of 128 between ``size`` and ``size · hi_factor``,
centred on a random uncertain pixel) of the ``size · hi_factor`` view, the training-rule FBU map as one-hot input;
loss = L1 + gradient (Sobel) loss between the HRR probabilities and the mask, plus ``bce_weight`` × BCE (see
:func:`hrr_loss`), weighted 1 in the uncertain band (the only place the HRR's output is used) and
:data:`HRR_OUTSIDE_WEIGHT` elsewhere; with ``ecp_checkpoint`` a share of samples (``ecp_probability``) takes its FBU
map from a trained ECP's prediction instead (:func:`hrr_batch`).

Both are training methods of the one loop (:func:`finecut.training.trainer.train`: run directory, resume, checkpoints
``last.json`` + ``last.safetensors``, ``trainer_state.pt``, ``log.jsonl``), single-process; neither has an engine of
its own to validate, so they run no held-out validation. The HRR's options are ``[ntclick_hrr]``
(:class:`~finecut.training.config.NTClickHRROptions`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from finecut import fbu
from finecut.errors import FinecutError
from finecut.evaluation.protocol import next_click_tolerant, uncertain_band
from finecut.models.checkpoint import load_checkpoint, refuse_existing_checkpoint, save_checkpoint
from finecut.prompts import Click, ClickKind, CropTransform, click_disks, disks_of_kind
from finecut.training.augment import View, ViewConfig
from finecut.training.batch import BatchSampler, prompt_maps, to_tensor_images
from finecut.training.clicks import ClickSimConfig, corrupt_mask, distance_inside, geometric_count, pick_pixels
from finecut.training.config import NTClickECPOptions, NTClickHRROptions, TrainConfig
from finecut.training.method import RunSetup, Steps, TrainingMethod
from finecut.training.objects import ObjectBank

#: Weight of the HRR loss outside the uncertain band (1 inside).
HRR_OUTSIDE_WEIGHT = 0.1
#: Default weight of the BCE term added to the HRR's L1 + gradient loss (see :func:`hrr_loss`).
HRR_BCE_WEIGHT = 1.0
#: Click-count limits of the ECP's initial clicks.
MAX_POSITIVE, MAX_NEGATIVE, MAX_TOLERANT = 8, 8, 3
#: Probability that a sample's clicks are tolerant only (no positive click): any object / an object without an eroded
#: foreground (thin structure).
TOLERANT_START, TOLERANT_START_THIN = 0.25, 0.7
KIND_OF_CLASS = {fbu.FBU_BACKGROUND: ClickKind.NEGATIVE, fbu.FBU_FOREGROUND: ClickKind.POSITIVE,
                 fbu.FBU_UNCERTAIN: ClickKind.TOLERANT}


# ------------------------------------------------------------------------------------------------------------ ECP


def sample_fbu_clicks(labels: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> list[Click]:
    """Positive clicks from the FBU foreground, negative from the background, tolerant from the uncertain band.

    An object too thin to have an eroded foreground gets its positive click on the mask itself. With
    :data:`TOLERANT_START` (:data:`TOLERANT_START_THIN` for such thin objects) the sample starts from tolerant clicks
    alone — what a person (and the NTClick protocol's simulated user) does on fine structure.
    """
    fg = labels == fbu.FBU_FOREGROUND
    pos_region = fg if fg.any() else mask
    band = labels == fbu.FBU_UNCERTAIN
    tolerant_start = band.any() and rng.random() < (TOLERANT_START if fg.any() else TOLERANT_START_THIN)
    n_pos = 0 if tolerant_start else geometric_count(rng, 1, MAX_POSITIVE, 0.7)
    n_neg = geometric_count(rng, 0, MAX_NEGATIVE, 0.7)
    n_tol = geometric_count(rng, 1 if tolerant_start else 0, MAX_TOLERANT, 0.6)
    clicks = [Click(x, y, ClickKind.POSITIVE) for y, x in pick_pixels(rng, pos_region, n_pos)]
    clicks += [Click(x, y, ClickKind.NEGATIVE) for y, x in pick_pixels(rng, labels == fbu.FBU_BACKGROUND, n_neg)]
    clicks += [Click(x, y, ClickKind.TOLERANT) for y, x in pick_pixels(rng, labels == fbu.FBU_UNCERTAIN, n_tol)]
    return clicks


def next_fbu_click(labels: np.ndarray, pred: np.ndarray, clicks: list[Click],
                   rng: np.random.Generator) -> Click | None:
    """A click in the inner third of the largest region whose true FBU class was missed, of that class's kind."""
    best: tuple[float, int, np.ndarray] | None = None
    for cls in (fbu.FBU_BACKGROUND, fbu.FBU_FOREGROUND, fbu.FBU_UNCERTAIN):
        error = (labels == cls) & (pred != cls)
        for click in clicks:
            error[click.pixel] = False
        if not error.any():
            continue
        dt = distance_inside(error)
        if best is None or dt.max() > best[0]:
            best = (float(dt.max()), cls, dt)
    if best is None or best[0] <= 0:
        return None
    peak, cls, dt = best
    y, x = pick_pixels(rng, dt > peak / 3, 1)[0]
    return Click(x, y, KIND_OF_CLASS[cls])


def _view_config(cfg: TrainConfig, hi_factor: int, native_scale: float = 0.0) -> ViewConfig:
    return ViewConfig(size=cfg.size, hi_factor=hi_factor, native_scale=native_scale)


def hrr_options(cfg: TrainConfig) -> NTClickHRROptions:
    """``cfg``'s ``[ntclick_hrr]`` section (its defaults when the config has none)."""
    return cfg.ntclick_hrr if cfg.ntclick_hrr is not None else NTClickHRROptions()


def ecp_batch(bank: ObjectBank, sampler: BatchSampler, cfg: TrainConfig, rng: np.random.Generator
              ) -> tuple[torch.Tensor, np.ndarray, np.ndarray, list[list[Click]], torch.Tensor]:
    """(images, FBU labels (B, S, S), masks (B, S, S), clicks, previous masks (B, 1, S, S))."""
    images, labels, masks, clicks, prevs = [], [], [], [], []
    for _ in range(cfg.batch_size):
        _, view = sampler.draw_view(_view_config(cfg, 1))
        lab = fbu.code_map_to_labels(fbu.train_fbu_map(view.mask, rng))
        prev = np.zeros(view.mask.shape, np.float32)
        if rng.random() < cfg.prior_mask_probability:
            prev = corrupt_mask(view.mask, rng).astype(np.float32)
        images.append(view.image)
        labels.append(lab)
        masks.append(view.mask)
        clicks.append(sample_fbu_clicks(lab, view.mask, rng))
        prevs.append(prev)
    return (to_tensor_images(np.stack(images)), np.stack(labels), np.stack(masks), clicks,
            torch.from_numpy(np.stack(prevs)[:, None]))


def ecp_maps(clicks: list[list[Click]], previous: torch.Tensor, cfg: TrainConfig, channels: int) -> torch.Tensor:
    maps = prompt_maps(clicks, previous, cfg.click_radius, 4)
    return maps[:, 1:] if channels == 3 else maps


def ecp_iterate(net: nn.Module, images: torch.Tensor, labels: np.ndarray, masks: np.ndarray,
                clicks: list[list[Click]], previous: torch.Tensor, num_iters: int, cfg: TrainConfig,
                rng: np.random.Generator, hrr: nn.Module | None = None) -> torch.Tensor:
    """Extra no-grad ECP passes, each adding a click; returns the last previous mask.

    Without ``hrr`` each click goes on the FBU map's own largest error (:func:`next_fbu_click`) and the prediction
    seen through a perfect HRR is fed back. With a frozen ``hrr`` each pass is finished as the engine finishes it
    (:func:`final_prediction`) and the NTClick protocol's simulated user clicks on the *final* mask's mistakes —
    tolerant where they lie in the object's fine-structure band — with the final probabilities fed back: the ECP
    then learns from the clicks a person gives after seeing what the whole engine answered (issue 16)."""
    channels = net.config.prompt_channels
    mask_t = torch.from_numpy(masks[:, None].astype(np.float32))
    options = ecp_options(cfg)
    bands = [uncertain_band(m.astype(np.int64)) for m in masks] if hrr is not None else []
    for _ in range(num_iters):
        with torch.no_grad():
            logits = net(images, ecp_maps(clicks, previous, cfg, channels))["logits"]
        probs = torch.softmax(logits, dim=1)
        if hrr is None:
            pred = probs.argmax(1).numpy()
            for i in range(len(clicks)):
                click = next_fbu_click(labels[i], pred[i], clicks[i], rng)
                if click is not None:
                    clicks[i].append(click)
            previous = (probs[:, fbu.FBU_FOREGROUND:fbu.FBU_FOREGROUND + 1]
                        + probs[:, fbu.FBU_UNCERTAIN:fbu.FBU_UNCERTAIN + 1] * mask_t).clamp(0, 1)
            continue
        final = final_prediction(logits, images, clicks, hrr, options)
        for i in range(len(clicks)):
            pred, gt = final[i] > 0.5, masks[i] > 0
            if not (pred != gt).any():
                continue
            click = next_click_tolerant(gt.astype(np.int64), pred, clicks[i], bands[i], rng, options.tolerant_offset)
            if click.kind is ClickKind.TOLERANT or pred[click.pixel] != gt[click.pixel]:  # not a spent error
                clicks[i].append(click)
        previous = torch.from_numpy(final[:, None])
    return previous


def ecp_options(cfg: TrainConfig) -> NTClickECPOptions:
    """``cfg``'s ``[ntclick_ecp]`` section (its defaults when the config has none)."""
    return cfg.ntclick_ecp if cfg.ntclick_ecp is not None else NTClickECPOptions()


def final_prediction(logits: torch.Tensor, images: torch.Tensor, clicks: list[list[Click]], hrr: nn.Module,
                     options: NTClickECPOptions) -> np.ndarray:
    """(B, S, S) float32: the engine's final probabilities for ECP ``logits`` (B, 3, S, S) on the views ``images``.

    As :class:`finecut.pipelines.ntclick.NTClickPipeline` makes them from its FBU labels: pixels within
    ``click_radius`` of a negative click are background (the engine's negative-click disks), the HRR decides the
    uncertain pixels (``hrr_scope`` "session": only once the sample has a tolerant click; the ECP's fg / bg odds
    before that), 1 on the certain foreground, 0 on the background. The engine's two growth / drop rules for whole
    components are left out."""
    from finecut.pipelines.ntclick import hrr_region

    labels = logits.argmax(1).numpy().astype(np.uint8)
    decided = torch.sigmoid(logits[:, fbu.FBU_FOREGROUND] - logits[:, fbu.FBU_BACKGROUND]).numpy()
    shape = labels.shape[1:]
    regions = []
    for i, sample_clicks in enumerate(clicks):
        labels[i][disks_of_kind(sample_clicks, ClickKind.NEGATIVE, shape, options.click_radius)] = fbu.FBU_BACKGROUND
        regions.append(hrr_region(labels[i] == fbu.FBU_UNCERTAIN, tuple(sample_clicks), options.hrr_scope,
                                  options.tolerant_offset))
    hrr_rows = [i for i, region in enumerate(regions) if region.any()]
    if hrr_rows:
        onehot = torch.from_numpy(np.stack([fbu.labels_to_one_hot(labels[i]) for i in hrr_rows]))
        extra = {}
        if getattr(hrr.config, "click_channels", 0):
            extra["clicks"] = hrr_click_maps([clicks[i] for i in hrr_rows], shape, options.click_radius)
        with torch.no_grad():
            out = torch.sigmoid(hrr(images[hrr_rows], onehot, **extra)["logits"][:, 0]).numpy()
        for row, probs in zip(hrr_rows, out):
            decided[row][regions[row]] = probs[regions[row]]
    return np.stack([fbu.combine_probs(labels[i], decided[i]) for i in range(len(clicks))])


def load_ecp_hrr(cfg: TrainConfig) -> nn.Module | None:
    """The frozen HRR named by ``[ntclick_ecp].hrr_checkpoint`` (an ``ntclick_hrr`` or assembled ``ntclick``
    checkpoint, a shipped name or a path), or None when no share of the ECP's samples clicks on final masks."""
    options = ecp_options(cfg)
    if not options.hrr_checkpoint or options.hrr_probability <= 0:
        return None
    from finecut.models.ntclick import NTClickHRR

    return frozen_part(options.hrr_checkpoint, "hrr", lambda net: isinstance(net, NTClickHRR),
                       "[ntclick_ecp].hrr_checkpoint", "an NTClick HRR")


def frozen_part(path: str | os.PathLike, part: str, accepts: Callable[[nn.Module], bool], option: str,
                what: str) -> nn.Module:
    """The network at ``path`` (a checkpoint path or a shipped model's name) — or, for an assembled ``ntclick``
    checkpoint, its ``part`` ("ecp" / "hrr") — frozen and in eval mode; refused by ``option``'s name unless
    ``accepts(network)``."""
    from finecut.registry import shipped_checkpoints

    net, doc = load_checkpoint(shipped_checkpoints().get(str(path), Path(path)))
    net = getattr(net, part, net)
    if not accepts(net):
        raise FinecutError(f"{path}: {option} must hold {what} (arch {doc['model'].get('arch')!r})")
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def ecp_step(net: nn.Module, bank: ObjectBank, sampler: BatchSampler, cfg: TrainConfig,
             rng: np.random.Generator, hrr: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """One ECP batch: 3-class cross-entropy (+ the binary term), after 0..``max_iterative_clicks`` no-grad passes
    that add clicks — on the final (post-HRR) mask's mistakes for a ``hrr_probability`` share of the samples when a
    frozen ``hrr`` is given (:func:`ecp_iterate`)."""
    images, labels, masks, clicks, previous = ecp_batch(bank, sampler, cfg, rng)
    num_iters = int(rng.integers(1, cfg.max_iterative_clicks + 1)) \
        if cfg.max_iterative_clicks > 0 and rng.random() < cfg.iterative_probability else 0
    options = ecp_options(cfg)
    on_final = hrr is not None and num_iters > 0 and rng.random() < options.hrr_probability
    previous = ecp_iterate(net, images, labels, masks, clicks, previous, num_iters, cfg, rng,
                           hrr if on_final else None)
    logits = net(images, ecp_maps(clicks, previous, cfg, net.config.prompt_channels))["logits"]
    ce = F.cross_entropy(logits, torch.from_numpy(labels))
    out = {"loss": ce, "ce": ce.detach()}
    if options.binary_weight > 0.0:  # the fg / bg odds against the mask, which the FBU cross-entropy leaves open
        odds = logits[:, fbu.FBU_FOREGROUND] - logits[:, fbu.FBU_BACKGROUND]
        binary = F.binary_cross_entropy_with_logits(odds, torch.from_numpy(masks.astype(np.float32)))
        out.update(loss=ce + options.binary_weight * binary, binary=binary.detach())
    return out


# ------------------------------------------------------------------------------------------------------------ HRR


def sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel gradients (gx, gy) of a (B, 1, H, W) map (replicate padding)."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype) / 4
    weight = torch.stack([kx, kx.t()])[:, None]
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight)
    return g[:, :1], g[:, 1:]


def hrr_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
             bce_weight: float = HRR_BCE_WEIGHT) -> dict[str, torch.Tensor]:
    """Weighted L1 + gradient loss between the HRR probabilities and the mask (+ ``bce_weight`` × BCE); (B, 1, H, W).

    L1 and the Sobel gradient loss are the supplementary's HRR loss. The first trained HRR (4,000 steps of that loss,
    with PyTorch's default conv init, since replaced by He init in :class:`~finecut.models.ntclick.NTClickHRR`)
    collapsed to one constant output, "background everywhere" — the L1 optimum for a band that is mostly background.
    The L1 gradient has the same size however wrong a pixel is and vanishes through a saturated sigmoid; the BCE term
    on the logits keeps a gradient that grows with the error (``bce_weight = 0`` restores the paper's loss).
    """
    probs = torch.sigmoid(logits)
    norm = weight.sum().clamp_min(1e-6)
    l1 = (weight * (probs - target).abs()).sum() / norm
    pgx, pgy = sobel(probs)
    tgx, tgy = sobel(target)
    grad = (weight * ((pgx - tgx).abs() + (pgy - tgy).abs())).sum() / norm
    bce = (weight * F.binary_cross_entropy_with_logits(logits, target, reduction="none")).sum() / norm
    return {"loss": l1 + grad + bce_weight * bce, "l1": l1.detach(), "grad": grad.detach(), "bce": bce.detach()}


def hrr_crop_sides(cfg: TrainConfig, multiple: int = 128) -> list[int]:
    """Crop sides HRR trains on: multiples of ``multiple`` between ``size`` and ``size · hi_factor``."""
    hi = cfg.size * cfg.hi_factor
    sides = [s for s in range(multiple, hi + 1, multiple) if s >= min(cfg.size, hi)]
    return sides or [hi]


def hrr_crop(view: View, labels: np.ndarray, side: int, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``side``² crop of the hi-res view, centred (when possible) on a random uncertain pixel."""
    hi = view.mask_hi.shape[0]
    ys, xs = np.nonzero(labels == fbu.FBU_UNCERTAIN)
    if len(ys):
        k = int(rng.integers(len(ys)))
        cy, cx = int(ys[k]), int(xs[k])
    else:
        cy, cx = int(rng.integers(hi)), int(rng.integers(hi))
    y0 = int(np.clip(cy - side // 2, 0, hi - side))
    x0 = int(np.clip(cx - side // 2, 0, hi - side))
    sl = (slice(y0, y0 + side), slice(x0, x0 + side))
    return view.image_hi[sl], view.mask_hi[sl], labels[sl]


def ecp_labels(ecp: nn.Module, image: torch.Tensor, labels: np.ndarray, mask: np.ndarray, cfg: TrainConfig,
               rng: np.random.Generator) -> np.ndarray:
    """The FBU labels a trained ECP predicts for one view (1, 3, S, S), from clicks drawn as in its own training."""
    clicks = [sample_fbu_clicks(labels, mask, rng)]
    previous = torch.zeros(1, 1, *labels.shape)
    with torch.no_grad():
        logits = ecp(image, ecp_maps(clicks, previous, cfg, ecp.config.prompt_channels))["logits"]
    return logits.argmax(1)[0].numpy()


def hrr_batch(bank: ObjectBank, sampler: BatchSampler, cfg: TrainConfig, rng: np.random.Generator,
              ecp: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, one-hot FBU maps, masks (B, 1, s, s), uncertain (B, 1, s, s)) for one crop side ``s``.

    With ``ecp`` (and ``[ntclick_hrr].ecp_probability``), a share of samples takes its FBU map from the ECP's
    prediction on the whole view instead of the ground-truth rule: the HRR then learns to resolve the uncertain
    regions the ECP really produces (wider and less regular than the training rule's band), not only the idealised
    ones.
    """
    options = hrr_options(cfg)
    sides = hrr_crop_sides(cfg)
    side = int(sides[rng.integers(len(sides))])
    images, onehots, masks, uncertain = [], [], [], []
    for _ in range(cfg.batch_size):
        _, view = sampler.draw_view(_view_config(cfg, cfg.hi_factor, options.native_scale))
        if ecp is not None and rng.random() < options.ecp_probability:
            low = fbu.code_map_to_labels(fbu.train_fbu_map(view.mask, rng))
            predicted = ecp_labels(ecp, to_tensor_images(view.image[None]), low, view.mask, cfg, rng)
            labels = cv2.resize(predicted.astype(np.uint8), view.mask_hi.shape[::-1],
                                interpolation=cv2.INTER_NEAREST).astype(np.int64)
        else:
            labels = fbu.code_map_to_labels(fbu.train_fbu_map(view.mask_hi, rng))
        image, mask, lab = hrr_crop(view, labels, side, rng)
        images.append(image)
        onehots.append(fbu.labels_to_one_hot(lab))
        masks.append(mask)
        uncertain.append(lab == fbu.FBU_UNCERTAIN)
    return (to_tensor_images(np.stack(images)), torch.from_numpy(np.stack(onehots)),
            torch.from_numpy(np.stack(masks)[:, None].astype(np.float32)),
            torch.from_numpy(np.stack(uncertain)[:, None].astype(np.float32)))


def load_hrr_ecp(cfg: TrainConfig) -> nn.Module | None:
    """The frozen ECP named by ``[ntclick_hrr].ecp_checkpoint`` (an ``ntclick_ecp`` or assembled ``ntclick``
    checkpoint), or None when no share of samples takes ECP maps."""
    options = hrr_options(cfg)
    if not options.ecp_checkpoint or options.ecp_probability <= 0:
        return None
    from finecut.models.ntclick import is_ecp

    return frozen_part(options.ecp_checkpoint, "ecp", is_ecp, "[ntclick_hrr].ecp_checkpoint", "an NTClick ECP")


def hrr_click_gt(mask: np.ndarray, uncertain: np.ndarray) -> np.ndarray:
    """The ground truth a training click is placed on: the object inside the uncertain region (the pixels the HRR
    decides), ignore (-1) elsewhere — a click on the FBU map's own mistakes tells the HRR nothing it can act on."""
    return np.where(uncertain, mask.astype(np.int64), -1)


def next_hrr_click(mask: np.ndarray, uncertain: np.ndarray, band: np.ndarray, pred: np.ndarray,
                   clicks: list[Click], options: NTClickHRROptions, rng: np.random.Generator) -> Click | None:
    """The NTClick protocol's next click (:func:`finecut.evaluation.protocol.next_click_tolerant`: tolerant where it
    falls in the object's fine-structure ``band``) on ``pred``'s errors inside ``uncertain``; None when it has none."""
    if not (uncertain & (pred != mask)).any():
        return None
    return next_click_tolerant(hrr_click_gt(mask, uncertain), pred, clicks, band, rng, options.tolerant_offset)


def hrr_click_maps(clicks: list[list[Click]], shape: tuple[int, int], radius: float) -> torch.Tensor:
    """(B, 3, H, W) float32 [positive, negative, tolerant] disk maps, the HRR's click input."""
    transform = CropTransform.identity(*shape)
    return torch.from_numpy(np.stack([click_disks(c, transform, radius) for c in clicks]))


def hrr_clicks(net: nn.Module, images: torch.Tensor, onehot: torch.Tensor, masks: torch.Tensor,
               uncertain: torch.Tensor, options: NTClickHRROptions, rng: np.random.Generator
               ) -> list[list[Click]]:
    """Each sample's clicks for an HRR with a click input: a first click on the FBU map's certain foreground alone
    (what the HRR sees before it has run), then 0..``click_iterations`` more, each placed on the errors of a no-grad
    HRR pass given the clicks so far, as the protocol's simulated user places them on the engine's answers."""
    mask_np = masks[:, 0].numpy() > 0.5
    unc_np = uncertain[:, 0].numpy() > 0.5
    fg_np = onehot[:, fbu.FBU_FOREGROUND].numpy() > 0.5
    bands = [uncertain_band(m.astype(np.int64)) for m in mask_np]
    clicks: list[list[Click]] = [[] for _ in range(len(mask_np))]

    def add(preds: np.ndarray) -> None:
        for i, pred in enumerate(preds):
            click = next_hrr_click(mask_np[i], unc_np[i], bands[i], pred, clicks[i], options, rng)
            if click is not None:
                clicks[i].append(click)

    add(fg_np)
    for _ in range(int(rng.integers(options.click_iterations + 1))):
        with torch.no_grad():
            maps = hrr_click_maps(clicks, mask_np.shape[1:], options.click_radius)
            probs = torch.sigmoid(net(images, onehot, clicks=maps)["logits"])[:, 0].numpy()
        add(fg_np | (unc_np & (probs > 0.5)))
    return clicks


def hrr_step(net: nn.Module, bank: ObjectBank, sampler: BatchSampler, cfg: TrainConfig,
             rng: np.random.Generator, ecp: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """One HRR batch: L1 + gradient + BCE, weighted to the uncertain band; an HRR with a click input
    (``click_channels``) gets :func:`hrr_clicks`' clicks, and ``click_weight`` more weight near them."""
    options = hrr_options(cfg)
    images, onehot, masks, uncertain = hrr_batch(bank, sampler, cfg, rng, ecp)
    weight = uncertain + HRR_OUTSIDE_WEIGHT * (1 - uncertain)
    if getattr(net.config, "click_channels", 0):
        clicks = hrr_clicks(net, images, onehot, masks, uncertain, options, rng)
        maps = hrr_click_maps(clicks, tuple(masks.shape[-2:]), options.click_radius)
        if options.click_weight > 0:
            near = hrr_click_maps(clicks, tuple(masks.shape[-2:]), options.click_weight_radius).amax(1, keepdim=True)
            weight = weight + options.click_weight * near * uncertain
        logits = net(images, onehot, clicks=maps)["logits"]
    else:
        logits = net(images, onehot)["logits"]
    return hrr_loss(logits, masks, weight, options.bce_weight)


# ------------------------------------------------------------------------------------------------------ methods


def ntclick_sampler(setup: RunSetup) -> BatchSampler:
    """The object sampler both NTClick networks draw their views from (``size``² views; the HRR asks for its hi-res
    views per draw), sharing the run's sample stream."""
    cfg = setup.cfg
    return BatchSampler(setup.bank, setup.train_indices, setup.source_weights, _view_config(cfg, 1), ClickSimConfig(),
                        0.0, setup.rng, cfg.data.synthetic_thin)


class ECPSteps(Steps):
    def __init__(self, setup: RunSetup) -> None:
        self.setup = setup
        self.sampler = ntclick_sampler(setup)
        self.hrr = load_ecp_hrr(setup.cfg)

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        s = self.setup
        return ecp_step(s.net, s.bank, self.sampler, s.cfg, s.rng, hrr=self.hrr)


class HRRSteps(Steps):
    def __init__(self, setup: RunSetup) -> None:
        self.setup = setup
        self.sampler = ntclick_sampler(setup)
        self.ecp = load_hrr_ecp(setup.cfg)

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        s = self.setup
        return hrr_step(s.net, s.bank, self.sampler, s.cfg, s.rng, ecp=self.ecp)


def ecp_warm_start(net: nn.Module, cfg: TrainConfig) -> dict[str, Any] | None:
    """Start an ``ntclick_ecp_effnet`` ECP from the FocalClick segmentor ``[ntclick_ecp].init_segmentor`` (a shipped
    model's name or a checkpoint path, resolved here) when no ``init_checkpoint`` starts every weight; returns the
    init report's counts (None when nothing was done)."""
    options = cfg.ntclick_ecp
    if options is None or not options.init_segmentor or cfg.init_checkpoint:
        return None
    from finecut.models.ntclick_ecp_effnet import NTClickECPEffNet, init_from_focalclick
    from finecut.registry import shipped_checkpoints

    if not isinstance(net, NTClickECPEffNet):
        raise FinecutError(f"[ntclick_ecp].init_segmentor needs an ntclick_ecp_effnet network, got "
                           f"{type(net).__name__}")
    path = shipped_checkpoints().get(options.init_segmentor, Path(options.init_segmentor))
    report = init_from_focalclick(net, path)
    if not report.copied:
        raise FinecutError(f"[ntclick_ecp].init_segmentor {path}: no tensor fits the ECP ({report.summary()})")
    return {"event": "init_segmentor", "checkpoint": str(path), **report.to_json()}


class ECPMethod(TrainingMethod):
    """NTClick's ECP (the paper's ViT, or the EfficientNet variant): cross-entropy on the 3-class FBU map, with
    iterative FBU clicks."""

    name = "ntclick_ecp"
    engines: ClassVar[dict[str, str]] = {"ntclick_ecp": "ntclick_ecp", "ntclick_ecp_effnet": "ntclick_ecp"}

    def prepare(self, net: nn.Module, cfg: TrainConfig) -> nn.Module:
        done = ecp_warm_start(net, cfg)
        if done is not None:
            print(f"init_segmentor {done['checkpoint']}: copied {done['copied']}, sliced {done['sliced']}, "
                  f"left at init {len(done['left_at_init'])}, source unused {done['unused']}", file=sys.stderr)
        return net

    def steps(self, setup: RunSetup) -> Steps:
        return ECPSteps(setup)


class HRRMethod(TrainingMethod):
    """NTClick's HRR: band-weighted L1 + gradient (+ BCE) loss on crops of the hi-res view (``[ntclick_hrr]``)."""

    name = "ntclick_hrr"
    engines: ClassVar[dict[str, str]] = {"ntclick_hrr": "ntclick_hrr"}

    def steps(self, setup: RunSetup) -> Steps:
        return HRRSteps(setup)


NTCLICK_ECP = ECPMethod()
NTCLICK_HRR = HRRMethod()


# ------------------------------------------------------------------------------------------------------ assemble


def assemble_ntclick(ecp_path: str | os.PathLike, hrr_path: str | os.PathLike, out_path: str | os.PathLike,
                     name: str = "ntclick", overwrite: bool = False) -> Path:
    """Join a trained ECP and a trained HRR checkpoint into one ``ntclick`` checkpoint; returns its JSON path (an
    existing checkpoint at ``out_path`` is refused, before any loading, unless ``overwrite``). Each
    part is a checkpoint path or a shipped model's name; an assembled ``ntclick`` checkpoint gives its own ECP or HRR
    (e.g. a newly trained ECP with the shipped model's HRR: ``assemble_ntclick("runs/ecp/last", "ntclick", OUT)``)."""
    from finecut.models.ntclick import NTClickHRR, NTClickNet, is_ecp
    from finecut.registry import shipped_checkpoints

    if not overwrite:
        refuse_existing_checkpoint(out_path)
    shipped = shipped_checkpoints()
    ecp_path = shipped.get(str(ecp_path), ecp_path)
    hrr_path = shipped.get(str(hrr_path), hrr_path)
    ecp, ecp_doc = load_checkpoint(ecp_path)
    hrr, hrr_doc = load_checkpoint(hrr_path)
    if isinstance(ecp, NTClickNet):
        ecp, ecp_doc = ecp.ecp, {**ecp_doc, "training": ecp_doc.get("training", {}).get("ecp", {})}
    if isinstance(hrr, NTClickNet):
        hrr, hrr_doc = hrr.hrr, {**hrr_doc, "training": hrr_doc.get("training", {}).get("hrr", {})}
    if not is_ecp(ecp):
        raise FinecutError(f"{ecp_path}: neither an NTClick ECP nor an ntclick checkpoint (arch "
                           f"{ecp_doc['model'].get('arch')!r})")
    if not isinstance(hrr, NTClickHRR):
        raise FinecutError(f"{hrr_path}: neither an ntclick_hrr nor an ntclick checkpoint (arch "
                           f"{hrr_doc['model'].get('arch')!r})")
    net = NTClickNet(ecp, hrr)
    meta = {"engine": "ntclick", "name": name,
            "training": {"step": ecp_doc.get("training", {}).get("step"),
                         "ecp": {"source": str(ecp_path), **ecp_doc.get("training", {})},
                         "hrr": {"source": str(hrr_path), **hrr_doc.get("training", {})}}}
    json_path, _ = save_checkpoint(out_path, net, net.arch_config(), meta, overwrite=overwrite)
    return json_path


def main(argv: list[str] | None = None) -> int:
    """``python -m finecut.training.ntclick ECP HRR OUT`` (deprecated: ``finecut train --assemble ECP HRR OUT``)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print("usage: finecut train --assemble ECP_CHECKPOINT HRR_CHECKPOINT OUT", file=sys.stderr)
        return 2
    print("python -m finecut.training.ntclick is deprecated: use finecut train --assemble ECP HRR OUT",
          file=sys.stderr)
    print(f"checkpoint: {assemble_ntclick(*args)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
