"""The per-sample evaluation loop (RITM's ``evaluate_sample``), for every protocol: ask the simulated user, predict,
score."""

from __future__ import annotations

import dataclasses
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
from finecut.evaluation.alpha import alpha_errors
from finecut.evaluation.config import EvalConfig, pct
from finecut.evaluation.merge import merge_region
from finecut.evaluation.perturb import gt_box, jitter_box, sample_rng
from finecut.evaluation.protocol import IGNORE_LABEL, iou, miou_curve, noc
from finecut.evaluation.users import KIND_CODES, BoxUser, ClickUser, MaskUser, ScribbleUser, SimulatedUser
from finecut.predictor import Prediction, Predictor
from finecut.prompts import Scribble, check_mask_shape

if TYPE_CHECKING:
    from finecut.datasets.base import Sample

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


class PromptNotSupported(FinecutError):
    """The engine refused a prompt type of the protocol (a box, scribbles, a mask alone); the run reports it as
    "not supported" instead of failing."""

    def __init__(self, engine: str, prompt: str, reason: str) -> None:
        super().__init__(f"{engine} does not support {prompt} prompts: {reason}")
        self.engine = engine
        self.prompt = prompt
        self.reason = reason


def make_user(sample: Sample, sim_gt: np.ndarray, config: EvalConfig, index: int, init: np.ndarray | None,
              first_scribbles: list[Scribble] | None = None) -> SimulatedUser:
    """The simulated user of ``config.protocol`` for one sample (box jitter seeded by the seed and sample name)."""
    if config.protocol in ("standard", "ntclick", "correction"):
        return ClickUser(sim_gt, config, index, init)
    if config.protocol == "scribble":
        return ScribbleUser(sim_gt, config, init, first_scribbles)
    if config.protocol == "box":
        box = gt_box(sim_gt)
        if config.box_jitter:
            box = jitter_box(box, sample_rng(config.seed, sample.name, "box jitter"), config.box_jitter,
                             *sim_gt.shape)
        return BoxUser(box)
    if config.protocol == "coarse":
        if init is None:
            raise FinecutError(f"sample {sample.name}: the coarse protocol needs a coarse mask")
        return MaskUser(init)
    raise FinecutError(f"unknown protocol {config.protocol!r}")


def evaluate_sample(
    predictor: Predictor,
    sample: Sample,
    config: EvalConfig,
    index: int = 0,
    init_mask: np.ndarray | None = None,
    first_scribbles: list[Scribble] | None = None,
) -> SampleResult:
    """Run the protocol's interaction loop on one sample.

    Starts from an empty prediction (or ``init_mask`` under mask correction and the coarse protocol; the engine then
    also receives it as ``prior_mask``), asks the protocol's simulated user (:mod:`~finecut.evaluation.users`) for the
    next prompts (clicks, scribbles, a box, a coarse mask), predicts from all prompts so far with the previous
    :class:`~finecut.predictor.Prediction`, and records the IoU (ignoring -1 pixels and pixels outside
    ``sample.region``). Stops after ``config.max_clicks`` steps (one for box / coarse), or when ``config.target_iou``
    is reached; a scribble user with no error left to mark ends the run early with its last IoU repeated.

    With ``config.merge`` the evaluator applies Progressive Merge (:mod:`~finecut.evaluation.merge`) to every step
    that has a previous mask. When the sample carries a ground-truth alpha (``sample.meta["alpha"]``), the last
    prediction's ``alpha`` (when the engine gives one, else its binary mask) is scored with SAD / MSE / Grad into
    ``extra["alpha"]``. An engine that raises :class:`FinecutError` on a non-click prompt raises
    :class:`PromptNotSupported`.
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
    user = make_user(sample, sim_gt, config, index, init, first_scribbles)
    start = time.perf_counter()
    predictor.set_image(image)
    set_image_seconds = time.perf_counter() - start
    seconds = set_image_seconds

    pred = init.copy() if init is not None else np.zeros(gt.shape, dtype=bool)
    init_iou = iou(sim_gt, pred) if init is not None else None
    ious: list[float] = []
    previous: Prediction | None = None
    violations = 0
    merged_steps = 0
    for step in range(config.max_clicks):
        prompts = user.next(pred)
        if prompts is None:  # nothing left to correct: the mask stays as it is
            ious.append(ious[-1] if ious else float(iou(sim_gt, pred)))
            continue
        start = time.perf_counter()
        try:
            out = predictor.predict(**prompts, previous=previous, threshold=config.threshold)
        except FinecutError as exc:
            if user.prompt == "clicks" or step > 0:
                raise
            raise PromptNotSupported(predictor.model.name, user.prompt, str(exc)) from exc
        seconds += time.perf_counter() - start
        if config.merge and (previous is not None or init is not None):
            keep_from_new = merge_region(pred, out.mask, user.seeds(gt.shape))
            prev_probs = previous.probs if previous is not None else pred.astype(np.float32)
            out = dataclasses.replace(out, mask=np.where(keep_from_new, out.mask, pred),
                                      probs=np.where(keep_from_new, out.probs, prev_probs).astype(np.float32))
            merged_steps += 1
        previous = out
        pred = out.mask
        violations += click_violations(pred, user.clicks)
        ious.append(float(iou(sim_gt, pred)))
        if config.target_iou is not None and ious[-1] >= config.target_iou:
            break

    extra: dict[str, Any] = {"violations": violations, **user.record()}
    if region is not None:
        extra["region"] = True
    if config.merge:
        extra["merged_steps"] = merged_steps
    gt_alpha = sample.meta.get("alpha") if isinstance(sample.meta, dict) else None
    if gt_alpha is not None:
        extra["alpha"] = score_alpha(previous, pred, gt_alpha, region, sample.meta.get("alpha_region"))
    clicks = user.clicks
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
        extra=extra,
    )


def score_alpha(prediction: Prediction | None, mask: np.ndarray, gt_alpha: np.ndarray, region: np.ndarray | None,
                alpha_region: np.ndarray | None = None) -> dict[str, Any]:
    """SAD / MSE / Grad of the prediction's ``alpha`` (``getattr(prediction, "alpha", None)``), else of its binary
    mask, against ``gt_alpha``; over ``alpha_region`` (a trimap's unknown band) and ``region`` when given. The binary
    mask's own errors are always given too (``mask_sad`` / ``mask_mse`` / ``mask_grad``), so that an engine's alpha is
    compared with its thresholded mask from the same prediction."""
    alpha = getattr(prediction, "alpha", None) if prediction is not None else None
    source = "alpha" if alpha is not None else "mask"
    binary = np.asarray(mask, bool)
    scored = np.clip(np.asarray(alpha, dtype=np.float64), 0.0, 1.0) if alpha is not None else binary
    where = None
    if alpha_region is not None:
        where = np.asarray(alpha_region, dtype=bool)
    if region is not None:
        where = region if where is None else where & region
    values = alpha_errors(scored, gt_alpha, where)
    of_mask = values if alpha is None else alpha_errors(binary, gt_alpha, where)
    return {"source": source, **{k: round(v, 6) for k, v in values.items()},
            **{f"mask_{k}": round(v, 6) for k, v in of_mask.items()}}


def mean_iou_curve(predictor: Predictor, samples: Sequence[Sample], config: EvalConfig) -> np.ndarray:
    """Mean IoU (%) after each of ``config.max_clicks`` clicks over ``samples`` (every sample runs all clicks)."""
    if not config.full_runs:
        raise FinecutError("a mean IoU curve needs every sample to take all clicks (no target IoU)")
    curves = [evaluate_sample(predictor, sample, config, index=i).ious for i, sample in enumerate(samples)]
    return miou_curve(curves, config.max_clicks) * 100
