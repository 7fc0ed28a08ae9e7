"""Full-pipeline validation on the held-out images of an object bank (never on a benchmark).

Used to compare checkpoints and inference settings under the standard protocol while training data stays the only
data touched: the bank's validation split (by image) is turned into evaluation samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
import numpy as np

from finecut.datasets.base import Sample
from finecut.engines.base import Engine
from finecut.evaluation.config import EvalConfig
from finecut.evaluation.runner import RunResult, run_evaluation
from finecut.training.objects import ObjectBank


class BankSamples(Sequence[Sample]):
    """Objects of an :class:`ObjectBank` as evaluation samples (image at bank resolution, gt 1/0)."""

    def __init__(self, bank: ObjectBank, indices: np.ndarray, name: str) -> None:
        self.name = name
        self.bank = bank
        self.indices = [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return BankSamples(self.bank, np.asarray(self.indices[index]), self.name)
        obj_index = self.indices[index]
        obj = self.bank.objects[obj_index]
        return Sample(name=f"{self.bank.image_names[obj.image_index]}#{obj_index}",
                      image=np.ascontiguousarray(self.bank.image(obj_index)),
                      gt=self.bank.mask(obj_index).astype(np.int8))

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


def validation_indices(bank: ObjectBank, val_fraction: float, exclude_sources: Sequence[str] = ()) -> np.ndarray:
    """Indices of the objects on the bank's validation images (the split every trainer leaves out), in bank order,
    without those of the named sources (e.g. ``("DRIVE",)``)."""
    _, val_idx = bank.split(val_fraction)
    excluded = {bank.sources.index(name) for name in exclude_sources if name in bank.sources}
    return np.array([int(i) for i in val_idx if bank.objects[int(i)].source not in excluded], dtype=np.int64)


def validation_samples(bank: ObjectBank, val_fraction: float, count: int, seed: int = 7) -> Sequence[Sample]:
    """A fixed random subset of ``count`` objects from the bank's validation images."""
    val_idx = validation_indices(bank, val_fraction)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(val_idx, size=min(count, len(val_idx)), replace=False)) if len(val_idx) else val_idx
    return BankSamples(bank, chosen, "train-val")


def evaluate_on_validation(engine: Engine, bank: ObjectBank, val_fraction: float, count: int,
                           out_dir: str | Path | None = None, model_name: str | None = None,
                           config: EvalConfig | None = None, progress: bool = True) -> RunResult:
    dataset = validation_samples(bank, val_fraction, count)
    return run_evaluation(engine, dataset, out_dir, config or EvalConfig(), model_name=model_name,
                          dataset_name=dataset.name, overwrite=True, progress=progress)

