"""What every dataset reader yields: samples with an image, an int ground truth and optional extras."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finecut.datasets.cache import FileCache
from finecut.errors import FinecutError
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


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


@dataclass(frozen=True)
class SampleRef:
    """A lazily loaded sample: its name, image path and a function that reads its ground truth (and extras).

    ``mask_path`` names the file the ground truth comes from (used in error messages); ``load_image`` replaces the
    plain :func:`finecut.io.read_image` (readers pass a cached reader). Both are optional.
    """

    name: str
    image_path: Path
    load_gt: Callable[[], np.ndarray]
    load_region: Callable[[], np.ndarray] | None = None
    meta: dict = field(default_factory=dict)
    mask_path: Path | None = None
    load_image: Callable[[], np.ndarray] | None = None

    def load(self) -> Sample:
        """Decode the image and ground truth; a ground truth whose size differs from the image's is an error."""
        image = self.load_image() if self.load_image is not None else read_image(self.image_path)
        gt = np.asarray(self.load_gt())
        source = self.mask_path if self.mask_path is not None else f"ground truth of {self.name}"
        if gt.ndim != 2:
            raise FinecutError(f"{source}: ground truth must be 2-D, got shape {gt.shape}")
        if gt.shape != image.shape[:2]:
            raise FinecutError(
                f"{source}: mask size {_size(gt.shape)} does not match image {self.image_path} "
                f"size {_size(image.shape)}"
            )
        if gt.dtype != np.int8:
            gt = gt.astype(np.int8)
        region = None
        if self.load_region is not None:
            region = np.asarray(self.load_region(), dtype=bool)
            if region.shape != image.shape[:2]:
                raise FinecutError(
                    f"region of {self.name}: size {_size(region.shape)} does not match image {self.image_path} "
                    f"size {_size(image.shape)}"
                )
        meta = dict(self.meta, image_path=str(self.image_path))
        if self.mask_path is not None:
            meta.setdefault("mask_path", str(self.mask_path))
        return Sample(self.name, image, gt, region=region, meta=meta)


class Dataset(Sequence[Sample]):
    """A named, ordered list of lazily loaded samples (one per object).

    ``cache`` is the reader's decode cache (images, label maps, ``.mat`` files), shared by all samples of the
    dataset, so the objects of one image decode it once. :meth:`cached` enlarges it for many-epoch training.
    """

    def __init__(
        self, name: str, refs: Sequence[SampleRef], root: Path | None = None, cache: FileCache | None = None
    ) -> None:
        self.name = name
        self.refs = list(refs)
        self.root = root
        self.cache = cache
        self._caches: list[FileCache] = [cache] if cache is not None else []
        self._sample_cache: OrderedDict[int, Sample] | None = None
        self._sample_cache_size = 0

    def __len__(self) -> int:
        return len(self.refs)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {len(self)} samples, root={str(self.root) if self.root else None!r})"

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return self._derived(self.refs[index])
        if self._sample_cache is None:
            return self.refs[index].load()
        index = range(len(self.refs))[index]  # normalise negatives, raise IndexError
        hit = self._sample_cache.get(index)
        if hit is not None:
            self._sample_cache.move_to_end(index)
            return _copy_sample(hit)
        sample = self.refs[index].load()
        self._sample_cache[index] = sample
        while len(self._sample_cache) > self._sample_cache_size:
            self._sample_cache.popitem(last=False)
        return _copy_sample(sample)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self.refs)):
            yield self[i]

    def cached(self, max_bytes: int = 4 << 30, max_samples: int = 4096) -> "Dataset":
        """A view of this dataset that keeps decoded files in memory across epochs.

        With a reader cache (every built-in reader has one) its budget is raised to ``max_bytes`` (the cache is
        shared with this dataset): each image and label file is then decoded once, and per-object masks are cut from
        the cached label maps. A dataset built from plain refs gets an LRU of up to ``max_samples`` whole samples.
        Arrays handed out are copies, so callers may modify them.
        """
        if self._caches:
            share = int(max_bytes) // len(self._caches)
            for cache in self._caches:
                cache.max_bytes = max(cache.max_bytes, share)
            view = Dataset(self.name, self.refs, self.root, self.cache)
            view._caches = list(self._caches)
            return view
        view = Dataset(self.name, self.refs, self.root)
        view._sample_cache = OrderedDict()
        view._sample_cache_size = max(1, int(max_samples))
        return view

    def subset(self, indices: Iterable[int]) -> "Dataset":
        """The samples at ``indices``, in that order."""
        return self._derived([self.refs[i] for i in indices])

    def filter(self, keep: Callable[[SampleRef], bool]) -> "Dataset":
        """The samples whose ref satisfies ``keep`` (decides from name/meta, without decoding)."""
        return self._derived([r for r in self.refs if keep(r)])

    def _derived(self, refs: list[SampleRef]) -> "Dataset":
        out = Dataset(self.name, refs, self.root, self.cache)
        out._caches = list(self._caches)
        if self._sample_cache is not None:
            out._sample_cache = OrderedDict()
            out._sample_cache_size = self._sample_cache_size
        return out

    def groups(self) -> dict[Path, list[int]]:
        """Sample indices grouped by image file (one image, many objects), in order of first appearance."""
        out: dict[Path, list[int]] = {}
        for i, ref in enumerate(self.refs):
            out.setdefault(ref.image_path, []).append(i)
        return out

    @staticmethod
    def concat(datasets: Sequence["Dataset"], name: str | None = None) -> "Dataset":
        """One dataset holding the samples of all ``datasets`` (each keeps its own cache)."""
        if not datasets:
            raise FinecutError("cannot concatenate an empty list of datasets")
        refs = [ref for ds in datasets for ref in ds.refs]
        out = Dataset(name or "+".join(ds.name for ds in datasets), refs)
        out._caches = list({id(c): c for ds in datasets for c in ds._caches}.values())
        return out


def _copy_sample(sample: Sample) -> Sample:
    return Sample(
        sample.name,
        sample.image.copy(),
        sample.gt.copy(),
        region=None if sample.region is None else sample.region.copy(),
        init_mask=None if sample.init_mask is None else sample.init_mask.copy(),
        meta=dict(sample.meta),
    )
