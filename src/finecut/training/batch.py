"""Assembling training batches: views of random objects, their clicks, and the tensors the networks take."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from finecut.model_inputs import PromptLayout, batch_prompt_maps, normalize_batch
from finecut.prompts import Click
from finecut.training.augment import View, ViewConfig, random_view
from finecut.training.clicks import ClickSimConfig, corrupt_mask, next_training_click, sample_initial_clicks
from finecut.training.objects import ObjectBank
from finecut.training.synthetic import SYNTHETIC_OBJECT_ID, SyntheticPool, synthetic_view


def to_tensor_images(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32, ImageNet-normalized, channels-last memory
    (:func:`finecut.model_inputs.normalize_batch`, the training path)."""
    return normalize_batch(images)


def prompt_maps(clicks: list[list[Click]], previous: torch.Tensor, radius: float,
                channels: int | PromptLayout = 4,
                memory_format: torch.memory_format = torch.channels_last) -> torch.Tensor:
    """(B, C, H, W) prompt maps at the batch's resolution (:func:`finecut.model_inputs.batch_prompt_maps`).

    ``channels`` is a network's prompt layout (``net.input_spec.prompt_layout``, e.g. the ECP's
    ``("positive", "negative", "tolerant")``), or an int N for the first N of ``[previous mask, positive, negative,
    tolerant]``."""
    return batch_prompt_maps(clicks, previous, radius, channels, memory_format)


@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, S, S) normalized
    images_hi: torch.Tensor  # (B, 3, kS, kS) normalized
    masks: torch.Tensor  # (B, 1, S, S) float 0/1
    masks_hi: torch.Tensor  # (B, 1, kS, kS)
    masks_np: np.ndarray  # (B, S, S) bool
    clicks: list[list[Click]]
    previous: torch.Tensor  # (B, 1, S, S) prior mask or zeros
    object_ids: list[int] = field(default_factory=list)


class BatchSampler:
    """Draws objects from an :class:`ObjectBank` (weighted by source) and builds :class:`Batch` es."""

    def __init__(self, bank: ObjectBank, indices: np.ndarray, source_weights: dict[int, float],
                 view: ViewConfig, clicks: ClickSimConfig, prior_mask_probability: float,
                 rng: np.random.Generator, synthetic_probability: float = 0.0) -> None:
        self.bank = bank
        self.view = view
        self.click_cfg = clicks
        self.prior_mask_probability = prior_mask_probability
        self.rng = rng
        by_source: dict[int, list[int]] = {}
        for i in indices:
            by_source.setdefault(bank.objects[i].source, []).append(int(i))
        self.groups = {s: np.asarray(v) for s, v in by_source.items() if source_weights.get(s, 0) > 0}
        if not self.groups:
            raise ValueError("no objects to sample from")
        keys = sorted(self.groups)
        weights = np.array([source_weights[k] for k in keys], dtype=np.float64)
        self.source_keys = keys
        self.source_probs = weights / weights.sum()
        self.synthetic_probability = synthetic_probability  # procedural thin structures / cutouts (synthetic.py)
        self.synthetic_pool = (SyntheticPool.of(bank, np.concatenate([self.groups[k] for k in keys]))
                               if synthetic_probability > 0 else None)

    def draw_object(self) -> int:
        source = self.source_keys[self.rng.choice(len(self.source_keys), p=self.source_probs)]
        group = self.groups[source]
        return int(group[self.rng.integers(len(group))])

    def draw_view(self, view: ViewConfig | None = None) -> tuple[int, View]:
        """One augmented training view (``view`` overrides the sampler's sizes): a bank object, or with
        ``synthetic_probability`` a synthetic one (index :data:`SYNTHETIC_OBJECT_ID`)."""
        view = view or self.view
        if self.synthetic_probability > 0 and self.rng.random() < self.synthetic_probability:
            return SYNTHETIC_OBJECT_ID, synthetic_view(self.bank, self.rng, view, pool=self.synthetic_pool)
        index = self.draw_object()
        obj = self.bank.objects[index]
        return index, random_view(self.bank.image(index), self.bank.mask(index), obj.bbox, self.rng, view)

    def sample(self, batch_size: int, size: int | None = None) -> Batch:
        """``batch_size`` views at the sampler's crop size (or ``size``, e.g. a small-size training stage)."""
        view_cfg = self.view if size is None or size == self.view.size else dataclasses.replace(self.view, size=size)
        images, images_hi, masks, masks_hi, clicks, prevs, ids = [], [], [], [], [], [], []
        for _ in range(batch_size):
            index, view = self.draw_view(view_cfg)
            prev = np.zeros(view.mask.shape, dtype=np.float32)
            if self.rng.random() < self.prior_mask_probability:
                prior = corrupt_mask(view.mask, self.rng)
                prev = prior.astype(np.float32)
                sample_clicks: list[Click] = []
                for _ in range(int(self.rng.integers(1, 4))):
                    click = next_training_click(view.mask, prior, sample_clicks, self.rng)
                    if click is None:
                        break
                    sample_clicks.append(click)
            else:
                sample_clicks = sample_initial_clicks(view.mask, self.rng, self.click_cfg)
            images.append(view.image)
            images_hi.append(view.image_hi)
            masks.append(view.mask)
            masks_hi.append(view.mask_hi)
            clicks.append(sample_clicks)
            prevs.append(prev)
            ids.append(index)
        masks_np = np.stack(masks)
        return Batch(
            images=to_tensor_images(np.stack(images)),
            images_hi=to_tensor_images(np.stack(images_hi)),
            masks=torch.from_numpy(masks_np[:, None].astype(np.float32)),
            masks_hi=torch.from_numpy(np.stack(masks_hi)[:, None].astype(np.float32)),
            masks_np=masks_np,
            clicks=clicks,
            previous=torch.from_numpy(np.stack(prevs)[:, None]),
            object_ids=ids,
        )
