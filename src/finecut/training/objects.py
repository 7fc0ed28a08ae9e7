"""An in-memory bank of training objects: decoded images (downscaled once) and their object masks (bit-packed).

Decoding JPEGs and .mat files every epoch would cost more CPU than the network, so the bank is built once from the
dataset readers and saved as one ``.npz`` file (no pickle) that later runs and other processes load in seconds.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from finecut.datasets.base import Dataset
from finecut.errors import FinecutError


@dataclass(frozen=True)
class BankObject:
    image_index: int
    offset: int  # into the packed-mask buffer
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    area: int
    source: int  # index into ObjectBank.sources


class ObjectBank:
    """Images (uint8 RGB, long side <= ``max_side``) and the masks of their objects."""

    def __init__(self, images: list[np.ndarray], image_names: list[str], image_sources: list[int],
                 mask_bits: np.ndarray, objects: list[BankObject], sources: list[str]) -> None:
        self.images = images
        self.image_names = image_names
        self.image_sources = image_sources
        self.mask_bits = mask_bits
        self.objects = objects
        self.sources = sources

    def __len__(self) -> int:
        return len(self.objects)

    def mask(self, index: int) -> np.ndarray:
        obj = self.objects[index]
        h, w = self.images[obj.image_index].shape[:2]
        n = h * w
        nbytes = (n + 7) // 8
        bits = self.mask_bits[obj.offset: obj.offset + nbytes]
        return np.unpackbits(bits, count=n).reshape(h, w).astype(bool)

    def image(self, index: int) -> np.ndarray:
        return self.images[self.objects[index].image_index]

    def object_indices_by_source(self) -> dict[int, np.ndarray]:
        groups: dict[int, list[int]] = defaultdict(list)
        for i, obj in enumerate(self.objects):
            groups[obj.source].append(i)
        return {k: np.asarray(v) for k, v in groups.items()}

    def split(self, val_fraction: float, salt: str = "finecut-val") -> tuple[np.ndarray, np.ndarray]:
        """Deterministic train/val split of object indices, by image (all objects of an image on one side)."""
        def is_val(name: str) -> bool:
            digest = hashlib.sha1(f"{salt}:{name}".encode()).digest()
            return int.from_bytes(digest[:4], "big") / 2**32 < val_fraction

        val_images = {i for i, name in enumerate(self.image_names) if is_val(name)}
        flags = np.array([obj.image_index in val_images for obj in self.objects], dtype=bool)
        return np.flatnonzero(~flags), np.flatnonzero(flags)

    # ---------------------------------------------------------------- reshaping
    def select(self, object_indices: Sequence[int] | np.ndarray) -> ObjectBank:
        """A bank of the given objects only (in that order), holding only the images they are on."""
        chosen = [self.objects[int(i)] for i in object_indices]
        image_map: dict[int, int] = {}
        for obj in chosen:
            image_map.setdefault(obj.image_index, len(image_map))
        order = sorted(image_map, key=image_map.get)
        packer = _MaskPacker()
        for i, obj in zip(object_indices, chosen, strict=True):
            packer.add(image_map[obj.image_index], self.mask(int(i)), obj.source, (obj.bbox, obj.area))
        return ObjectBank([self.images[k] for k in order], [self.image_names[k] for k in order],
                          [self.image_sources[k] for k in order], packer.mask_bits, packer.objects,
                          list(self.sources))

    def downscaled(self, max_side: int) -> ObjectBank:
        """The bank with every image's long side at most ``max_side`` (INTER_AREA; masks resized and thresholded at
        a half, boxes and areas recomputed); objects that vanish at the smaller size are dropped."""
        images, scaled = [], []
        for image in self.images:
            small, _ = _resize_to(image, max_side)
            images.append(np.ascontiguousarray(small))
            scaled.append(small.shape[:2] != image.shape[:2])
        packer = _MaskPacker()
        for index, obj in enumerate(self.objects):
            h, w = images[obj.image_index].shape[:2]
            mask = self.mask(index)
            if scaled[obj.image_index]:
                mask = cv2.resize(mask.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_AREA) >= 128
            if mask.any():
                packer.add(obj.image_index, mask, obj.source)
        return ObjectBank(images, list(self.image_names), list(self.image_sources), packer.mask_bits,
                          packer.objects, list(self.sources))

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path, image_quality: int | None = None) -> None:
        """Write the bank as one ``.npz`` (no pickle). By default images are raw pixels and masks bit-packed, which
        load in seconds. With ``image_quality`` (1-100) the file is compact instead, about 30x smaller, to move a bank
        to another machine (a GPU box): images as WebP at that quality (lossy), each mask as a lossless PNG of its
        box; loading decodes them (tens of seconds)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = np.array([(o.image_index, o.offset, *o.bbox, o.area, o.source) for o in self.objects], dtype=np.int64)
        shapes = np.array([im.shape[:2] for im in self.images], dtype=np.int32)
        common = {"image_shapes": shapes, "image_names": np.array(self.image_names),
                  "image_sources": np.array(self.image_sources, dtype=np.int32), "objects": table.reshape(-1, 8),
                  "sources": np.array(self.sources)}
        if image_quality is None:
            arrays = {"image_pixels": _join([im.reshape(-1) for im in self.images]), "mask_bits": self.mask_bits}
        else:
            if not 1 <= image_quality <= 100:
                raise FinecutError(f"image_quality must be in 1..100, got {image_quality}")
            images = [_encode(".webp", im[:, :, ::-1], [cv2.IMWRITE_WEBP_QUALITY, image_quality])
                      for im in self.images]
            masks = []
            for index, obj in enumerate(self.objects):
                x0, y0, x1, y1 = obj.bbox
                masks.append(_encode(".png", self.mask(index)[y0:y1, x0:x1].astype(np.uint8),
                                     [cv2.IMWRITE_PNG_COMPRESSION, 9, cv2.IMWRITE_PNG_BILEVEL, 1]))
            arrays = {"image_codes": _join(images), "image_code_ends": _ends(images),
                      "mask_codes": _join(masks), "mask_code_ends": _ends(masks)}
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, **common, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "ObjectBank":
        """Read a bank written by :meth:`save` (either form)."""
        try:
            data = np.load(str(path), allow_pickle=False)
            shapes = data["image_shapes"]
            table = data["objects"]
            compact = "image_codes" in data.files
            if compact:
                images = [_decode(path, code, cv2.IMREAD_COLOR)[:, :, ::-1].copy()
                          for code in _split(data["image_codes"], data["image_code_ends"])]
                mask_bits, objects = _unpack_box_masks(path, shapes, table,
                                                       _split(data["mask_codes"], data["mask_code_ends"]))
            else:
                flat = data["image_pixels"]
                images, pos = [], 0
                for h, w in shapes:
                    n = int(h) * int(w) * 3
                    images.append(flat[pos: pos + n].reshape(int(h), int(w), 3))
                    pos += n
                mask_bits = data["mask_bits"]
                objects = [BankObject(int(r[0]), int(r[1]), (int(r[2]), int(r[3]), int(r[4]), int(r[5])), int(r[6]),
                                      int(r[7])) for r in table]
            names, image_sources, sources = data["image_names"], data["image_sources"], data["sources"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise FinecutError(f"{path}: cannot read object bank ({exc})") from exc
        if compact and any(im.shape[:2] != (int(h), int(w)) for im, (h, w) in zip(images, shapes, strict=True)):
            raise FinecutError(f"{path}: object bank images do not match their recorded shapes")
        return cls(images, [str(s) for s in names], [int(s) for s in image_sources], mask_bits, objects,
                   [str(s) for s in sources])


def _encode(ext: str, array: np.ndarray, params: list[int]) -> np.ndarray:
    ok, buf = cv2.imencode(ext, array, params)
    if not ok:
        raise FinecutError(f"cannot encode a {array.shape} array as {ext}")
    return buf.reshape(-1)


def _decode(path: str | Path, code: np.ndarray, flags: int) -> np.ndarray:
    out = cv2.imdecode(code, flags)
    if out is None:
        raise FinecutError(f"{path}: object bank holds an undecodable image or mask")
    return out


def _join(codes: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(codes) if codes else np.zeros(0, np.uint8)


def _ends(codes: list[np.ndarray]) -> np.ndarray:
    return np.cumsum([c.size for c in codes], dtype=np.int64)


def _split(flat: np.ndarray, ends: np.ndarray) -> list[np.ndarray]:
    starts = np.concatenate([[0], ends[:-1]]) if len(ends) else ends
    return [flat[int(a):int(b)] for a, b in zip(starts, ends, strict=True)]


class _MaskPacker:
    """Object masks bit-packed one after another into one buffer (:attr:`ObjectBank.mask_bits`), each recorded as a
    :class:`BankObject` with its offset, tight box and area."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.objects: list[BankObject] = []
        self.offset = 0

    def add(self, image_index: int, mask: np.ndarray, source: int,
            box: tuple[tuple[int, int, int, int], int] | None = None) -> None:
        """Append ``mask`` (bool, the image's shape, not empty); ``box`` is its known (bbox, area), else measured."""
        if box is None:
            ys, xs = np.nonzero(mask)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1), len(ys)
        bits = np.packbits(mask.reshape(-1))
        self.chunks.append(bits)
        self.objects.append(BankObject(image_index, self.offset, box[0], box[1], source))
        self.offset += bits.size

    @property
    def mask_bits(self) -> np.ndarray:
        return _join(self.chunks)


def _unpack_box_masks(path: str | Path, shapes: np.ndarray, table: np.ndarray,
                      codes: list[np.ndarray]) -> tuple[np.ndarray, list[BankObject]]:
    """The packed full-image masks and the objects of a compact bank, from its per-object box PNGs."""
    if len(codes) != len(table):
        raise FinecutError(f"{path}: object bank holds {len(codes)} masks for {len(table)} objects")
    packer = _MaskPacker()
    for k, (row, code) in enumerate(zip(table, codes, strict=True)):
        image_index, (x0, y0, x1, y1) = int(row[0]), (int(v) for v in row[2:6])
        crop = _decode(path, code, cv2.IMREAD_GRAYSCALE)
        if crop.shape != (y1 - y0, x1 - x0) or not crop.any():
            raise FinecutError(f"{path}: mask {k} is {crop.shape} (or empty), its box {(y1 - y0, x1 - x0)}")
        mask = np.zeros(tuple(int(v) for v in shapes[image_index]), bool)
        mask[y0:y1, x0:x1] = crop > 0
        packer.add(image_index, mask, int(row[7]), ((x0, y0, x1, y1), int(np.count_nonzero(crop))))
    return packer.mask_bits, packer.objects


def _resize_to(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def build_object_bank(datasets: Sequence[Dataset], max_side: int = 512, min_area_fraction: float = 0.002,
                      max_area_fraction: float = 0.85, min_pixels: int = 64, progress: bool = True,
                      names: Sequence[str] | None = None) -> ObjectBank:
    """Decode every image once, downscale to ``max_side``, and keep object masks whose area is in range.

    ``names`` labels the sources (default: each dataset's name). A photo that several datasets read (CCP's garments
    and CCP-person's whole people) is decoded and stored once, under the first dataset's name, so its objects of
    every source fall on the same side of :meth:`ObjectBank.split`.
    """
    images: list[np.ndarray] = []
    image_names: list[str] = []
    image_sources: list[int] = []
    packer = _MaskPacker()
    sources = list(names) if names is not None else [ds.name for ds in datasets]
    from finecut.io import read_image

    decoded: dict[Path, tuple[int, tuple[int, int]]] = {}  # resolved image path -> (index in images, full h, w)
    for source_index, dataset in enumerate(datasets):
        groups: dict[str, list] = defaultdict(list)
        for ref in dataset.refs:
            groups[str(ref.image_path)].append(ref)
        for image_path, refs in tqdm(groups.items(), desc=f"bank {dataset.name}", disable=not progress):
            key = Path(image_path).resolve()
            known = decoded.get(key)
            if known is not None:
                small, full_hw = images[known[0]], known[1]
            else:
                full = read_image(image_path)
                full_hw = full.shape[:2]
                small, _ = _resize_to(full, max_side)
            h, w = small.shape[:2]
            kept = []
            for ref in refs:
                gt = ref.load_gt()
                if gt.shape != full_hw:
                    raise FinecutError(f"{image_path}: mask of {ref.name} has shape {gt.shape}, image {full_hw}")
                mask = (gt == 1).astype(np.uint8)
                if (h, w) != mask.shape:
                    mask = cv2.resize(mask * 255, (w, h), interpolation=cv2.INTER_AREA) >= 128
                else:
                    mask = mask.astype(bool)
                area = int(mask.sum())
                if area < min_pixels or not (min_area_fraction <= area / (h * w) <= max_area_fraction):
                    continue
                kept.append(mask)
            if not kept:
                continue
            if known is not None:
                image_index = known[0]
            else:
                image_index = len(images)
                decoded[key] = (image_index, full_hw)
                images.append(np.ascontiguousarray(small))
                image_names.append(f"{dataset.name}/{Path(image_path).name}")
                image_sources.append(source_index)
            for mask in kept:
                packer.add(image_index, mask, source_index)
    if not packer.objects:
        raise FinecutError("no training objects found (check the dataset paths and area limits)")
    return ObjectBank(images, image_names, image_sources, packer.mask_bits, packer.objects, sources)
