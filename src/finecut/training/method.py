"""What the one training loop (:func:`finecut.training.trainer.train`) asks of a training method.

The loop owns everything common to every run: run directory, seeding, object bank, network construction and
initialisation, optimizer and learning-rate schedule, resume, time budget, logging, checkpoints and held-out
validation through the evaluator's click loop. A :class:`TrainingMethod` contributes only what differs: how its
network is prepared (memory format, compilation), the per-step function that draws a batch and returns the losses
(:class:`Steps`), the engine its checkpoints open as, and, optionally, the engine that validation drives. The methods
are listed in :data:`finecut.training.trainer.METHODS`, chosen by ``[model].arch``
(:data:`finecut.training.config.METHOD_OF_ARCH`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn as nn

from finecut.training.config import TrainConfig
from finecut.training.objects import ObjectBank

if TYPE_CHECKING:
    from finecut.engines.base import Engine


@dataclass
class RunSetup:
    """What a method's step function is built from, once per run (after resume).

    ``rng`` is the run's sample stream (seeded by the loop from the seed, the rank and the start step): a method draws
    its batches and simulated clicks from it. ``step`` is the step training starts (or resumes) at. ``pipeline`` is
    the init checkpoint's inference settings (:func:`finecut.training.trainer.inherited_pipeline`; None without).
    """

    cfg: TrainConfig
    net: nn.Module
    bank: ObjectBank
    train_indices: np.ndarray
    rng: np.random.Generator
    step: int = 0
    rank: int = 0
    world: int = 1
    pipeline: dict[str, Any] | None = None

    @property
    def source_weights(self) -> dict[int, float]:
        """``[data].weights`` by source index (what :class:`~finecut.training.batch.BatchSampler` takes)."""
        return {i: float(w) for i, w in enumerate(self.cfg.data.weights)}


class Steps(abc.ABC):
    """A method's training step: ``steps(step)`` draws one batch, runs the forward pass(es) and returns the losses.

    The returned dict holds ``"loss"`` (the tensor the loop backpropagates) and the terms to log, in log order; the
    loop does the backward pass and the optimizer step.
    """

    @abc.abstractmethod
    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        """The losses of step ``step`` (0-based)."""

    def close(self) -> None:
        """Release what the step function holds (a prefetching worker); called once when training stops."""


class TrainingMethod(abc.ABC):
    """One way of training a network (a row of :data:`finecut.training.trainer.METHODS`)."""

    #: The method's name (the key of its ``[name]`` config section, if it has options).
    name: str = ""
    #: Whether runs may use several processes (torchrun DDP).
    distributed: bool = False
    #: The engine a checkpoint of each architecture this method trains opens as (``"engine"`` in its JSON).
    engines: ClassVar[dict[str, str]] = {}

    def engine(self, arch: str) -> str:
        return self.engines[arch]

    def prepare(self, net: nn.Module, cfg: TrainConfig) -> nn.Module:
        """The network as it is trained (memory format, compilation); called after its weights are initialised and
        before the optimizer is built. Default: unchanged."""
        return net

    @abc.abstractmethod
    def steps(self, setup: RunSetup) -> Steps:
        """The step function of one run."""

    def validation_engine(self, net: nn.Module, cfg: TrainConfig) -> Engine | None:
        """The engine held-out validation drives through the evaluator's click loop, or None (no validation)."""
        return None
