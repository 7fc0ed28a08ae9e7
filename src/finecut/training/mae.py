"""The MAE training method: masked-autoencoder pretraining of SimpleClick's plain ViT (arch ``mae_vit``).

Per step: draw ``batch_size`` whole training photos of the object bank (the images of the split's training objects,
weighted by ``[data].weights`` per source; the held-out images are never drawn), cut a random crop of each (area
``[mae].crop_scale`` of the photo, aspect ratio ``[mae].crop_ratio``), flip it with probability ``[mae].flip``,
resize it to ``size``² and ImageNet-normalise; hide ``mask_ratio`` of its patches (masks drawn from a torch generator
seeded from the run's sample stream) and return the reconstruction loss of
:class:`finecut.models.mae.MaskedAutoencoderViT`. No held-out validation (the loss is logged); checkpoints open as no
engine (``"engine": "none"``): their encoder starts a SimpleClick run (``init_backbone_checkpoint``).
"""

from __future__ import annotations

import math
from typing import ClassVar

import cv2
import numpy as np
import torch
import torch.nn as nn

from finecut.model_inputs import normalize_batch
from finecut.training.config import MAEOptions, TrainConfig
from finecut.training.method import RunSetup, Steps, TrainingMethod
from finecut.training.objects import ObjectBank

#: The loss terms a step logs.
LOSS_KEYS = ("loss",)


def options_of(cfg: TrainConfig) -> MAEOptions:
    return cfg.mae if cfg.mae is not None else MAEOptions()


def random_resized_crop(image: np.ndarray, size: int, scale: tuple[float, float], ratio: tuple[float, float],
                        flip: float, rng: np.random.Generator) -> np.ndarray:
    """A random crop of ``image`` (area share in ``scale``, aspect ratio w/h log-uniform in ``ratio``), flipped
    with probability ``flip``, resized to ``size``² (torchvision's RandomResizedCrop, ten tries then the centre)."""
    h, w = image.shape[:2]
    area = h * w
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    box = None
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        cw = round(math.sqrt(target * aspect))
        ch = round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            y0 = int(rng.integers(0, h - ch + 1))
            x0 = int(rng.integers(0, w - cw + 1))
            box = (x0, y0, cw, ch)
            break
    if box is None:  # centre crop at the nearest allowed aspect ratio
        aspect = w / h
        if aspect < ratio[0]:
            cw, ch = w, round(w / ratio[0])
        elif aspect > ratio[1]:
            ch, cw = h, round(h * ratio[1])
        else:
            cw, ch = w, h
        box = ((w - cw) // 2, (h - ch) // 2, cw, ch)
    x0, y0, cw, ch = box
    crop = image[y0:y0 + ch, x0:x0 + cw]
    interp = cv2.INTER_AREA if min(cw, ch) > size else cv2.INTER_CUBIC
    out = cv2.resize(crop, (size, size), interpolation=interp)
    if rng.random() < flip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


class PhotoSampler:
    """Whole photos of a bank's training split, weighted by source."""

    def __init__(self, bank: ObjectBank, train_indices: np.ndarray, source_weights: dict[int, float],
                 rng: np.random.Generator) -> None:
        self.bank, self.rng = bank, rng
        images = sorted({bank.objects[int(i)].image_index for i in train_indices})
        by_source: dict[int, list[int]] = {}
        for index in images:
            by_source.setdefault(bank.image_sources[index], []).append(index)
        self.groups = [np.asarray(v) for k, v in sorted(by_source.items()) if source_weights.get(k, 1.0) > 0]
        weights = np.array([source_weights.get(k, 1.0) for k in sorted(by_source) if source_weights.get(k, 1.0) > 0])
        if not self.groups:
            raise ValueError("no training photos in the object bank")
        self.p = weights / weights.sum()

    def draw(self) -> np.ndarray:
        group = self.groups[int(self.rng.choice(len(self.groups), p=self.p))]
        return self.bank.images[int(group[int(self.rng.integers(len(group)))])]


class MAESteps(Steps):
    def __init__(self, setup: RunSetup) -> None:
        cfg = setup.cfg
        self.cfg, self.options, self.rng = cfg, options_of(cfg), setup.rng
        self.photos = PhotoSampler(setup.bank, setup.train_indices, setup.source_weights, setup.rng)
        self.model: nn.Module = setup.net
        if setup.world > 1:
            self.model = nn.parallel.DistributedDataParallel(setup.net)

    def batch(self) -> torch.Tensor:
        o, size = self.options, self.cfg.size
        crops = [random_resized_crop(self.photos.draw(), size, o.crop_scale, o.crop_ratio, o.flip, self.rng)
                 for _ in range(self.cfg.batch_size)]
        return normalize_batch(np.stack(crops)).contiguous()

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        images = self.batch()
        generator = torch.Generator().manual_seed(int(self.rng.integers(0, 2**62)))
        out = self.model(images, generator=generator, mask_ratio=self.options.mask_ratio)
        return {key: out[key] for key in LOSS_KEYS}


class MAEMethod(TrainingMethod):
    """MAE pretraining of a plain ViT encoder (whole photos, no clicks, no validation engine)."""

    name = "mae"
    distributed = True
    engines: ClassVar[dict[str, str]] = {"mae_vit": "none"}

    def steps(self, setup: RunSetup) -> Steps:
        return MAESteps(setup)


MAE = MAEMethod()
