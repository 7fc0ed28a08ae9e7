"""Initial masks for the mask-correction protocol, read from a folder by matching file stems."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from finecut.errors import FinecutError
from finecut.io import IMAGE_SUFFIXES, read_mask
from finecut.prompts import check_mask_shape

if TYPE_CHECKING:
    from finecut.datasets.base import Sample


class InitMaskFolder:
    """Finds the initial mask of a sample in ``folder``: a file whose stem is the sample's name or its image's stem."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FinecutError(f"{self.folder}: initial-mask folder not found")
        self._by_stem: dict[str, Path] = {}
        for path in sorted(self.folder.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                self._by_stem.setdefault(path.stem, path)
        if not self._by_stem:
            raise FinecutError(f"{self.folder}: no mask images in the initial-mask folder")

    def path_for(self, sample: Sample) -> Path:
        candidates = [sample.name]
        image_path = sample.meta.get("image_path")
        if image_path:
            candidates.append(Path(image_path).stem)
        for stem in candidates:
            if stem in self._by_stem:
                return self._by_stem[stem]
        raise FinecutError(f"{self.folder}: no initial mask for sample {sample.name!r} (expected {candidates[-1]}.png)")

    def __call__(self, sample: Sample) -> np.ndarray:
        path = self.path_for(sample)
        mask = read_mask(path)
        try:
            check_mask_shape(mask, np.asarray(sample.gt).shape, what=f"initial mask {path}")
        except FinecutError as exc:
            raise FinecutError(str(exc).replace("but the image is", f"but sample {sample.name}'s image is")) from None
        return mask

    def __repr__(self) -> str:
        return f"InitMaskFolder({str(self.folder)!r})"
