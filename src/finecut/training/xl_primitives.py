"""Detail-Net training patches on the Object-Net's own primitives (``[focalclick_xl].object_primitive_fraction``).

The detail stage's simulated primitive (the ground truth moved, blurred and noised:
:func:`~finecut.training.focalclick_xl.simulated_primitive`) is not what the Detail-Net meets at inference, and a
Detail-Net trained on it alone made the shipped FocalClick-XL's masks worse. These samples are what it meets: a bank
object (training split) runs through the FocalClick-XL pipeline itself with its Detail-Net off and the init
checkpoint's inference settings (target crop, flip TTA, ...) — a first click and up to ``primitive_max_clicks - 1``
corrective clicks of the training click simulator, each on the pipeline's own last mask — and the windows the pipeline
would refine after the last click (:meth:`~finecut.pipelines.focalclick_xl.FocalClickXLEngine.detail_windows`) become
samples: each window's image, primitive probabilities, clicks and ground truth resized to ``detail_size``² as the
pipeline resizes a window (:func:`~finecut.model_inputs.resize`: area when shrinking, so the ground truth becomes each
patch pixel's coverage, the alpha target).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from finecut.errors import FinecutError
from finecut.model_inputs import crop_prompt_maps, resize
from finecut.prompts import Click, Prompts
from finecut.training.augment import ViewConfig
from finecut.training.batch import BatchSampler
from finecut.training.clicks import ClickSimConfig, next_training_click
from finecut.training.objects import ObjectBank


@dataclass(frozen=True)
class PrimitivePatch:
    """One detail window of a pipeline run, at ``detail_size``²."""

    image: np.ndarray  # (p, p, 3) uint8
    alpha: np.ndarray  # (p, p) float32: the ground truth's coverage of each patch pixel
    primitive: np.ndarray  # (p, p) float32: the Object-Net's probabilities
    clicks: np.ndarray  # (2, p, p) float32: positive / negative click disks (detail_click_radius patch pixels)


class PrimitivePatchSampler:
    """Patches of the pipeline's detail windows on bank objects (module docstring); objects are drawn by the run's
    source weights, and each object's windows are handed out one by one before the next object runs."""

    def __init__(self, net: nn.Module, bank: ObjectBank, indices: np.ndarray, weights: dict[int, float],
                 size: int, pipeline: dict[str, Any], max_clicks: int, click_radius: float, threads: int,
                 rng: np.random.Generator) -> None:
        from finecut.pipelines.focalclick_xl import FocalClickXLEngine
        from finecut.predictor import Predictor

        training = net.training
        try:
            live = {**pipeline, "detail": False, "fuse_batchnorm": False}  # the net trains on: no frozen copy
            self.engine = FocalClickXLEngine(net, threads=max(1, threads), **live)
        finally:
            net.train(training)  # the engine puts the network in eval mode; object_patches switches it per run
        self.predictor = Predictor(self.engine, honour_clicks=False)
        self.bank, self.rng, self.size = bank, rng, int(size)
        self.max_clicks, self.click_radius = max(1, int(max_clicks)), float(click_radius)
        self.objects = BatchSampler(bank, indices, weights, ViewConfig(size=self.size), ClickSimConfig(), 0.0, rng)
        self.queue: list[PrimitivePatch] = []

    def sample(self) -> PrimitivePatch:
        for _ in range(100):  # an object whose pipeline run leaves nothing uncertain gives no window
            if self.queue:
                return self.queue.pop()
            self.queue = self.object_patches(self.objects.draw_object())
        raise FinecutError("object_primitive_fraction: 100 bank objects in a row left no low-confidence pixels for "
                           "the Detail-Net (the Object-Net is sure of every pixel); lower the fraction")

    def object_patches(self, index: int) -> list[PrimitivePatch]:
        """The patches of one object's pipeline run, every network part in eval mode for it (the modes restored)."""
        net = self.engine.net
        modes = {module: module.training for module in net.modules()}
        net.eval()
        try:
            with torch.no_grad():
                return self.run_object(index)
        finally:
            for module, mode in modes.items():
                module.training = mode

    def run_object(self, index: int) -> list[PrimitivePatch]:
        image, gt = self.bank.image(index), self.bank.mask(index).astype(bool)
        self.predictor.set_image(image)
        clicks: list[Click] = []
        prediction = None
        mask = np.zeros_like(gt)
        for _ in range(int(self.rng.integers(1, self.max_clicks + 1))):
            click = next_training_click(gt, mask, clicks, self.rng)
            if click is None:
                break
            clicks.append(click)
            prediction = self.predictor.predict(clicks=clicks, previous=prediction)
            mask = prediction.mask
        if prediction is None:
            return []
        return self.windows(image, gt, prediction.probs, tuple(prediction.state["target_crop"]), clicks)

    def windows(self, image: np.ndarray, gt: np.ndarray, probs: np.ndarray, crop_box: tuple[int, ...],
                clicks: list[Click]) -> list[PrimitivePatch]:
        from finecut.pipelines.transforms import Crop

        x0, y0, x1, y1 = (int(v) for v in crop_box)
        crop = Crop((x0, y0, x1, y1), self.engine.input_size(x1 - x0, y1 - y0))
        boxes, _ = self.engine.detail_windows(crop, probs.copy(), gt.shape)
        drawn = Prompts(clicks=tuple(clicks))
        side = (self.size, self.size)
        out = []
        for bx0, by0, bx1, by1 in boxes:
            maps = crop_prompt_maps(drawn, drawn.clicks, probs, (bx0, by0, bx1, by1), side,
                                    self.click_radius, ("positive", "negative"))
            out.append(PrimitivePatch(
                image=resize(np.ascontiguousarray(image[by0:by1, bx0:bx1]), side),
                alpha=resize(np.ascontiguousarray(gt[by0:by1, bx0:bx1], dtype=np.float32), side),
                primitive=resize(np.ascontiguousarray(probs[by0:by1, bx0:bx1]), side),
                clicks=maps[0].numpy().astype(np.float32)))
        self.rng.shuffle(out)  # type: ignore[arg-type]
        return out


__all__ = ["PrimitivePatch", "PrimitivePatchSampler"]
