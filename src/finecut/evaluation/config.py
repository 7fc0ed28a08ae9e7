"""The settings of one evaluation run (the standard protocol's knobs), validated once."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from finecut.errors import FinecutError

#: IoU targets reported as NoC@t / NoF@t by default (NoC85, NoC90, NoC95).
DEFAULT_NOC_THRESHOLDS: tuple[float, ...] = (0.85, 0.90, 0.95)


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
        if self.protocol not in ("standard", "ntclick"):
            raise FinecutError(f"unknown click protocol {self.protocol!r}: use 'standard' or 'ntclick'")
        if not self.tolerant_offset >= 0:
            raise FinecutError(f"tolerant offset must be >= 0, got {self.tolerant_offset!r}")
        if self.limit is not None and (int(self.limit) != self.limit or self.limit < 1):
            raise FinecutError(f"limit must be a positive integer, got {self.limit!r}")

    @property
    def full_runs(self) -> bool:
        """True when every sample takes ``max_clicks`` clicks (so mIoU@k is defined)."""
        return self.target_iou is None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["noc_thresholds"] = list(self.noc_thresholds)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EvalConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "noc_thresholds" in known:
            known["noc_thresholds"] = tuple(known["noc_thresholds"])
        return cls(**known)
