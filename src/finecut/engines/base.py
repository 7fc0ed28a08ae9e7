"""The interface every engine (classical or learned) implements, so one Predictor and one evaluator drive them all.

The contract's two result types live here, beside the interface: :class:`EngineOutput` (what an engine returns for one
step) and :class:`Prediction` (what the :class:`~finecut.predictor.Predictor` makes of it, and what the next step
receives as ``previous``; also importable as ``finecut.predictor.Prediction`` and ``finecut.Prediction``).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from finecut.prompts import Click, Prompts


@dataclass(frozen=True)
class Prediction:
    """The result of one step, at original image size.

    ``mask`` is bool (H, W); ``probs`` float32 (H, W) in [0, 1]; ``prompts`` what produced it; ``state`` the pipeline
    state an engine carries to the next step; ``seconds`` the wall time of the step; ``alpha`` float32 (H, W) in
    [0, 1] from engines that predict mattes, else None.
    """

    mask: np.ndarray
    probs: np.ndarray
    prompts: Prompts
    threshold: float = 0.5
    state: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    alpha: np.ndarray | None = None

    @property
    def clicks(self) -> tuple[Click, ...]:
        return self.prompts.clicks


@dataclass
class EngineOutput:
    """What an engine returns for one step.

    ``probs`` is float32 (H, W) in [0, 1] at original image size. ``mask`` optionally overrides ``probs > threshold``
    (for pipelines whose final mask is not a plain threshold). ``state`` is carried to the next step through
    :class:`Prediction` (zoom-in box, click count, ...). ``alpha`` is an optional float32 (H, W) matte in [0, 1].
    """

    probs: np.ndarray
    state: dict[str, Any] = field(default_factory=dict)
    mask: np.ndarray | None = None
    alpha: np.ndarray | None = None


class Engine(abc.ABC):
    """Base class of segmentation engines.

    An engine is stateless with respect to the interaction: everything that carries from one click to the next comes
    in through ``previous`` (the last :class:`Prediction`) and goes out through
    :attr:`EngineOutput.state`. Only per-image features may be cached, by :meth:`encode_image`.
    """

    #: Registry name of the engine.
    name: str = "engine"
    #: The type :meth:`encode_image` returns (None: anything goes), checked by :meth:`has_features`.
    features_type: ClassVar[type | None] = None

    def encode_image(self, image: np.ndarray) -> Any:
        """Compute per-image features once; the result is handed back to :meth:`predict`. Default: nothing."""
        return None

    def has_features(self, features: Any) -> bool:
        """Whether ``features`` are what :meth:`encode_image` returns (an instance of :attr:`features_type`)."""
        return self.features_type is None or isinstance(features, self.features_type)

    def features_for(self, image: np.ndarray, features: Any) -> Any:
        """``features`` when they are this engine's, else ``image`` encoded now (a caller of :meth:`predict` that
        passed None); :meth:`predict` starts with it."""
        return features if self.has_features(features) else self.encode_image(image)

    @abc.abstractmethod
    def predict(
        self,
        image: np.ndarray,
        features: Any,
        prompts: Prompts,
        previous: Prediction | None,
    ) -> EngineOutput:
        """Segment ``image`` (RGB uint8) given validated ``prompts`` and the previous step's prediction."""

    def config(self) -> dict[str, Any]:
        """A JSON-serialisable description recorded with every evaluation result."""
        return {"name": self.name}
