"""Segmentation engines: anything that turns (image, prompts, previous prediction) into probabilities."""

from finecut.engines.base import Engine, EngineOutput, Prediction

__all__ = ["Engine", "EngineOutput", "Prediction"]
