"""The FocalClick-XL training method: three stages, one per ``[focalclick_xl].stage``, each saving the whole network.

FocalClick-XL (:class:`~finecut.models.focalclick_xl.FocalClickXLNet`) is trained in parts (paper §4-§5), each run of
the one training loop training one of them, every other tensor frozen:

1. ``object`` — the paper's click pretraining: the Object-Net, the ``clicks`` prompting layer and the context
   encoder's adapters (SAM's Conv-GELU-Conv adapters; the Lite0 context encoder's neck, its ImageNet backbone
   frozen) on simulated clicks with RITM's iterative training (the FocalClick method's click simulation and
   normalized focal loss). Each sample is a bank object: the Context-Net sees the whole image resized so its long
   side is the encoder's ``input_size`` (as the pipeline does), the Object-Net a patch of ``size``² — the object's box
   expanded 1.2-1.8 x with its centre jittered, clamped to the image ("we sample boxes around the GT masks for the
   input of Object-Net"), or the whole image (a first click from scratch, as the pipeline's Target Crop does) —
   with the context features RoIAligned to that patch. Warm start: ``init_checkpoint`` (an XL checkpoint), else
   ImageNet weights for the context encoder (``context_pretrained``) and the shipped ``focalclick-lite0-v2``
   segmentor for the Object-Net and every prompting layer (``object_init``,
   :func:`~finecut.models.focalclick_xl.init_object_from_focalclick`).
2. ``detail`` — the Detail-Net alone on ``detail_size``² patches: synthetic alpha composites
   (:func:`~finecut.training.alpha_synth.render_alpha_composite` on crops of the bank's photos, kinds mixed, half of
   the bodies real object cut-outs) and real objects' boundary patches (alpha = the binary mask), seen at 1-2.5
   source pixels per patch pixel. The trimap is what the pipeline builds
   (:func:`~finecut.models.detail_net.trimap_from_probs`, thresholds 0.1 / 0.9) from simulated primitive
   probabilities — the alpha with its boundary moved by up to 3 px, blurred, with smooth noise: the Object-Net's
   low-confidence band — and 1-3 clicks as sure foreground / background on half of the samples. Loss: L1 + MSE +
   gradient loss on the unknown pixels (:func:`~finecut.training.alpha_losses.alpha_loss`), plus the composition
   loss on synthetic samples. With ``object_primitive_fraction``, that share of the patches are the Object-Net's own:
   bank objects through the pipeline with its Detail-Net off, after 1 to ``primitive_max_clicks`` simulated clicks,
   cut at the windows it would refine (:mod:`finecut.training.xl_primitives`), with their real primitive and clicks.
   A Detail-Net with ``primitive_input`` gets the primitive as a fourth input channel; ``residual`` makes it predict a
   correction to the primitive's logit, its classifier zeroed when the init checkpoint's Detail-Net was not residual
   (:func:`start_residual`).
3. ``prompting`` — one other form's prompting layer (``form``: ``box``, ``scribbles`` or ``coarse_mask``), everything
   else frozen (:meth:`~finecut.models.focalclick_xl.FocalClickXLNet.train_only_prompting`), started from the
   ``clicks`` layer unless the warm-start checkpoint's history says the form was tuned already. Prompts are
   simulated from the ground truth (:mod:`finecut.training.interactions`) and drawn as the pipeline draws them
   (:func:`finecut.model_inputs.crop_prompt_maps`, :func:`finecut.prompts.scribble_maps`): a box as a filled
   rectangle in the positive channel, the patch the box expanded; a coarse mask in the positive channel (and the
   previous-mask channel, as the pipeline starts from it), the patch around it; scribbles on the ground truth, then
   with RITM-style iterative passes correction scribbles on the largest error. Normalized focal loss on the
   primitive mask.

A departure from the paper, for forms a prompting layer alone does not carry (a box is a filled rectangle that a
network trained on click disks reads as "all of this is object"): ``[focalclick_xl].joint_forms`` lets the object
stage train the Object-Net on other forms too — each step draws one form for its whole batch (by the given shares,
the rest click steps), simulated and drawn as in the prompting stage, through that form's prompting layer, which
trains with it.

The stage (and form) is part of the run's config, so every checkpoint's training record and the histories of its
descendants say how each subnet and prompting layer was trained (:func:`finecut.training.history.training_stage`).
Held-out validation (object and detail stages) drives the FocalClick-XL pipeline engine, when
:mod:`finecut.pipelines.focalclick_xl` is there; the prompting stage is not validated (the click loop does not use the
layer it tunes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from finecut.errors import FinecutError
from finecut.model_inputs import (
    crop_image,
    crop_prompt_maps,
    normalize,
    normalize_batch,
    resize,
    stack_prompt_maps,
)
from finecut.models.detail_net import trimap_from_probs
from finecut.models.focalclick_xl import (
    ContextLite0Encoder,
    FocalClickXLNet,
    context_input_geometry,
    init_object_from_focalclick,
)
from finecut.prompts import Box, Click, CropTransform, Prompts, Scribble, scribble_maps
from finecut.training.alpha_losses import alpha_composition_loss, alpha_loss
from finecut.training.alpha_synth import render_alpha_composite
from finecut.training.augment import ViewConfig
from finecut.training.batch import BatchSampler, prompt_maps
from finecut.training.clicks import (
    ClickSimConfig,
    corrupt_mask,
    next_training_click,
    sample_initial_clicks,
)
from finecut.training.config import FocalClickXLOptions, TrainConfig
from finecut.training.history import training_stage
from finecut.training.interactions import (
    correction_scribble,
    initial_scribbles,
    mask_box,
    simulate_box,
    simulate_coarse_mask,
)
from finecut.training.losses import normalized_focal_loss
from finecut.training.method import RunSetup, Steps, TrainingMethod
from finecut.training.objects import ObjectBank

if TYPE_CHECKING:
    from finecut.engines.base import Engine

#: The loss terms each stage logs, in log order.
OBJECT_KEYS = ("loss", "seg")
DETAIL_KEYS = ("loss", "alpha_l1", "alpha_mse", "alpha_grad", "composition")
#: The pipeline's smallest target crop (px).
MIN_CROP = 48


def options_of(cfg: TrainConfig) -> FocalClickXLOptions:
    """``cfg``'s ``[focalclick_xl]`` section (its defaults when the config has none)."""
    return cfg.focalclick_xl if cfg.focalclick_xl is not None else FocalClickXLOptions()


def checkpoint_path(name: str) -> Path:
    """A shipped model's name (``focalclick-lite0-v2``: its JSON in ``finecut/weights``) or a checkpoint path."""
    from finecut.registry import shipped_checkpoints

    return shipped_checkpoints().get(name, Path(name))


def trained_stages(doc: dict[str, Any] | None) -> list[str]:
    """The stages (:func:`~finecut.training.history.training_stage`) a checkpoint's weights went through, oldest
    first: its history's, then its own run's."""
    training = (doc or {}).get("training") or {}
    stages = [str(r.get("stage")) for r in training.get("history") or [] if r.get("stage")]
    own = training_stage(training.get("config") or {})
    return stages + ([own] if own else [])


def tuned_forms(stages: list[str]) -> set[str]:
    """The interaction forms (other than clicks) whose prompting layer a chain of stages trained: by a prompting
    stage (``prompting:box``) or jointly in an object stage (``object+box+scribbles``)."""
    out = set()
    for stage in stages:
        if stage.startswith("prompting:"):
            out.add(stage.split(":", 1)[1])
        elif stage.startswith("object+"):
            out.update(stage.split("+")[1:])
    return out


def xl_net(net: nn.Module) -> FocalClickXLNet:
    if not isinstance(net, FocalClickXLNet):
        raise FinecutError(f"the focalclick_xl method trains FocalClickXLNet, got {type(net).__name__}")
    return net


# ------------------------------------------------------------------------------------------- what each stage trains


def context_trainable(net: FocalClickXLNet, mode: str) -> set[str]:
    """Names (under ``context.``) of the context encoder's parameters the object stage trains: ``adapters`` — the SAM
    encoder's adapters, or the Lite0 encoder's neck (everything but its ImageNet backbone); ``all``; ``none``."""
    names = [name for name, _ in net.context.named_parameters()]
    if mode == "all":
        return set(names)
    if mode == "none":
        return set()
    if isinstance(net.context, ContextLite0Encoder):
        return {n for n in names if not n.startswith("backbone.")}
    return {n for n in names if "adapter" in n}


def start_residual(net: FocalClickXLNet) -> None:
    """A residual Detail-Net started from a Detail-Net that predicted alpha outright: its classifier, which now
    predicts a correction to the primitive's logit, is zeroed, so the run starts by returning the primitive."""
    nn.init.zeros_(net.detail.classifier.weight)
    if net.detail.classifier.bias is not None:
        nn.init.zeros_(net.detail.classifier.bias)


def set_trainable(net: FocalClickXLNet, options: FocalClickXLOptions) -> list[nn.Module]:
    """Freeze what the stage does not train; returns the modules to keep in eval mode (frozen BatchNorms that the
    stage's forward passes run through)."""
    if options.stage == "prompting":
        net.train_only_prompting(options.form)
        return []
    net.unfreeze()
    for p in net.parameters():
        p.requires_grad_(False)
    if options.stage == "detail":
        for p in net.detail.parameters():
            p.requires_grad_(True)
        return [net.context, net.object, net.prompting]
    trained_forms = ("clicks", *options.joint_forms)
    for form in trained_forms:
        for p in net.prompting_layer(form).parameters():
            p.requires_grad_(True)
    for p in net.object.parameters():
        p.requires_grad_(True)
    keep = context_trainable(net, options.context_train)
    for name, p in net.context.named_parameters():
        p.requires_grad_(name in keep)
    frozen: list[nn.Module] = [net.detail]
    frozen += [layer for form, layer in net.prompting.items() if form not in trained_forms]
    if options.context_train == "none":
        frozen.append(net.context)
    elif options.context_train == "adapters" and isinstance(net.context, ContextLite0Encoder):
        frozen.append(net.context.backbone)
    return frozen


def warm_start(net: FocalClickXLNet, cfg: TrainConfig) -> dict[str, Any]:
    """The initialisation of a chain's first stage (detail or object) without ``init_checkpoint``: context weights,
    then the Object-Net and the prompting layers from a FocalClick segmentor. Returns what was loaded."""
    options = options_of(cfg)
    done: dict[str, Any] = {}
    source = options.context_pretrained
    if source not in ("", "none"):
        if isinstance(net.context, ContextLite0Encoder):
            net.load_imagenet(None if source == "imagenet" else source)
        else:
            if source == "imagenet":
                raise FinecutError("the SAM context encoder has no ImageNet weights: set [focalclick_xl]."
                                   "context_pretrained to a local SAM checkpoint or \"none\"")
            from finecut.models.sam_vit import load_sam_image_encoder

            load_sam_image_encoder(net.context, source)
        done["context"] = source
    if options.object_init:
        report = init_object_from_focalclick(net, checkpoint_path(options.object_init))
        done["object"] = f"{options.object_init}: {report.summary()}"
    return done


def rebase(net: FocalClickXLNet, options: FocalClickXLOptions) -> str:
    """A trained XL's Object-Net replaced by ``options.rebase_object``'s segmentor (backbone, head; the click
    encoder into ``rebase_forms``' prompting layers; context projections back to zero). Returns the load summary."""
    report = init_object_from_focalclick(net, checkpoint_path(options.rebase_object), forms=options.rebase_forms,
                                         zero_context=True)
    missing = [k for k in report.left_at_init if k.startswith(("object.backbone.", "object.head."))]
    if missing:
        raise FinecutError(f"rebase_object {options.rebase_object}: {len(missing)} Object-Net tensors have no "
                           f"counterpart of the same shape (e.g. {missing[0]}); is it a FocalClick-Lite0 checkpoint?")
    return f"{options.rebase_object}: {report.summary()}"


# -------------------------------------------------------------------------------------------------- object patches


@dataclass
class PatchBatch:
    """Object-Net samples: patches, their masks, the whole images for the Context-Net and the patches' boxes in
    the context input's pixels; ``maps`` the prompt maps of a one-shot form (box, coarse mask), else None."""

    images: torch.Tensor  # (B, 3, S, S) normalised
    masks: torch.Tensor  # (B, 1, S, S) 0/1
    masks_np: np.ndarray  # (B, S, S) bool
    contexts: torch.Tensor  # (B, 3, h, w) normalised, zero-padded
    boxes: torch.Tensor  # (B, 4) x0, y0, x1, y1 in context-input pixels
    maps: torch.Tensor | None = None


class PatchSampler:
    """Draws bank objects (weighted by source) and cuts the Object-Net's patch and the Context-Net's input."""

    def __init__(self, bank: ObjectBank, indices: np.ndarray, weights: dict[int, float], net: FocalClickXLNet,
                 cfg: TrainConfig, form: str, rng: np.random.Generator) -> None:
        self.bank, self.cfg, self.form, self.rng = bank, cfg, form, rng
        self.options = options_of(cfg)
        self.objects = BatchSampler(bank, indices, weights, ViewConfig(size=cfg.size), ClickSimConfig(), 0.0, rng)
        self.size = int(cfg.size)
        self.context_size = int(net.context.input_size)
        self.pad_square = bool(getattr(net.context, "pad_square", False))
        self.spec = net.input_spec
        self.layout = net.input_spec.prompt_layout

    def crop_around(self, box: tuple[float, float, float, float], height: int, width: int) -> tuple[int, int, int, int]:
        """``box`` expanded by a random factor (a little more or less on each axis), its centre jittered, at least
        :data:`MIN_CROP` px, moved inside the image and clamped to it."""
        rng, o = self.rng, self.options
        x0, y0, x1, y1 = box
        bw, bh = max(1.0, x1 - x0), max(1.0, y1 - y0)
        e = float(rng.uniform(*o.box_expand))
        w = min(float(width), max(MIN_CROP, bw * e * rng.uniform(0.9, 1.1)))
        h = min(float(height), max(MIN_CROP, bh * e * rng.uniform(0.9, 1.1)))
        cx = (x0 + x1) / 2 + rng.uniform(-o.box_shift, o.box_shift) * bw
        cy = (y0 + y1) / 2 + rng.uniform(-o.box_shift, o.box_shift) * bh
        left = float(np.clip(cx - w / 2, 0, width - w))
        top = float(np.clip(cy - h / 2, 0, height - h))
        c0, r0 = int(np.floor(left)), int(np.floor(top))
        c1, r1 = min(width, int(np.ceil(left + w))), min(height, int(np.ceil(top + h)))
        return c0, r0, max(c1, c0 + 1), max(r1, r0 + 1)

    def draw(self) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, tuple[float, ...], torch.Tensor | None]:
        rng, o, size = self.rng, self.options, self.size
        index = self.objects.draw_object()
        image, mask = self.bank.image(index), self.bank.mask(index)
        bbox = self.bank.objects[index].bbox
        height, width = mask.shape
        if o.flip and rng.random() < 0.5:
            image, mask = np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(mask[:, ::-1])
            bbox = (width - bbox[2], bbox[1], width - bbox[0], bbox[3])
        maps = None
        if self.form == "box":
            user = simulate_box(bbox, (height, width), rng, o.box_jitter)
            crop = self.crop_around(user, height, width)
            maps = crop_prompt_maps(Prompts(box=Box(*user)), (), np.zeros((height, width), np.float32), crop,
                                    (size, size), self.cfg.click_radius, self.layout, draw_box=True)
        elif self.form == "coarse_mask":
            coarse = simulate_coarse_mask(mask, rng)
            crop = self.crop_around(mask_box(coarse) or bbox, height, width)
            coarse_f = coarse.astype(np.float32)
            previous = coarse_f if rng.random() < o.coarse_previous_probability else np.zeros_like(coarse_f)
            maps = crop_prompt_maps(Prompts(), (), previous, crop, (size, size), self.cfg.click_radius, self.layout,
                                    positive_mask=coarse_f)
        elif rng.random() < o.whole_image_probability:
            crop = (0, 0, width, height)
        else:
            crop = self.crop_around(tuple(float(v) for v in bbox), height, width)
        x0, y0, x1, y1 = crop
        patch = crop_image(image, crop, (size, size), self.spec)
        patch_mask = resize(np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=np.float32), (size, size)) > 0.5
        geometry = context_input_geometry(height, width, self.context_size, self.pad_square)
        context = normalize(resize(image, geometry.resized), self.spec)
        if geometry.padded != geometry.resized:
            context = F.pad(context, (0, geometry.padded[1] - geometry.resized[1],
                                      0, geometry.padded[0] - geometry.resized[0]))
        return patch, patch_mask, context, geometry.map_box(crop), maps

    def sample(self, batch_size: int) -> PatchBatch:
        drawn = [self.draw() for _ in range(batch_size)]
        ch = max(d[2].shape[-2] for d in drawn)
        cw = max(d[2].shape[-1] for d in drawn)
        contexts = torch.cat([F.pad(d[2], (0, cw - d[2].shape[-1], 0, ch - d[2].shape[-2])) for d in drawn])
        masks_np = np.stack([d[1] for d in drawn])
        maps = torch.cat([d[4] for d in drawn]) if drawn[0][4] is not None else None
        return PatchBatch(images=torch.cat([d[0] for d in drawn]),
                          masks=torch.from_numpy(masks_np[:, None].astype(np.float32)), masks_np=masks_np,
                          contexts=contexts, boxes=torch.tensor([d[3] for d in drawn], dtype=torch.float32),
                          maps=maps)


def initial_clicks(mask: np.ndarray, rng: np.random.Generator, prior_probability: float
                   ) -> tuple[list[Click], np.ndarray]:
    """A sample's first clicks and previous mask, as the FocalClick method draws them: random clicks on an empty
    previous mask, or (``prior_probability``) a corrupted prior mask with 1-3 corrective clicks."""
    if rng.random() < prior_probability:
        prior = corrupt_mask(mask, rng)
        clicks: list[Click] = []
        for _ in range(int(rng.integers(1, 4))):
            click = next_training_click(mask, prior, clicks, rng)
            if click is None:
                break
            clicks.append(click)
        return clicks, prior.astype(np.float32)
    return sample_initial_clicks(mask, rng, ClickSimConfig()), np.zeros(mask.shape, np.float32)


def scribble_prompt_maps(scribbles: list[list[Scribble]], previous: torch.Tensor, layout: tuple[str, ...]
                         ) -> torch.Tensor:
    """(B, C, S, S) prompt maps of scribbles drawn at patch resolution (the pipeline's rasteriser) and the
    previous mask, in ``layout``."""
    b, _, h, w = previous.shape
    transform = CropTransform.identity(h, w)
    out = []
    for i in range(b):
        disks = np.zeros((3, h, w), np.float32)
        if scribbles[i]:
            disks[:2] = scribble_maps(scribbles[i], transform)
        out.append(stack_prompt_maps(layout, previous[i, 0].numpy(), disks))
    return torch.from_numpy(np.stack(out)).contiguous(memory_format=torch.channels_last)


class ObjectSteps(Steps):
    """The object stage (``form`` clicks) and the prompting stage (``form`` box / scribbles / coarse_mask)."""

    def __init__(self, setup: RunSetup, form: str, frozen: list[nn.Module]) -> None:
        cfg = setup.cfg
        self.cfg, self.net, self.rng = cfg, xl_net(setup.net), setup.rng
        self.options = options_of(cfg)
        self.frozen = frozen
        self.iter_rng = np.random.default_rng([cfg.seed, setup.rank, setup.step, 2])
        # the object stage's other forms (joint_forms): which form each step trains, on its own random stream
        joint = self.options.joint_forms if form == "clicks" else {}
        self.forms = [form, *joint]
        self.shares = [1.0 - sum(joint.values()), *joint.values()]
        self.form_rng = np.random.default_rng([cfg.seed, setup.rank, setup.step, 3])
        self.samplers = {f: PatchSampler(setup.bank, setup.train_indices, setup.source_weights, self.net, cfg, f,
                                         setup.rng) for f in self.forms}
        self.layout = self.net.input_spec.prompt_layout
        self.context_grad = any(p.requires_grad for p in self.net.context.parameters())

    def iterations(self) -> int:
        cfg = self.cfg
        if self.iter_rng.random() < cfg.iterative_probability:
            return int(self.iter_rng.integers(1, cfg.max_iterative_clicks + 1))
        return 0

    def predict(self, batch: PatchBatch, maps: torch.Tensor, context: torch.Tensor, form: str) -> torch.Tensor:
        with torch.no_grad():
            logits = self.net.forward_object(batch.images, maps, form, context.detach(), batch.boxes)["logits"]
        return torch.sigmoid(logits)

    def click_maps(self, batch: PatchBatch, context: torch.Tensor) -> torch.Tensor:
        """RITM's iterative training on the patch: extra no-grad passes, each adding a click on the current error."""
        cfg, rng = self.cfg, self.rng
        drawn = [initial_clicks(m, rng, cfg.prior_mask_probability) for m in batch.masks_np]
        clicks = [c for c, _ in drawn]
        previous = torch.from_numpy(np.stack([p for _, p in drawn])[:, None])
        for _ in range(self.iterations()):
            probs = self.predict(batch, prompt_maps(clicks, previous, cfg.click_radius, self.layout), context, "clicks")
            preds = (probs[:, 0] > 0.49).numpy()
            for i in range(len(clicks)):
                click = next_training_click(batch.masks_np[i], preds[i], clicks[i], rng)
                if click is not None:
                    clicks[i].append(click)
            previous = probs
        return prompt_maps(clicks, previous, cfg.click_radius, self.layout)

    def scribble_maps(self, batch: PatchBatch, context: torch.Tensor) -> torch.Tensor:
        """First scribbles from the ground truth, then (iteratively) a correction scribble per no-grad pass."""
        width = tuple(self.options.scribble_width)
        scribbles = [initial_scribbles(m, self.rng, width) for m in batch.masks_np]
        previous = torch.zeros_like(batch.masks)
        for _ in range(self.iterations()):
            probs = self.predict(batch, scribble_prompt_maps(scribbles, previous, self.layout), context, "scribbles")
            preds = (probs[:, 0] > 0.49).numpy()
            for i, gt in enumerate(batch.masks_np):
                s = correction_scribble(gt, preds[i], self.rng, width)
                if s is not None:
                    scribbles[i].append(s)
            previous = probs
        return scribble_prompt_maps(scribbles, previous, self.layout)

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        form = self.forms[0] if len(self.forms) == 1 else str(self.form_rng.choice(self.forms, p=self.shares))
        batch = self.samplers[form].sample(self.cfg.batch_size)
        for module in self.frozen:
            module.eval()
        with torch.set_grad_enabled(self.context_grad):
            context = self.net.encode_context(batch.contexts)
        if form == "clicks":
            maps = self.click_maps(batch, context)
        elif form == "scribbles":
            maps = self.scribble_maps(batch, context)
        else:
            assert batch.maps is not None
            maps = batch.maps
        out = self.net.forward_object(batch.images, maps, form, context, batch.boxes)
        loss = normalized_focal_loss(out["logits"], batch.masks)
        return {"loss": loss, "seg": loss.detach()}


# --------------------------------------------------------------------------------------------------- detail patches


@dataclass
class DetailSample:
    image: np.ndarray  # (p, p, 3) uint8
    alpha: np.ndarray  # (p, p) float32 in [0, 1]
    foreground: np.ndarray  # (p, p, 3) float32 0..255 (zeros for real samples)
    background: np.ndarray  # (p, p, 3) float32 0..255
    synthetic: bool
    primitive: np.ndarray | None = None  # (p, p) the Object-Net's own probabilities (None: simulate them)
    clicks: np.ndarray | None = None  # (2, p, p) the pipeline's positive / negative click disks with ``primitive``


def window_at(row: int, col: int, side: int, height: int, width: int) -> tuple[int, int, int, int]:
    """A ``side``² window centred on (row, col), moved inside a ``height`` x ``width`` image (side capped by it)."""
    side = max(1, min(side, height, width))
    y0 = int(np.clip(row - side // 2, 0, height - side))
    x0 = int(np.clip(col - side // 2, 0, width - side))
    return x0, y0, x0 + side, y0 + side


def pick_pixel(rng: np.random.Generator, *candidates: np.ndarray) -> tuple[int, int] | None:
    """A random (row, col) of the first non-empty bool map in ``candidates``."""
    for c in candidates:
        ys, xs = np.nonzero(c)
        if len(ys):
            i = int(rng.integers(len(ys)))
            return int(ys[i]), int(xs[i])
    return None


class DetailSampler:
    """Detail-Net samples: synthetic alpha composites and real objects' boundary patches, at ``size``²."""

    def __init__(self, bank: ObjectBank, indices: np.ndarray, weights: dict[int, float], cfg: TrainConfig,
                 rng: np.random.Generator) -> None:
        self.bank, self.rng = bank, rng
        self.options = options_of(cfg)
        self.size = int(self.options.detail_size)
        self.objects = BatchSampler(bank, indices, weights, ViewConfig(size=cfg.size), ClickSimConfig(), 0.0, rng)

    def source_side(self, limit: int) -> int:
        return max(8, min(limit, round(self.size * self.rng.uniform(*self.options.patch_scale))))

    def cut(self, arrays: list[np.ndarray], box: tuple[int, int, int, int]) -> list[np.ndarray]:
        x0, y0, x1, y1 = box
        return [resize(np.ascontiguousarray(a[y0:y1, x0:x1]), (self.size, self.size)) for a in arrays]

    def synthetic(self) -> DetailSample:
        rng, o = self.rng, self.options
        photo = self.bank.image(self.objects.draw_object())
        h, w = photo.shape[:2]
        side = min(o.synthetic_side, h, w)
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        background = resize(np.ascontiguousarray(photo[y:y + side, x:x + side]), (o.synthetic_side, o.synthetic_side))
        body = None
        if rng.random() < o.real_body_probability:
            index = self.objects.draw_object()
            x0, y0, x1, y1 = self.bank.objects[index].bbox
            body = (np.ascontiguousarray(self.bank.image(index)[y0:y1, x0:x1]),
                    np.ascontiguousarray(self.bank.mask(index)[y0:y1, x0:x1]))
        comp = render_alpha_composite(background, int(rng.integers(2**31 - 1)), None, body)
        alpha = comp.alpha
        fractional = (alpha > 0.02) & (alpha < 0.98)
        edge = comp.gt ^ cv2.erode(comp.gt.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        centre = pick_pixel(rng, fractional, edge, np.ones_like(comp.gt)) or (0, 0)
        box = window_at(*centre, self.source_side(o.synthetic_side), *alpha.shape)
        image, a, fg, bg = self.cut([comp.image, alpha, comp.foreground, comp.background.astype(np.float32)], box)
        return DetailSample(image, np.clip(a, 0, 1).astype(np.float32), fg.astype(np.float32),
                            bg.astype(np.float32), True)

    def real(self) -> DetailSample:
        rng = self.rng
        index = self.objects.draw_object()
        image, mask = self.bank.image(index), self.bank.mask(index)
        edge = mask ^ cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        centre = pick_pixel(rng, edge, mask) or (0, 0)
        box = window_at(*centre, self.source_side(min(mask.shape)), *mask.shape)
        patch, alpha = self.cut([image, mask.astype(np.float32)], box)
        zeros = np.zeros(patch.shape, np.float32)
        return DetailSample(patch, (alpha > 0.5).astype(np.float32), zeros, zeros, False)

    def sample(self) -> DetailSample:
        if self.rng.random() < self.options.synthetic_fraction:
            return self.synthetic()
        return self.real()


def simulated_primitive(alpha: np.ndarray, rng: np.random.Generator, coarse_probability: float = 0.0) -> np.ndarray:
    """Primitive probabilities as an Object-Net gives them around a boundary: with ``coarse_probability`` the alpha seen
    at a coarser scale first (area-downsampled 1.5-4x and bilinearly upsampled back, as the pipeline resizes the Object-Net's
    output to a detail patch), then its boundary moved by 0-3 px, blurred (sigma 0.8-3 px), with smooth noise
    (amplitude up to 0.15)."""
    a = alpha.astype(np.float32)
    if coarse_probability and rng.random() < coarse_probability:
        h, w = a.shape
        f = float(rng.uniform(1.5, 4.0))
        small = cv2.resize(a, (max(2, round(w / f)), max(2, round(h / f))), interpolation=cv2.INTER_AREA)
        a = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    k = int(rng.integers(0, 4))
    if k:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
        a = cv2.dilate(a, kernel) if rng.random() < 0.5 else cv2.erode(a, kernel)
    a = cv2.GaussianBlur(a, (0, 0), float(rng.uniform(0.8, 3.0)))
    amp = float(rng.uniform(0.0, 0.15))
    if amp:
        noise = rng.normal(0.0, amp, (6, 6)).astype(np.float32)
        a = a + cv2.resize(noise, alpha.shape[::-1], interpolation=cv2.INTER_CUBIC)
    return np.clip(a, 0.0, 1.0)


def click_maps_on(alpha: np.ndarray, rng: np.random.Generator, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Positive / negative maps of 1-3 click disks of ``radius`` px on sure foreground (alpha >= 0.99) / background
    (alpha <= 0.01) pixels."""
    h, w = alpha.shape
    pos, neg = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    r = max(1, round(radius))
    for _ in range(int(rng.integers(1, 4))):
        positive = rng.random() < 0.5
        where = alpha >= 0.99 if positive else alpha <= 0.01
        pixel = pick_pixel(rng, where)
        if pixel is not None:
            cv2.circle(pos if positive else neg, (pixel[1], pixel[0]), r, 1.0, -1)
    return pos, neg


class DetailSteps(Steps):
    """The detail stage: a batch of patches, simulated trimaps, the Detail-Net's alpha, alpha losses."""

    def __init__(self, setup: RunSetup, frozen: list[nn.Module]) -> None:
        self.cfg, self.net, self.rng = setup.cfg, xl_net(setup.net), setup.rng
        self.options = options_of(setup.cfg)
        self.frozen = frozen
        self.sampler = DetailSampler(setup.bank, setup.train_indices, setup.source_weights, setup.cfg, setup.rng)
        self.trimap_channels = int(self.net.detail.trimap_channels)
        self.primitive_input = bool(getattr(self.net.detail, "primitive_input", False))
        self.primitives = None
        if self.options.object_primitive_fraction > 0:
            from finecut.training.xl_primitives import PrimitivePatchSampler

            self.primitives = PrimitivePatchSampler(
                self.net, setup.bank, setup.train_indices, setup.source_weights, self.options.detail_size,
                setup.pipeline or {}, self.options.primitive_max_clicks,
                self.options.detail_click_radius, setup.cfg.threads, setup.rng)

    def sample(self) -> DetailSample:
        """A patch of the Object-Net's own primitive (``object_primitive_fraction``), else the sampler's."""
        if self.primitives is not None and self.rng.random() < self.options.object_primitive_fraction:
            patch = self.primitives.sample()
            zeros = np.zeros(patch.image.shape, np.float32)
            return DetailSample(patch.image, patch.alpha, zeros, zeros, False, patch.primitive, patch.clicks)
        return self.sampler.sample()

    def trimap(self, sample: DetailSample) -> tuple[torch.Tensor, torch.Tensor]:
        """A sample's trimap (1, C, p, p) and its unknown region (1, 1, p, p): from its own primitive and clicks when it
        has them, else from a simulated primitive and (``detail_click_probability``) simulated clicks."""
        o, rng, alpha = self.options, self.rng, sample.alpha
        pos = neg = None
        if sample.primitive is not None and sample.clicks is not None:
            probs = torch.from_numpy(sample.primitive)[None, None]
            pos, neg = torch.from_numpy(sample.clicks[0])[None, None], torch.from_numpy(sample.clicks[1])[None, None]
        else:
            probs = torch.from_numpy(simulated_primitive(alpha, rng, o.coarse_primitive_probability))[None, None]
            if rng.random() < o.detail_click_probability:
                p, n = click_maps_on(alpha, rng, o.detail_click_radius)
                pos, neg = torch.from_numpy(p)[None, None], torch.from_numpy(n)[None, None]
        one_hot = trimap_from_probs(probs, pos, neg, o.trimap_low, o.trimap_high, channels=3, band=o.trimap_band)
        trimap = one_hot if self.trimap_channels == 3 else one_hot[:, 1:2] + 0.5 * one_hot[:, 2:3]
        if self.primitive_input:  # the primitive probabilities as one more channel, as the pipeline gives them
            trimap = torch.cat([trimap, probs], dim=1)
        return trimap, one_hot[:, 2:3]

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        o = self.options
        for module in self.frozen:  # before sampling: the Object-Net's own primitives run the frozen parts
            module.eval()
        samples = [self.sample() for _ in range(self.cfg.batch_size)]
        images_u8 = np.stack([s.image for s in samples])
        images = normalize_batch(images_u8, self.net.input_spec)
        alpha = torch.from_numpy(np.stack([s.alpha for s in samples])[:, None])
        maps = [self.trimap(s) for s in samples]
        trimap = torch.cat([m[0] for m in maps])
        unknown = torch.cat([m[1] for m in maps])
        pred = self.net.forward_detail(images, trimap)["alpha"]
        weight = unknown + o.known_weight * (1.0 - unknown)
        terms = alpha_loss(pred, alpha, weight, l1=o.l1_weight, mse=o.mse_weight, gradient=o.gradient_weight)
        loss = terms["loss"]
        composition = pred.new_zeros(())
        synthetic = torch.tensor([s.synthetic for s in samples], dtype=pred.dtype).view(-1, 1, 1, 1)
        if o.composition_weight and bool(synthetic.any()):
            def rgb(key: str) -> torch.Tensor:
                return torch.from_numpy(np.stack([getattr(s, key) for s in samples]).astype(np.float32)
                                        ).permute(0, 3, 1, 2) / 255.0

            composition = alpha_composition_loss(pred, rgb("foreground"), rgb("background"), rgb("image"),
                                                 weight * synthetic)
            loss = loss + o.composition_weight * composition
        zero = pred.new_zeros(())
        return {"loss": loss, "alpha_l1": terms.get("alpha_l1", zero).detach(),
                "alpha_mse": terms.get("alpha_mse", zero).detach(), "alpha_grad": terms.get("alpha_grad", zero).detach(),
                "composition": composition.detach()}


# -------------------------------------------------------------------------------------------------------- the method


class FocalClickXLMethod(TrainingMethod):
    """FocalClick-XL's staged training (``[focalclick_xl].stage``: object, detail, prompting)."""

    name = "focalclick_xl"
    distributed = False
    engines: ClassVar[dict[str, str]] = {"focalclick_xl": "focalclick_xl"}

    def __init__(self) -> None:
        self._frozen: dict[int, list[nn.Module]] = {}

    def prepare(self, net: nn.Module, cfg: TrainConfig) -> nn.Module:
        """Initialise what the stage starts from (the object stage's warm start; the prompting stage's copy of the
        clicks layer) and freeze what it does not train."""
        xl = xl_net(net)
        options = options_of(cfg)
        init_doc = None
        if cfg.init_checkpoint:
            from finecut.models.checkpoint import read_checkpoint_config

            init_doc = read_checkpoint_config(checkpoint_path(cfg.init_checkpoint))
            if options.rebase_object:
                rebase(xl, options)
            if xl.detail.residual and not (init_doc["model"].get("detail_net") or {}).get("residual"):
                start_residual(xl)
        elif options.stage in ("detail", "object"):  # the stage that starts a chain (detail -> object -> prompting)
            warm_start(xl, cfg)
        elif options.stage == "prompting":
            raise FinecutError("the prompting stage tunes a click-pretrained network: set init_checkpoint to an "
                               "object-stage (or later) FocalClick-XL checkpoint")
        if options.stage == "prompting":
            if options.form not in xl.forms:
                raise FinecutError(f"[focalclick_xl].form {options.form!r}: the network has no such prompting layer "
                                   f"({list(xl.forms)})")
            tuned = options.form in tuned_forms(trained_stages(init_doc))
            if options.copy_clicks == "always" or (options.copy_clicks == "auto" and not tuned):
                xl.copy_prompting("clicks", options.form)
        self._frozen[id(xl)] = set_trainable(xl, options)
        return xl

    def steps(self, setup: RunSetup) -> Steps:
        options = options_of(setup.cfg)
        frozen = self._frozen.pop(id(setup.net), None)
        if frozen is None:  # prepare() not called on this net (a caller building its own setup)
            frozen = set_trainable(xl_net(setup.net), options)
        if options.stage == "detail":
            return DetailSteps(setup, frozen)
        form = options.form if options.stage == "prompting" else "clicks"
        return ObjectSteps(setup, form, frozen)

    def validation_engine(self, net: nn.Module, cfg: TrainConfig) -> Engine | None:
        """The FocalClick-XL pipeline (clicks, Detail-Net included) when it is installed; None for the prompting
        stage, whose layer the click loop never uses."""
        if options_of(cfg).stage == "prompting":
            return None
        try:
            from finecut.pipelines.focalclick_xl import FocalClickXLEngine
        except ImportError:
            return None
        training = net.training
        try:
            engine = FocalClickXLEngine(net, threads=max(1, cfg.threads))
        finally:
            net.train(training)  # the engine puts the network in eval mode; the loop switches it for validation
        return engine


FOCALCLICK_XL = FocalClickXLMethod()

__all__ = ["FOCALCLICK_XL", "FocalClickXLMethod", "checkpoint_path", "context_trainable", "set_trainable",
           "start_residual", "rebase", "trained_stages", "tuned_forms", "warm_start"]
