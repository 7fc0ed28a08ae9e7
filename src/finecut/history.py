"""Compact storage for undo histories: masks kept as COCO RLE (or bit-packed), predictions without probabilities.

A full-resolution :class:`~finecut.predictor.Prediction` holds float32 probabilities and a bool mask: 5 bytes per
pixel, 30 MB on a 3000x2000 image. An undo history keeps, for every step but the current one, only what undo and redo
need to show the step again and to continue from it: the mask (:class:`PackedMask`), the threshold, the time and the
engine's small state (:class:`StoredResult`). A restored prediction's probabilities are its mask (0 / 1), as after
reloading a saved session.

A :class:`PackedMask` is pycocotools' compressed RLE (a few KB for an ordinary object mask, whatever the image size);
when that is larger than ``numpy.packbits`` of the mask (noise-like masks), it keeps the packed bits instead, so a
stored mask never takes more than ``ceil(H * W / 8)`` bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from finecut.errors import FinecutError
from finecut.export import mask_to_rle, rle_to_mask
from finecut.predictor import Prediction
from finecut.prompts import Prompts


@dataclass(frozen=True)
class PackedMask:
    """A bool H×W mask stored compactly: compressed COCO RLE counts, or ``np.packbits`` bits when that is smaller."""

    shape: tuple[int, int]
    counts: bytes | None = None
    bits: np.ndarray | None = field(default=None, compare=False)

    @classmethod
    def pack(cls, mask: np.ndarray) -> "PackedMask":
        arr = np.asarray(mask, dtype=bool)
        if arr.ndim != 2:
            raise FinecutError(f"a mask must be 2-D, got shape {arr.shape}")
        shape = (int(arr.shape[0]), int(arr.shape[1]))
        counts = mask_utils.encode(np.asfortranarray(arr.view(np.uint8)))["counts"]
        packed_size = (arr.size + 7) // 8
        if len(counts) <= packed_size:
            return cls(shape, counts=counts)
        return cls(shape, bits=np.packbits(arr.reshape(-1)))

    @classmethod
    def from_rle(cls, rle: Mapping[str, Any], validate: bool = True) -> "PackedMask":
        """From a JSON COCO RLE (``{"size": [h, w], "counts": ...}``). ``validate`` decodes compressed counts once to
        check them now rather than at the first undo (skip it to load long histories fast)."""
        counts = rle.get("counts")
        if isinstance(counts, str):
            h, w = (int(v) for v in rle["size"])
            packed = cls((h, w), counts=counts.encode("ascii"))
            if validate:
                packed.unpack()
            return packed
        return cls.pack(rle_to_mask(dict(rle)))

    def unpack(self) -> np.ndarray:
        h, w = self.shape
        if self.bits is not None:
            return np.unpackbits(self.bits, count=h * w).reshape(h, w).astype(bool)
        try:
            return mask_utils.decode({"size": [h, w], "counts": self.counts}).astype(bool)
        except (TypeError, ValueError) as exc:
            raise FinecutError(f"invalid packed mask: {exc}") from exc

    def to_rle(self) -> dict[str, Any]:
        """JSON-ready COCO RLE (no re-encoding when the mask is stored as RLE)."""
        if self.counts is not None:
            return {"size": list(self.shape), "counts": self.counts.decode("ascii")}
        return mask_to_rle(self.unpack())

    @property
    def nbytes(self) -> int:
        return len(self.counts) if self.counts is not None else int(self.bits.nbytes)


@dataclass(frozen=True)
class StoredResult:
    """A prediction as an undo history keeps it: the mask packed, no probabilities."""

    mask: PackedMask
    threshold: float = 0.5
    seconds: float = 0.0
    state: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, prediction: Prediction, mask: np.ndarray | None = None,
           threshold: float | None = None) -> "StoredResult":
        """Keep ``prediction``; ``mask`` and ``threshold`` replace its own (e.g. after re-thresholding)."""
        kept = prediction.mask if mask is None else mask
        t = prediction.threshold if threshold is None else threshold
        return cls(PackedMask.pack(kept), float(t), float(prediction.seconds), dict(prediction.state))

    def restore(self, prompts: Prompts) -> Prediction:
        """A :class:`Prediction` again, with the mask as its probabilities (marked ``restored`` in its state)."""
        mask = self.mask.unpack()
        return Prediction(mask=mask, probs=mask.astype(np.float32), prompts=prompts, threshold=self.threshold,
                          state={**dict(self.state), "restored": True}, seconds=self.seconds)

    @property
    def nbytes(self) -> int:
        return self.mask.nbytes
