"""The per-sample evaluation loop (RITM's ``evaluate_sample``): simulate clicks, predict, score."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from finecut.click_honour import click_violations
from finecut.errors import FinecutError
from finecut.evaluation.config import EvalConfig, pct
from finecut.evaluation.protocol import IGNORE_LABEL, iou, next_click, next_click_tolerant, noc, uncertain_band
from finecut.predictor import Prediction, Predictor
from finecut.prompts import Click, ClickKind, check_mask_shape

if TYPE_CHECKING:
    from finecut.datasets.base import Sample

#: Short click-kind names used in per-sample records (``ClickKind.parse`` reads them back).
KIND_CODES: dict[ClickKind, str] = {ClickKind.POSITIVE: "pos", ClickKind.NEGATIVE: "neg", ClickKind.TOLERANT: "tol"}

#: Digits kept for IoUs in per-sample records (keeps samples.jsonl small; far below any reported precision).
IOU_DIGITS = 6


@dataclass
class SampleResult:
    """What one sample produced: the IoU after each click, the clicks, NoC@t and the time spent in the engine.

    ``ious`` are rounded to ``IOU_DIGITS`` digits; ``clicks`` holds ``(x, y, kind)`` with kind ``"pos"`` / ``"neg"``.
    ``noc`` maps a threshold key ("85", "90", ...) to the number of clicks (computed from the exact IoUs), or None
    where the run stopped early below that threshold so the value is unknown. ``seconds`` is ``set_image`` plus every
    ``predict`` call. ``extra["violations"]`` counts, over every step, the clicks the step's mask does not honour
    (a positive click's pixel outside it, a negative one inside; :func:`finecut.click_honour.click_violations`).
    """

    index: int
    name: str
    ious: list[float]
    clicks: list[tuple[int, int, str]]
    noc: dict[str, int | None]
    seconds: float
    set_image_seconds: float
    size: tuple[int, int]
    init_iou: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_clicks(self) -> int:
        return len(self.ious)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "index": self.index,
            "name": self.name,
            "ious": self.ious,
            "clicks": [list(c) for c in self.clicks],
            "noc": self.noc,
            "seconds": round(self.seconds, 6),
            "set_image_seconds": round(self.set_image_seconds, 6),
            "size": list(self.size),
        }
        if self.init_iou is not None:
            data["init_iou"] = self.init_iou
        if self.extra:
            data["extra"] = self.extra
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SampleResult":
        try:
            return cls(
                index=int(data["index"]),
                name=str(data["name"]),
                ious=[float(v) for v in data["ious"]],
                clicks=[(int(c[0]), int(c[1]), str(c[2])) for c in data["clicks"]],
                noc={str(k): (None if v is None else int(v)) for k, v in data["noc"].items()},
                seconds=float(data["seconds"]),
                set_image_seconds=float(data.get("set_image_seconds", 0.0)),
                size=(int(data["size"][0]), int(data["size"][1])),
                init_iou=None if data.get("init_iou") is None else float(data["init_iou"]),
                extra=dict(data.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise FinecutError(f"malformed per-sample record ({exc.__class__.__name__}: {exc})") from exc


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, OpenCV and (if already imported) torch, so a sample's result does not depend on order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    cv2.setRNGSeed(int(seed) % 2**31)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def click_gt(gt: np.ndarray, region: np.ndarray | None) -> np.ndarray:
    """The ground truth the simulated user sees: pixels outside ``region`` become ignore (-1)."""
    gt = np.asarray(gt).astype(np.int16, copy=False)
    if region is None:
        return gt
    check_mask_shape(region, gt.shape, what="evaluation region")
    return np.where(np.asarray(region, dtype=bool), gt, IGNORE_LABEL).astype(np.int16)


def sample_nocs(ious: list[float], config: EvalConfig) -> dict[str, int | None]:
    """NoC@t for each reported threshold; None where the run stopped early below t so NoC@t is unknown."""
    stopped_early = len(ious) < config.max_clicks
    out: dict[str, int | None] = {}
    for t in config.noc_thresholds:
        known = not stopped_early or any(v >= t for v in ious)
        out[pct(t)] = noc(ious, t, config.max_clicks) if known else None
    return out


def evaluate_sample(
    predictor: Predictor,
    sample: Sample,
    config: EvalConfig,
    index: int = 0,
    init_mask: np.ndarray | None = None,
) -> SampleResult:
    """Run the standard click loop on one sample.

    Starts from an empty prediction (or ``init_mask`` under mask correction; the engine then also receives it as
    ``prior_mask``), asks :func:`~finecut.evaluation.protocol.next_click` for each click, predicts from all clicks so
    far with the previous :class:`~finecut.predictor.Prediction`, and records the IoU (ignoring -1 pixels and pixels
    outside ``sample.region``). Stops after ``config.max_clicks`` clicks, or when ``config.target_iou`` is reached.
    """
    gt = np.asarray(sample.gt)
    if gt.ndim != 2:
        raise FinecutError(f"sample {sample.name}: ground truth must be 2-D, got shape {gt.shape}")
    image = np.asarray(sample.image)
    if image.shape[:2] != gt.shape:
        raise FinecutError(
            f"sample {sample.name}: mask is {gt.shape[1]}x{gt.shape[0]} but the image is "
            f"{image.shape[1] if image.ndim > 1 else '?'}x{image.shape[0]}"
        )
    region = None if sample.region is None else np.asarray(sample.region, dtype=bool)
    sim_gt = click_gt(gt, region)
    if init_mask is not None:
        check_mask_shape(init_mask, gt.shape, what=f"initial mask of {sample.name}")
        init = np.asarray(init_mask, dtype=bool)
    else:
        init = None

    seed_everything(config.seed)
    start = time.perf_counter()
    predictor.set_image(image)
    set_image_seconds = time.perf_counter() - start
    seconds = set_image_seconds

    pred = init.copy() if init is not None else np.zeros(gt.shape, dtype=bool)
    init_iou = iou(sim_gt, pred) if init is not None else None
    clicks: list[Click] = []
    ious: list[float] = []
    previous: Prediction | None = None
    violations = 0
    if config.protocol == "ntclick":
        band = uncertain_band(sim_gt)
        rng = np.random.default_rng([config.seed, index])
    for _ in range(config.max_clicks):
        if config.protocol == "ntclick":
            clicks.append(next_click_tolerant(sim_gt, pred, clicks, band, rng, config.tolerant_offset))
        else:
            clicks.append(next_click(sim_gt, pred, clicks))
        start = time.perf_counter()
        previous = predictor.predict(
            clicks=clicks, prior_mask=init, previous=previous, threshold=config.threshold
        )
        seconds += time.perf_counter() - start
        pred = previous.mask
        violations += click_violations(pred, clicks)
        ious.append(float(iou(sim_gt, pred)))
        if config.target_iou is not None and ious[-1] >= config.target_iou:
            break

    return SampleResult(
        index=index,
        name=sample.name,
        ious=[round(v, IOU_DIGITS) for v in ious],
        clicks=[(int(c.x), int(c.y), KIND_CODES[c.kind]) for c in clicks],
        noc=sample_nocs(ious, config),  # from the exact IoUs: rounding must not move a value across a threshold
        seconds=seconds,
        set_image_seconds=set_image_seconds,
        size=(int(gt.shape[0]), int(gt.shape[1])),
        init_iou=None if init_iou is None else round(float(init_iou), IOU_DIGITS),
        extra={"violations": violations, **({"region": True} if region is not None else {})},
    )


def mean_iou_curve(predictor: Predictor, samples: Sequence[Sample], config: EvalConfig) -> np.ndarray:
    """Mean IoU (%) after each of ``config.max_clicks`` clicks over ``samples`` (every sample runs all clicks)."""
    if not config.full_runs:
        raise FinecutError("a mean IoU curve needs every sample to take all clicks (no target IoU)")
    curves = [evaluate_sample(predictor, sample, config, index=i).ious for i, sample in enumerate(samples)]
    return np.array(curves, dtype=np.float64).mean(axis=0) * 100
