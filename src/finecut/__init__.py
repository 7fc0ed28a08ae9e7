"""finecut: precise interactive image segmentation."""

from finecut.errors import FinecutError
from finecut.predictor import Prediction, Predictor
from finecut.prompts import Box, Click, ClickKind, Prompts, Scribble
from finecut.registry import available_models, load_model

__version__ = "0.1.0"

__all__ = [
    "Box",
    "Click",
    "ClickKind",
    "FinecutError",
    "Prediction",
    "Predictor",
    "Prompts",
    "Scribble",
    "available_models",
    "load_model",
    "__version__",
]
