"""The settings of one evaluation run (the standard protocol's knobs), validated once."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from finecut.errors import FinecutError

#: IoU targets reported as NoC@t / NoF@t by default (NoC85, NoC90, NoC95).
DEFAULT_NOC_THRESHOLDS: tuple[float, ...] = (0.85, 0.90, 0.95)

#: Click protocols: iterative clicks from an empty mask (or an initial mask under mask correction).
CLICK_PROTOCOLS: tuple[str, ...] = ("standard", "ntclick")
#: Every protocol of the evaluator. ``scribble``: iterative simulated scribbles (NoS); ``box``: one box, mIoU;
#: ``coarse``: one coarse mask (GT perturbed into an IoU band), coarse vs refined mIoU; ``correction``: standard clicks
#: from seeded superpixel-defect initial masks (DAVIS-585 style), with or without the evaluator's Progressive Merge.
PROTOCOLS: tuple[str, ...] = (*CLICK_PROTOCOLS, "scribble", "box", "coarse", "correction")
#: Protocols with a single interaction per sample (``max_clicks`` is 1 for them).
SINGLE_ROUND: tuple[str, ...] = ("box", "coarse")

#: FocalClick-XL's coarse-mask levels: the IoU band each level's coarse masks fall in.
COARSE_LEVELS: tuple[tuple[float, float], ...] = (
    (0.85, 0.90), (0.75, 0.80), (0.65, 0.70), (0.55, 0.60), (0.45, 0.50))
#: DAVIS-585's initial-mask IoU band and defect-type probabilities (boundary error, external FP, internal FN).
DEFAULT_INIT_BAND: tuple[float, float] = (0.75, 0.85)
DEFAULT_DEFECT_PROBABILITIES: tuple[float, float, float] = (0.65, 0.25, 0.10)


def pct(threshold: float) -> str:
    """The key used for an IoU target in reports: 0.85 -> "85", 0.875 -> "87.5"."""
    return format(round(threshold * 100, 6), "g")


@dataclass(frozen=True)
class EvalConfig:
    """Protocol settings.

    ``max_clicks`` clicks per sample (20 in the standard protocol); ``threshold`` turns probabilities into the mask
    (0.49 as in RITM); ``target_iou``, when set, stops a sample as soon as its IoU reaches it (faster, NoC only: mIoU@k
    and NoC@t for t above the target are then not reported); ``mask_correction`` starts each sample from its initial
    mask instead of an empty one; ``seed`` seeds every random generator before each sample; ``limit`` evaluates only
    the first N samples. ``honour_clicks`` turns the Predictor's click-honour rule on (default) or off.

    FocalClick-XL's protocols (``protocol``, see :data:`PROTOCOLS`) add: ``scribble_width`` (px) and
    ``scribble_start`` (a folder of human scribbles ``<name>-anno.png`` giving the first interaction, the rest
    simulated; None: all simulated); ``box_jitter`` (each side of the GT box moved by a seeded uniform offset of at most
    this fraction of the box's side); ``coarse_band`` (the IoU band of the coarse masks); ``init_band`` and
    ``defect_probabilities`` (the correction protocol's initial masks); ``merge`` (the evaluator applies Progressive
    Merge to every step that has a previous mask). Options that a protocol does not use keep their defaults.
    """

    max_clicks: int = 20
    threshold: float = 0.49
    target_iou: float | None = None
    noc_thresholds: tuple[float, ...] = DEFAULT_NOC_THRESHOLDS
    mask_correction: bool = False
    seed: int = 0
    limit: int | None = None
    protocol: str = "standard"
    tolerant_offset: float = 10.0
    honour_clicks: bool = True  # the Predictor's click-honour rule (finecut.click_honour); False: raw engine masks
    merge: bool = False
    scribble_width: float = 5.0
    scribble_start: str | None = None
    box_jitter: float = 0.0
    coarse_band: tuple[float, float] | None = None
    init_band: tuple[float, float] = DEFAULT_INIT_BAND
    defect_probabilities: tuple[float, float, float] = DEFAULT_DEFECT_PROBABILITIES

    def __post_init__(self) -> None:
        if int(self.max_clicks) != self.max_clicks or self.max_clicks < 1:
            raise FinecutError(f"max clicks must be a positive integer, got {self.max_clicks!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise FinecutError(f"threshold must be in [0, 1], got {self.threshold!r}")
        if self.target_iou is not None and not 0.0 < self.target_iou <= 1.0:
            raise FinecutError(f"target IoU must be in (0, 1], got {self.target_iou!r}")
        thresholds = tuple(float(t) for t in self.noc_thresholds)
        if not thresholds or not all(0.0 < t <= 1.0 for t in thresholds):
            raise FinecutError(f"NoC thresholds must be in (0, 1], got {self.noc_thresholds!r}")
        object.__setattr__(self, "noc_thresholds", thresholds)
        if self.protocol not in PROTOCOLS:
            raise FinecutError(f"unknown click protocol {self.protocol!r}: use one of {', '.join(PROTOCOLS)}")
        if self.protocol in SINGLE_ROUND:
            object.__setattr__(self, "max_clicks", 1)
            object.__setattr__(self, "target_iou", None)
        if self.protocol == "correction":
            object.__setattr__(self, "mask_correction", True)
        if not self.scribble_width > 0:
            raise FinecutError(f"scribble width must be > 0, got {self.scribble_width!r}")
        if not 0.0 <= self.box_jitter < 0.5:
            raise FinecutError(f"box jitter must be in [0, 0.5) (a fraction of the box side), got {self.box_jitter!r}")
        object.__setattr__(self, "init_band", _band(self.init_band, "initial-mask IoU band"))
        if self.coarse_band is not None:
            object.__setattr__(self, "coarse_band", _band(self.coarse_band, "coarse-mask IoU band"))
        elif self.protocol == "coarse":
            raise FinecutError("the coarse protocol needs a coarse_band (an IoU band such as (0.75, 0.80))")
        probs = tuple(float(p) for p in self.defect_probabilities)
        if len(probs) != 3 or min(probs) < 0 or not abs(sum(probs) - 1.0) < 1e-6:
            raise FinecutError(
                f"defect probabilities must be 3 numbers >= 0 summing to 1, got {self.defect_probabilities!r}")
        object.__setattr__(self, "defect_probabilities", probs)
        if self.scribble_start is not None and self.protocol != "scribble":
            raise FinecutError("human first scribbles (scribble_start) go with the scribble protocol only")
        if not self.tolerant_offset >= 0:
            raise FinecutError(f"tolerant offset must be >= 0, got {self.tolerant_offset!r}")
        if self.limit is not None and (int(self.limit) != self.limit or self.limit < 1):
            raise FinecutError(f"limit must be a positive integer, got {self.limit!r}")

    @property
    def full_runs(self) -> bool:
        """True when every sample takes ``max_clicks`` clicks (so mIoU@k is defined)."""
        return self.target_iou is None

    def protocol_params(self) -> dict[str, Any]:
        """The settings of this run's protocol beyond the click-protocol ones (recorded in every summary)."""
        params: dict[str, Any] = {}
        if self.protocol == "scribble":
            params.update(scribble_width=self.scribble_width, scribble_start=self.scribble_start,
                          first_interaction="human" if self.scribble_start else "simulated")
        if self.protocol == "box":
            params["box_jitter"] = self.box_jitter
        if self.protocol == "coarse":
            params["coarse_band"] = list(self.coarse_band or ())
        if self.protocol == "correction":
            params.update(init_band=list(self.init_band), defect_probabilities=list(self.defect_probabilities))
        if self.merge or self.protocol == "correction":
            params["merge"] = self.merge
        return params

    def to_dict(self) -> dict[str, Any]:
        """Every setting, as JSON; the FocalClick-XL protocols' options only where they matter (so a standard run's
        record is what it was before they existed and old run folders still resume)."""
        data = asdict(self)
        data["noc_thresholds"] = list(self.noc_thresholds)
        for key in _PROTOCOL_OPTIONS:
            data.pop(key, None)
        data.update(self.protocol_params())
        data.pop("first_interaction", None)
        for key in ("coarse_band", "init_band", "defect_probabilities"):
            if key in data:
                data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EvalConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("noc_thresholds", "coarse_band", "init_band", "defect_probabilities"):
            if known.get(key) is not None:
                known[key] = tuple(known[key])
        return cls(**known)


#: Options of the FocalClick-XL protocols (left out of a run's record where its protocol does not use them).
_PROTOCOL_OPTIONS = ("merge", "scribble_width", "scribble_start", "box_jitter", "coarse_band", "init_band",
                     "defect_probabilities")


def _band(value: Any, what: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise FinecutError(f"{what} must be two numbers (low, high), got {value!r}") from None
    if not 0.0 <= lo < hi <= 1.0:
        raise FinecutError(f"{what} must satisfy 0 <= low < high <= 1, got ({lo:g}, {hi:g})")
    return lo, hi
