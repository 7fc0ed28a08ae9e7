"""GrabCut (Rother et al. 2004, OpenCV's implementation) driven by clicks, boxes, scribbles and prior masks.

Each step builds OpenCV's four-label mask at the working resolution: hard seeds (click disks, scribbles, the outside of
a box) are ``GC_FGD`` / ``GC_BGD``; everything else is ``GC_PR_FGD`` / ``GC_PR_BGD`` from the best current estimate
(the previous step's mask, else the prior mask, else the box, else a disk around each positive click), with a disk
of the click's probable label around every click once an estimate exists, and tolerant clicks add a ``GC_PR_FGD``
area. Probable labels only decide which colour model a pixel trains at the start; the graph cut relabels every one
of them. Object parts not connected to any positive seed are dropped, and probabilities are a sigmoid of the signed
distance to the resulting boundary, so they threshold back to GrabCut's labels exactly.

The two colour models (``bgdModel`` / ``fgdModel``, 5-component GMMs) are carried from step to step in
:attr:`EngineOutput.state`, so a click sequence continues from where the last step left off without hidden state. The
first step fits them with a k-means on a fixed subsample of pixels (seeded through ``cv2.setRNGSeed``), much faster
than OpenCV's own initialisation on every pixel and just as good a starting point, since each GrabCut iteration
re-learns them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from finecut.engines.base import EngineOutput, Prediction
from finecut.engines.seeds import (
    SeededEngine,
    Seeds,
    WorkingImage,
    border_mask,
    colour_match,
    empty_probs,
    mask_to_working,
    seed_connected,
    signed_distance_probs,
    to_original,
)
from finecut.errors import FinecutError
from finecut.prompts import Prompts, click_window


#: OpenCV's GMMs: 5 components, each 1 weight + 3 means + 9 covariance entries, stored weights|means|covariances.
GMM_COMPONENTS = 5
GMM_SIZE = GMM_COMPONENTS * 13
#: State keys this engine reads back from ``previous.state``.
STATE_BGD, STATE_FGD = "grabcut_bgd_model", "grabcut_fgd_model"


def fit_gmm(pixels: np.ndarray, max_samples: int = 4000, attempts: int = 1) -> np.ndarray:
    """A GrabCut colour model (float64, shape (1, 65)) fitted to ``pixels`` ((N, 3), 0-255 colour values).

    k-means (k-means++ seeding, OpenCV's RNG) on at most ``max_samples`` evenly spaced pixels, then each cluster's
    weight, mean and covariance, with 0.01 added to the variances like OpenCV does. Needs at least one pixel.
    """
    data = np.asarray(pixels, dtype=np.float32).reshape(-1, 3)
    if data.shape[0] == 0:
        raise FinecutError("cannot fit a colour model to no pixels")
    step = max(1, data.shape[0] // max_samples)
    sample = np.ascontiguousarray(data[::step])
    k = min(GMM_COMPONENTS, sample.shape[0])
    if k > 1:
        criteria = (cv2.TERM_CRITERIA_MAX_ITER + cv2.TERM_CRITERIA_EPS, 10, 0.5)
        _, labels, _ = cv2.kmeans(sample, k, None, criteria, attempts, cv2.KMEANS_PP_CENTERS)
        labels = labels.ravel()
    else:
        labels = np.zeros(sample.shape[0], dtype=np.int32)
    model = np.zeros(GMM_SIZE, dtype=np.float64)
    weights, means, covs = model[:GMM_COMPONENTS], model[GMM_COMPONENTS:20].reshape(5, 3), model[20:].reshape(5, 3, 3)
    for comp in range(k):
        members = sample[labels == comp].astype(np.float64)
        if members.shape[0] == 0:
            continue
        weights[comp] = members.shape[0] / sample.shape[0]
        means[comp] = members.mean(axis=0)
        centred = members - means[comp]
        covs[comp] = centred.T @ centred / members.shape[0] + 0.01 * np.eye(3)
    return model.reshape(1, GMM_SIZE)


def _state_model(previous: Prediction | None, key: str) -> np.ndarray | None:
    if previous is None or key not in previous.state:
        return None
    model = np.asarray(previous.state[key], dtype=np.float64)
    if model.size != GMM_SIZE or not np.all(np.isfinite(model)):
        raise FinecutError(f"previous prediction's {key} is not a GrabCut colour model ({GMM_SIZE} finite numbers)")
    return model.reshape(1, GMM_SIZE).copy()  # OpenCV updates models in place; never touch the previous step's


@dataclass(frozen=True)
class GrabCutEngine(SeededEngine):
    """GrabCut on a working copy of the image, long side at most ``max_side``.

    Options: ``click_radius`` (hard-seed disk radius, working px), ``tolerant_radius`` (probable-foreground disk of
    a tolerant click), ``colour_gate`` (click disks keep pixels within this Lab distance of the clicked colour; None:
    whole disks), ``iterations`` (GrabCut iterations on a first step) and ``update_iterations`` (on later steps,
    continuing from the previous colour models), ``click_region`` / ``correction_region`` (radii of the
    probable-label disks around clicks on a first step / on later steps, as fractions of the working image
    diagonal; see :meth:`initial_estimate`), ``correction_gate`` (later-step disks keep pixels within this Lab
    distance of the clicked colour, so a click on a thin part does not teach the colour model its surroundings),
    ``keep_connected`` (drop object parts not connected to a positive seed), ``softness`` (width in working px of
    the probability ramp across the boundary) and ``seed`` (OpenCV RNG seed).
    """

    name: ClassVar[str] = "grabcut"
    features_type: ClassVar[type] = WorkingImage

    max_side: int = 320
    click_radius: float = 5.0
    tolerant_radius: float = 8.0
    colour_gate: float | None = 25.0
    iterations: int = 4
    update_iterations: int = 2
    click_region: float = 0.15
    correction_region: float = 0.06
    correction_gate: float | None = 25.0
    keep_connected: bool = True
    softness: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.check_seed_options()
        if self.iterations < 1 or self.update_iterations < 1:
            raise FinecutError(
                f"grabcut: iterations and update_iterations must be >= 1, got {self.iterations}, "
                f"{self.update_iterations}"
            )
        for key in ("click_region", "correction_region"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise FinecutError(f"grabcut: {key} must be in [0, 1], got {getattr(self, key)}")
        if self.correction_gate is not None and self.correction_gate <= 0:
            raise FinecutError(f"grabcut: correction_gate must be > 0 (Lab units) or None, got {self.correction_gate}")
        if self.softness <= 0:
            raise FinecutError(f"grabcut: softness must be > 0, got {self.softness}")

    def encode_image(self, image: np.ndarray) -> WorkingImage:
        return WorkingImage.build(image, self.max_side)

    def initial_estimate(
        self, work: WorkingImage, prompts: Prompts, seeds: Seeds, previous: Prediction | None
    ) -> np.ndarray:
        """The probable-foreground map at the start of a step (bool, working resolution).

        The previous step's mask if it has any object, else the prior mask, else the box interior, else nothing;
        then, click by click (later clicks win), a disk around each click is marked probably object (positive and
        tolerant clicks) or probably background (negative clicks): ``click_region`` on a first step,
        ``correction_region`` (limited to pixels within ``correction_gate`` of the clicked colour) once an estimate
        exists. Radii are fractions of the working image diagonal.
        """
        height, width = work.shape
        estimate = None
        if previous is not None:
            estimate = mask_to_working(previous.mask, work.transform)
        if (estimate is None or not estimate.any()) and seeds.prior is not None and seeds.prior.any():
            estimate = seeds.prior.copy()
        if (estimate is None or not estimate.any()) and seeds.box is not None:
            x0, y0, x1, y1 = seeds.box
            estimate = np.zeros((height, width), dtype=bool)
            estimate[y0:y1, x0:x1] = True
        first_step = estimate is None or not estimate.any()
        region = self.click_region if first_step else self.correction_region
        canvas = np.zeros((height, width), dtype=bool) if first_step else estimate.copy()
        radius = region * float(np.hypot(height, width))
        if radius >= 1:
            for click in prompts.clicks:
                if first_step and click.is_negative:
                    continue
                rows, cols, disk = click_window(click, work.transform, radius)
                if disk is None:
                    continue
                if not first_step and self.correction_gate is not None:
                    disk &= colour_match(work.lab[rows, cols], work.lab, click, work.transform, self.correction_gate)
                canvas[rows, cols][disk] = not click.is_negative
        return canvas

    def segment(
        self, features: WorkingImage, work: WorkingImage, seeds: Seeds, prompts: Prompts, previous: Prediction | None
    ) -> EngineOutput:
        height, width = work.original_size
        probable = self.initial_estimate(work, prompts, seeds, previous) | seeds.tolerant
        gc_mask = np.where(probable, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
        gc_mask[seeds.fg] = cv2.GC_FGD
        gc_mask[seeds.bg] = cv2.GC_BGD

        is_fg = (gc_mask == cv2.GC_FGD) | (gc_mask == cv2.GC_PR_FGD)
        if not is_fg.any():  # e.g. a box entirely covered by negative seeds
            return EngineOutput(empty_probs((height, width)))
        if is_fg.all():  # no background anywhere: the image frame is probably background
            frame = border_mask(work.shape) & (gc_mask == cv2.GC_PR_FGD)
            gc_mask[frame] = cv2.GC_PR_BGD
            is_fg &= ~frame

        if is_fg.all():  # everything is hard foreground
            result = is_fg
            bgd = _state_model(previous, STATE_BGD)
            fgd = _state_model(previous, STATE_FGD)
        else:
            result, bgd, fgd = self._grabcut(work.image, gc_mask, is_fg, previous)

        if self.keep_connected:
            result = seed_connected(result, seeds.fg | seeds.tolerant)
        probs = to_original(signed_distance_probs(result, self.softness), height, width)
        state: dict[str, Any] = {}
        if bgd is not None and fgd is not None:
            state = {STATE_BGD: bgd.ravel(), STATE_FGD: fgd.ravel()}
        return EngineOutput(probs, state)

    def _grabcut(
        self,
        image: np.ndarray,
        gc_mask: np.ndarray,
        is_fg: np.ndarray,
        previous: Prediction | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        bgd = _state_model(previous, STATE_BGD)
        fgd = _state_model(previous, STATE_FGD)
        cv2.setRNGSeed(self.seed)
        if bgd is None or fgd is None:
            pixels = image.reshape(-1, 3)
            bgd = fit_gmm(pixels[~is_fg.ravel()])
            fgd = fit_gmm(pixels[is_fg.ravel()])
            iterations = self.iterations
        else:
            iterations = self.update_iterations
        cv2.grabCut(image, gc_mask, None, bgd, fgd, iterations, cv2.GC_EVAL)
        result = (gc_mask == cv2.GC_FGD) | (gc_mask == cv2.GC_PR_FGD)
        return result, bgd, fgd
