"""The simulated users of the evaluator's protocols: what each gives the Predictor at each step.

One loop (:func:`finecut.evaluation.loop.evaluate_sample`) drives every protocol; a user only decides the next
prompts from the current mask. Click users follow the standard (RITM) or NTClick rule; the scribble user
FocalClick-XL's deterministic simulator (optionally starting from human scribbles); the box and coarse-mask users give
their one prompt and are done.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from finecut.evaluation.config import EvalConfig
from finecut.evaluation.protocol import next_click, next_click_tolerant, uncertain_band
from finecut.evaluation.scribbles import next_scribble, scribble_pixels
from finecut.prompts import Box, Click, ClickKind, Scribble

#: Short click-kind names used in per-sample records (``ClickKind.parse`` reads them back).
KIND_CODES: dict[ClickKind, str] = {ClickKind.POSITIVE: "pos", ClickKind.NEGATIVE: "neg", ClickKind.TOLERANT: "tol"}


class SimulatedUser:
    """Base class: ``next(pred)`` returns the keyword arguments of the next ``Predictor.predict`` call (its prompts,
    all of them so far), or None when the user has nothing left to add."""

    #: The prompt type, used in "not supported" reports.
    prompt = "clicks"

    def next(self, pred: np.ndarray) -> dict[str, Any] | None:  # pragma: no cover - interface
        raise NotImplementedError

    def seeds(self, shape: tuple[int, int]) -> np.ndarray:
        """The pixels of the latest interaction (where Progressive Merge takes the new mask)."""
        return np.zeros(shape, dtype=bool)

    @property
    def clicks(self) -> list[Click]:
        return []

    def record(self) -> dict[str, Any]:
        """Extra fields for the per-sample record."""
        return {}


class ClickUser(SimulatedUser):
    """Standard (RITM) clicks, or NTClick's tolerant clicks in the GT uncertain band (seeded by (seed, index))."""

    def __init__(self, sim_gt: np.ndarray, config: EvalConfig, index: int, init: np.ndarray | None) -> None:
        self.gt = sim_gt
        self.init = init
        self.tolerant = config.protocol == "ntclick"
        self.offset = config.tolerant_offset
        self._clicks: list[Click] = []
        if self.tolerant:
            self.band = uncertain_band(sim_gt)
            self.rng = np.random.default_rng([config.seed, index])

    def next(self, pred: np.ndarray) -> dict[str, Any]:
        if self.tolerant:
            click = next_click_tolerant(self.gt, pred, self._clicks, self.band, self.rng, self.offset)
        else:
            click = next_click(self.gt, pred, self._clicks)
        self._clicks.append(click)
        return {"clicks": list(self._clicks), "prior_mask": self.init}

    def seeds(self, shape: tuple[int, int]) -> np.ndarray:
        out = np.zeros(shape, dtype=bool)
        if self._clicks:
            row, col = self._clicks[-1].pixel
            out[row, col] = True
        return out

    @property
    def clicks(self) -> list[Click]:
        return self._clicks


class ScribbleUser(SimulatedUser):
    """FocalClick-XL's scribble protocol: a simulated scribble per step in the largest error region; ``first``
    (human scribbles) replaces the first step's."""

    prompt = "scribbles"

    def __init__(self, sim_gt: np.ndarray, config: EvalConfig, init: np.ndarray | None,
                 first: list[Scribble] | None = None) -> None:
        self.gt = sim_gt
        self.init = init
        self.width = config.scribble_width
        self.first = list(first) if first else None
        self.scribbles: list[Scribble] = []
        self._latest: list[Scribble] = []

    def next(self, pred: np.ndarray) -> dict[str, Any] | None:
        if self.first is not None and not self.scribbles:
            new = list(self.first)
        else:
            scribble = next_scribble(self.gt, pred, self.scribbles, self.width)
            if scribble is None:
                return None
            new = [scribble]
        self.scribbles += new
        self._latest = new
        return {"scribbles": list(self.scribbles), "prior_mask": self.init}

    def seeds(self, shape: tuple[int, int]) -> np.ndarray:
        return scribble_pixels(self._latest, shape)

    def record(self) -> dict[str, Any]:
        rows = []
        for s in self.scribbles:
            (x0, y0), (x1, y1) = s.points[0], s.points[-1]
            rows.append(["pos" if s.positive else "neg", s.width, len(s.points),
                         int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))])
        out: dict[str, Any] = {"scribbles": rows}
        if self.first is not None:
            out["human_first"] = len(self.first)
        return out


class BoxUser(SimulatedUser):
    """One box (the GT box, or a jittered one), then done."""

    prompt = "box"

    def __init__(self, box: Box) -> None:
        self.box = box
        self.done = False

    def next(self, pred: np.ndarray) -> dict[str, Any] | None:
        if self.done:
            return None
        self.done = True
        return {"box": self.box}

    def record(self) -> dict[str, Any]:
        return {"box": [round(float(v), 2) for v in self.box.as_tuple()]}


class MaskUser(SimulatedUser):
    """One coarse mask as the only prompt (the prior mask), then done."""

    prompt = "coarse mask"

    def __init__(self, mask: np.ndarray) -> None:
        self.mask = mask
        self.done = False

    def next(self, pred: np.ndarray) -> dict[str, Any] | None:
        if self.done:
            return None
        self.done = True
        return {"prior_mask": self.mask}
