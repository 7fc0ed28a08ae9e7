"""What every dataset reader yields: samples with an image, an int ground truth and optional extras."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finecut.io import read_image


@dataclass(frozen=True)
class Sample:
    """One evaluation/training sample: one object in one image.

    ``gt`` is int8 (H, W): 1 object, 0 background, -1 ignore. ``region`` (optional bool (H, W)) limits scoring to a
    part of the image, e.g. DRIVE's field of view. ``init_mask`` (optional bool) is a given initial mask for the
    mask-correction protocol.
    """

    name: str
    image: np.ndarray
    gt: np.ndarray
    region: np.ndarray | None = None
    init_mask: np.ndarray | None = None
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SampleRef:
    """A lazily loaded sample: its name, image path and a function that reads its ground truth (and extras)."""

    name: str
    image_path: Path
    load_gt: Callable[[], np.ndarray]
    load_region: Callable[[], np.ndarray] | None = None
    meta: dict = field(default_factory=dict)

    def load(self) -> Sample:
        image = read_image(self.image_path)
        gt = self.load_gt()
        region = self.load_region() if self.load_region is not None else None
        return Sample(self.name, image, gt, region=region, meta=dict(self.meta, image_path=str(self.image_path)))


class Dataset(Sequence[Sample]):
    """A named, ordered list of lazily loaded samples."""

    def __init__(self, name: str, refs: Sequence[SampleRef], root: Path | None = None) -> None:
        self.name = name
        self.refs = list(refs)
        self.root = root

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return Dataset(self.name, self.refs[index], self.root)
        return self.refs[index].load()

    def __iter__(self) -> Iterator[Sample]:
        for ref in self.refs:
            yield ref.load()
