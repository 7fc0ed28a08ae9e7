"""Random walker segmentation (Grady 2006) with scikit-image's solver, soft seeds included (Grady 2005 priors).

A pixel's probability of being object is the probability that a random walker leaving it, stepping to neighbours
with weights ``exp(-beta * |ΔRGB|² / (10 * std * sqrt(3)))`` (scikit-image's convention), first reaches a
foreground seed rather than a background one: ``skimage.segmentation.random_walker`` with ``return_full_prob``,
solved directly (mode ``"bf"``). Hard seeds are click disks, scribbles and the outside of a box.

Soft evidence is expressed inside the same solver as a second layer of the grid: every pixel is tied to a fixed
node of that layer, labelled foreground or background, by an edge whose weight is the strength of the evidence
(the layer's colour is the pixel's own plus an offset chosen to give exactly that weight). This is Grady's random
walker with priors: tolerant clicks pull their area towards the object with ``tolerant_weight``, a box's interior
with ``box_weight``, the cores of a prior mask's inside and outside towards its labels with ``prior_weight``, and
the image frame towards the background with ``border_weight`` (which also makes a lone positive click well posed).
Pixels with no evidence get a negligible tie. The engine has no memory: ``previous`` is not needed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from skimage.segmentation import random_walker

from finecut.engines.base import EngineOutput, Prediction
from finecut.engines.seeds import (
    SeededEngine,
    Seeds,
    WorkingImage,
    border_mask,
    frozen,
    to_original,
)
from finecut.errors import FinecutError
from finecut.prompts import Prompts


#: Labels handed to scikit-image: 0 unlabelled, 1 background, 2 foreground.
_UNLABELLED, _BG, _FG = 0, 1, 2
#: Exponent giving a tie weight of e^-60, i.e. no tie at all, for pixels without soft evidence.
_NO_TIE = 60.0
#: scikit-image solvers: a direct sparse LU solve, or conjugate gradients (plain / Jacobi / multigrid-preconditioned).
_MODES = ("bf", "cg", "cg_j", "cg_mg")
#: Lower bound of the image's standard deviation (a uniform image still has well-defined, uniform weights).
_MIN_STD = 1e-3


@dataclass(frozen=True)
class RandomWalkerFeatures:
    """The working image and its colours as float64 RGB in [0, 1] with their standard deviation."""

    work: WorkingImage
    data: np.ndarray
    std: float


@dataclass(frozen=True)
class RandomWalkerEngine(SeededEngine):
    """scikit-image's random walker on a working copy of the image, long side at most ``max_side``.

    Options: ``click_radius`` / ``tolerant_radius`` (seed disks, working px), ``colour_gate`` (click disks keep
    pixels within this Lab distance of the clicked colour; None: whole disks), ``prior_band`` (working px either
    side of a prior mask's boundary left free), ``beta`` (edge sensitivity, as in scikit-image), ``mode``
    (scikit-image's solver: ``"bf"``, one sparse LU factorisation, is by far the fastest at working resolutions; the
    conjugate-gradient modes converge slowly across strong edges), ``tol`` (their tolerance), and the tie weights of
    soft evidence, ``tolerant_weight``, ``prior_weight``, ``box_weight`` and ``border_weight`` (in [0, 1]; an edge
    between equal colours weighs 1, one across a clear edge far less; 0 turns a tie off).
    """

    name: ClassVar[str] = "random_walker"
    features_type: ClassVar[type] = RandomWalkerFeatures

    max_side: int = 192
    click_radius: float = 3.0
    tolerant_radius: float = 6.0
    colour_gate: float | None = 25.0
    beta: float = 2000.0
    mode: str = "bf"
    tol: float = 1e-3
    tolerant_weight: float = 0.05
    prior_weight: float = 1e-3
    prior_band: float = 3.0
    box_weight: float = 1e-4
    border_weight: float = 0.02

    def __post_init__(self) -> None:
        self.check_seed_options()
        if self.mode not in _MODES:
            raise FinecutError(f"random_walker: mode must be one of {', '.join(_MODES)}, got {self.mode!r}")
        if self.beta <= 0 or not 0 < self.tol < 1:
            raise FinecutError(f"random_walker: beta must be > 0 and tol in (0, 1), got {self.beta}, {self.tol}")
        if self.prior_band < 0:
            raise FinecutError(f"random_walker: prior_band must be >= 0, got {self.prior_band}")
        for key in ("tolerant_weight", "prior_weight", "box_weight", "border_weight"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise FinecutError(f"random_walker: {key} must be in [0, 1], got {value}")

    def encode_image(self, image: np.ndarray) -> RandomWalkerFeatures:
        work = WorkingImage.build(image, self.max_side)
        data = work.image.astype(np.float64) / 255.0
        return RandomWalkerFeatures(work, frozen(data), max(float(data.std()), _MIN_STD))

    def soft_ties(self, seeds: Seeds) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel: the label of its soft tie (``_FG`` / ``_BG``) and the tie's weight (0 where none)."""
        label = np.full(seeds.shape, _BG, dtype=np.int32)
        weight = np.zeros(seeds.shape, dtype=np.float64)
        if self.border_weight > 0:
            weight[border_mask(seeds.shape)] = self.border_weight
        if seeds.box is not None and self.box_weight > 0:
            label[seeds.box_interior] = _FG
            weight[seeds.box_interior] = self.box_weight
        if seeds.prior is not None and self.prior_weight > 0:
            inside, outside = seeds.prior_cores(self.prior_band)
            label[inside], label[outside] = _FG, _BG
            weight[inside | outside] = self.prior_weight
        if self.tolerant_weight > 0:
            label[seeds.tolerant] = _FG
            weight[seeds.tolerant] = self.tolerant_weight
        hard = seeds.fg | seeds.bg
        weight[hard] = 0.0
        return label, weight

    def segment(
        self, features: RandomWalkerFeatures, work: WorkingImage, seeds: Seeds, prompts: Prompts,
        previous: Prediction | None,
    ) -> EngineOutput:
        hard = np.full(seeds.shape, _UNLABELLED, dtype=np.int32)
        hard[seeds.bg] = _BG
        hard[seeds.fg] = _FG
        tie_label, tie_weight = self.soft_ties(seeds)
        if not (hard == _UNLABELLED).any():
            probs = (hard == _FG).astype(np.float32)
        elif not ((hard == _FG).any() or (tie_label[tie_weight > 0] == _FG).any()):
            probs = np.zeros(seeds.shape, dtype=np.float32)  # nothing pulls towards the object
        elif not ((hard == _BG).any() or (tie_label == _BG).any()):
            probs = np.ones(seeds.shape, dtype=np.float32)  # nothing pulls towards the background
        else:
            probs = self._solve(features, hard, tie_label, tie_weight)
        return EngineOutput(to_original(probs, *work.original_size))

    def _solve(
        self, feats: RandomWalkerFeatures, hard: np.ndarray, tie_label: np.ndarray, tie_weight: np.ndarray
    ) -> np.ndarray:
        """Foreground probability (h, w) of the two-layer problem (pixels + their fixed soft-tie nodes)."""
        channels = feats.data.shape[-1]
        # scikit-image's weights are exp(-kappa * |Δ|²) with kappa = beta / (10 * std(data) * sqrt(channels)); the
        # beta passed below compensates for the tie layer changing std(data), so kappa stays that of the image.
        kappa = self.beta / (10.0 * feats.std * np.sqrt(channels))
        exponent = np.where(tie_weight > 0, -np.log(np.clip(tie_weight, 1e-300, 1.0)), _NO_TIE)
        offset = np.sqrt(exponent / (channels * kappa))
        data = np.stack([feats.data, feats.data + offset[..., None]], axis=2)
        labels = np.stack([hard, tie_label], axis=2)
        beta = self.beta * float(data.std()) / feats.std
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "probability outside [0, 1] given the tolerance"
            full = random_walker(
                data, labels, beta=beta, mode=self.mode, tol=self.tol, return_full_prob=True, channel_axis=-1
            )
        return np.clip(full[_FG - 1][:, :, 0], 0.0, 1.0).astype(np.float32)
