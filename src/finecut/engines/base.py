"""The interface every engine (classical or learned) implements, so one Predictor and one evaluator drive them all."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from finecut.prompts import Prompts

if TYPE_CHECKING:
    from finecut.predictor import Prediction


@dataclass
class EngineOutput:
    """What an engine returns for one step.

    ``probs`` is float32 (H, W) in [0, 1] at original image size. ``mask`` optionally overrides ``probs > threshold``
    (for pipelines whose final mask is not a plain threshold). ``state`` is carried to the next step through
    :class:`~finecut.predictor.Prediction` (zoom-in box, click count, ...).
    """

    probs: np.ndarray
    state: dict[str, Any] = field(default_factory=dict)
    mask: np.ndarray | None = None


class Engine(abc.ABC):
    """Base class of segmentation engines.

    An engine is stateless with respect to the interaction: everything that carries from one click to the next comes
    in through ``previous`` (the last :class:`~finecut.predictor.Prediction`) and goes out through
    :attr:`EngineOutput.state`. Only per-image features may be cached, by :meth:`encode_image`.
    """

    #: Registry name of the engine.
    name: str = "engine"

    def encode_image(self, image: np.ndarray) -> Any:
        """Compute per-image features once; the result is handed back to :meth:`predict`. Default: nothing."""
        return None

    @abc.abstractmethod
    def predict(
        self,
        image: np.ndarray,
        features: Any,
        prompts: Prompts,
        previous: "Prediction | None",
    ) -> EngineOutput:
        """Segment ``image`` (RGB uint8) given validated ``prompts`` and the previous step's prediction."""

    def config(self) -> dict[str, Any]:
        """A JSON-serialisable description recorded with every evaluation result."""
        return {"name": self.name}
