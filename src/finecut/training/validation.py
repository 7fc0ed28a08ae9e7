"""Validation on the held-out images of an object bank (never on a benchmark), through the evaluator's click loop.

Two uses, both on the bank's validation split (by image), so training data stays the only data touched:

* full-pipeline validation of a checkpoint (``finecut train CONFIG --validate CHECKPOINT``): the split's objects at
  bank resolution as evaluation samples, run by the evaluator (:func:`evaluate_on_validation`);
* the trainer's periodic held-out check (:func:`validate_in_training`): fixed object-centred views at the training
  size, scored with the network alone (:class:`SegmentorEngine`: no zoom-in, no refiner) through the same per-sample
  loop as every evaluation (:func:`finecut.evaluation.loop.evaluate_sample`, standard protocol, raw masks).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from finecut.datasets.base import Sample
from finecut.engines.base import Engine, EngineOutput
from finecut.errors import FinecutError
from finecut.evaluation.config import EvalConfig
from finecut.evaluation.loop import SampleResult, evaluate_sample
from finecut.evaluation.runner import RunResult, run_evaluation
from finecut.evaluation.summary import summarize
from finecut.predictor import Predictor
from finecut.prompts import Prompts
from finecut.training.augment import ViewConfig, random_view
from finecut.training.batch import prompt_maps, to_tensor_images
from finecut.training.objects import ObjectBank

if TYPE_CHECKING:
    from finecut.predictor import Prediction

#: IoU thresholds of the in-training NoC (``val_noc85@K``, ``val_noc90@K``).
VAL_NOC_THRESHOLDS = (0.85, 0.90)
#: Seed of the in-training validation views (one object-centred view per held-out object, the same at every check).
VAL_VIEW_SEED = 12345
#: Seed of the choice of the in-training validation objects among the held-out ones.
VAL_OBJECT_SEED = 7


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


def validation_indices(bank: ObjectBank, val_fraction: float, exclude_sources: Sequence[str] = (),
                       only_sources: Sequence[str] | None = None) -> np.ndarray:
    """Indices of the objects on the bank's validation images (the split every trainer leaves out), in bank order,
    without those of the named sources (e.g. ``("DRIVE",)``); with ``only_sources``, only those sources' (each must
    be in the bank)."""
    _, val_idx = bank.split(val_fraction)
    excluded = {bank.sources.index(name) for name in exclude_sources if name in bank.sources}
    if only_sources:
        unknown = sorted(set(only_sources) - set(bank.sources))
        if unknown:
            raise FinecutError(f"validation sources {', '.join(unknown)} are not in the object bank "
                               f"(it holds {', '.join(bank.sources)})")
        excluded |= {i for i, name in enumerate(bank.sources) if name not in only_sources}
    return np.array([int(i) for i in val_idx if bank.objects[int(i)].source not in excluded], dtype=np.int64)


THIN_KIND_WEIGHTS: dict[str, float] = {"vessels": 0.5, "wires": 0.3, "string": 0.2}


def held_out_thin_samples(bank: ObjectBank, count: int, size: int, val_fraction: float, seed: int,
                          kinds: dict[str, float] | None = None) -> list[Sample]:
    """``count`` synthetic thin structures (:mod:`finecut.training.synthetic`; ``kinds`` the generator's kind weights,
    default :data:`THIN_KIND_WEIGHTS`) drawn at ``size``² on photos of the bank's validation split (DRIVE's images
    excluded), one per sample: neither the photo nor the structure was trained on."""
    from finecut.training.synthetic import SyntheticConfig, SyntheticPool, synthetic_view

    pool = SyntheticPool.of(bank, validation_indices(bank, val_fraction, ("DRIVE",)))
    view = ViewConfig(size=size, hi_factor=1, min_object_pixels=60)
    cfg = SyntheticConfig(kind_weights=dict(kinds or THIN_KIND_WEIGHTS))
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(count):
        v = synthetic_view(bank, rng, view, cfg, pool=pool)
        samples.append(Sample(f"thin-{i:03d}", v.image_hi, v.mask_hi.astype(np.int8)))
    return samples


def validation_samples(bank: ObjectBank, val_fraction: float, count: int, seed: int = 7,
                       sources: Sequence[str] | None = None) -> Sequence[Sample]:
    """A fixed random subset of ``count`` objects from the bank's validation images; with ``sources``, only objects
    of those training sets (bank source names, e.g. the whole-object sets ECSSD / COCO128 rather than BSDS500's
    region partitions), under the name ``train-val[A+B]``."""
    val_idx = validation_indices(bank, val_fraction, only_sources=sources)
    name = f"train-val[{'+'.join(sources)}]" if sources else "train-val"
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(val_idx, size=min(count, len(val_idx)), replace=False)) if len(val_idx) else val_idx
    return BankSamples(bank, chosen, name)


def evaluate_on_validation(engine: Engine, bank: ObjectBank, val_fraction: float, count: int,
                           out_dir: str | Path | None = None, model_name: str | None = None,
                           config: EvalConfig | None = None, progress: bool = True,
                           sources: Sequence[str] | None = None) -> RunResult:
    dataset = validation_samples(bank, val_fraction, count, sources=sources)
    return run_evaluation(engine, dataset, out_dir, config or EvalConfig(), model_name=model_name,
                          dataset_name=dataset.name, overwrite=True, progress=progress)


def sample_source(name: str) -> str:
    """The bank source of a held-out sample (its name is ``SOURCE/image#object``)."""
    return name.split("/", 1)[0]


def summaries_by_source(results: Sequence[SampleResult], config: EvalConfig) -> dict[str, dict[str, Any]]:
    """:func:`~finecut.evaluation.summary.summarize` of each bank source's samples, in source-name order.

    A pooled held-out score can hide where a model changed: COCO128's polygon masks, for one, cap most of its small
    objects below 90 % IoU for every model, so its NoF90 fills the pooled NoC90 whatever the model does."""
    groups: dict[str, list[SampleResult]] = {}
    for result in results:
        groups.setdefault(sample_source(result.name), []).append(result)
    return {source: summarize(groups[source], config) for source in sorted(groups)}


def source_table(by_source: dict[str, dict[str, Any]]) -> str:
    """A Markdown table of :func:`summaries_by_source`: objects, NoC85 / NoC90, NoF90, mIoU@1 / @5 per source."""

    def num(value: Any, digits: int = 2, scale: float = 1.0) -> str:
        return "-" if value is None else f"{value * scale:.{digits}f}"

    lines = ["| source | objects | NoC85 | NoC90 | NoF90 | mIoU@1 | mIoU@5 |", "|---|---|---|---|---|---|---|"]
    for source, s in by_source.items():
        miou = s.get("miou") or []
        lines.append(f"| {source} | {s['num_samples']} | {num(s['noc'].get('85'))} | {num(s['noc'].get('90'))} | "
                     f"{s['nof'].get('90', '-')} | {num(miou[0] if miou else None, 1, 100)} | "
                     f"{num(miou[4] if len(miou) > 4 else None, 1, 100)} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ in-training validation


class SegmentorEngine(Engine):
    """A network that maps (image, prompt maps) to logits, run on the whole image at its own size: no zoom-in, no
    refiner, no TTA — what the trainer validates. ``previous`` feeds the last probabilities back as the previous-mask
    channel."""

    name = "segmentor"

    def __init__(self, net: nn.Module, click_radius: float, prompt_channels: int) -> None:
        self.net = net
        self.click_radius = click_radius
        self.prompt_channels = prompt_channels

    @property
    def device(self) -> torch.device:
        """Where the network's weights are (a GPU during GPU training): inputs go there, probabilities come back."""
        return next(self.net.parameters()).device

    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        return to_tensor_images(image[None]).to(self.device)

    @torch.no_grad()
    def predict(self, image: np.ndarray, features: Any, prompts: Prompts,
                previous: Prediction | None) -> EngineOutput:
        height, width = image.shape[:2]
        prev = (torch.zeros(1, 1, height, width) if previous is None
                else torch.from_numpy(np.asarray(previous.probs, dtype=np.float32))[None, None])
        maps = prompt_maps([list(prompts.clicks)], prev.to(self.device), self.click_radius, self.prompt_channels)
        probs = torch.sigmoid(self.net(features, maps)["logits"])
        return EngineOutput(probs=probs[0, 0].cpu().numpy())

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "click_radius": self.click_radius, "prompt_channels": self.prompt_channels}


def in_training_indices(bank: ObjectBank, val_fraction: float, count: int) -> np.ndarray:
    """The held-out objects the trainer validates on: ``count`` of the validation split, a fixed random choice."""
    _, val_idx = bank.split(val_fraction)
    if not len(val_idx):
        return val_idx
    rng = np.random.default_rng(VAL_OBJECT_SEED)
    return rng.choice(val_idx, size=min(count, len(val_idx)), replace=False)


def held_out_views(bank: ObjectBank, indices: np.ndarray, size: int) -> list[Sample]:
    """One fixed object-centred ``size``² view per object (no flip, no colour jitter) as an evaluation sample."""
    rng = np.random.default_rng(VAL_VIEW_SEED)
    view_cfg = ViewConfig(size=size, hi_factor=1, object_centric=1.0, expand_range=(1.4, 1.4), flip=False,
                          brightness=0, contrast=0, saturation=0)
    samples = []
    for index in indices:
        obj = bank.objects[index]
        view = random_view(bank.image(index), bank.mask(index), obj.bbox, rng, view_cfg)
        samples.append(Sample(name=f"{bank.image_names[obj.image_index]}#{int(index)}", image=view.image,
                              gt=view.mask.astype(np.int8)))
    return samples


@contextmanager
def global_rng_kept() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global random state on exit: the evaluator seeds them before every
    sample, and training (dropout, drop-path) must go on as if validation had not run."""
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.random.set_rng_state(torch_state)


def validate_in_training(engine: Engine, samples: Sequence[Sample], clicks: int) -> dict[str, float]:
    """Standard-protocol click runs of ``clicks`` clicks on ``samples`` (:func:`held_out_views`) through the
    evaluator's loop, raw masks (no click-honour rule, threshold 0.49): mIoU after 1, 3 and 5 clicks (the last click
    when fewer) and NoC85 / NoC90 at ``clicks``, as ``val_*`` keys."""
    config = EvalConfig(max_clicks=clicks, noc_thresholds=VAL_NOC_THRESHOLDS, honour_clicks=False)
    predictor = Predictor(engine, honour_clicks=config.honour_clicks)
    with global_rng_kept():
        results = [evaluate_sample(predictor, sample, config, index=i) for i, sample in enumerate(samples)]
    arr = np.asarray([r.ious for r in results], dtype=np.float64)
    return {
        "val_miou@1": float(arr[:, 0].mean()),
        "val_miou@3": float(arr[:, min(2, arr.shape[1] - 1)].mean()),
        "val_miou@5": float(arr[:, min(4, arr.shape[1] - 1)].mean()),
        f"val_noc85@{clicks}": float(np.mean([r.noc["85"] for r in results])),
        f"val_noc90@{clicks}": float(np.mean([r.noc["90"] for r in results])),
    }
