"""A seeded synthetic alpha evaluation set, written to disk for ``finecut evaluate --alpha``.

No matting benchmark exists offline, so FocalClick-XL's alpha protocol is measured on composites rendered by
:func:`~finecut.training.alpha_synth.render_alpha_composite` (exact fractional alpha: hair, fur, wires, cut-outs) onto
photos nobody trained on — the object bank's *validation* split (:meth:`~finecut.training.objects.ObjectBank.split`,
the name-hashed images every trainer leaves out; :func:`held_out_photos`), or a folder of the user's own photos
(:func:`folder_photos`). Held-out objects of the bank are also the bodies of some composites (cut-outs with hair or
fur, or plain cut-outs).

:func:`write_alpha_set` writes the layout :class:`~finecut.evaluation.alpha.AlphaFolder` reads::

    OUT/images/<stem>.png    RGB composite (8-bit)
    OUT/alphas/<stem>.png    ground-truth alpha, 16-bit grey: alpha = value / 65535
    OUT/trimaps/<stem>.png   128 where 0 < alpha < 1 (dilated by ``trimap_band`` px), 255 where alpha = 1, 0 elsewhere
    OUT/manifest.json        seed, count, kinds, renderer settings, versions, each sample's sources and statistics

``<stem>`` is ``NNNN-<kind>``. Everything is deterministic: sample ``i`` draws from
``numpy.random.default_rng([seed, 2, i])`` (its background crop, the body, the renderer's seed), its kind is
``kinds[i % len(kinds)]`` and its background ``order[i % n]`` with ``order`` a permutation of the ``n`` backgrounds
drawn from ``default_rng([seed, 1])`` (distinct backgrounds while ``count <= n``). So a set of ``count`` samples is
the first ``count`` samples of any larger one with the same seed and sources, and the same call writes
byte-identical files (with the same NumPy and OpenCV: the renderer draws with OpenCV).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from finecut import __version__
from finecut.datasets.matching import list_images, require_dir
from finecut.errors import FinecutError
from finecut.io import (
    IMAGE_SUFFIXES,
    atomic_write_bytes,
    encode_png,
    read_image,
    write_image,
)
from finecut.training.alpha_synth import KINDS, AlphaSynthConfig, render_alpha_composite
from finecut.training.objects import ObjectBank

FORMAT = "finecut synthetic alpha set"
SUBFOLDERS = ("images", "alphas", "trimaps")
ALPHA_MAX = 65535
UNKNOWN, FOREGROUND, BACKGROUND = 128, 255, 0
_ORDER, _SAMPLE = 1, 2  # purposes in the seed sequence


@dataclass(frozen=True)
class Photo:
    """A background photo (uint8 RGB) and where it came from (``{"dataset", "index", "name"}``)."""

    image: np.ndarray
    source: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CutOut:
    """A real object as a composite's body: ``image`` uint8 RGB and ``mask`` bool of one shape, and its source."""

    image: np.ndarray
    mask: np.ndarray
    source: dict[str, Any] = field(default_factory=dict)


def held_out_photos(bank: ObjectBank, val_fraction: float, min_body_side: int = 32
                    ) -> tuple[list[Photo], list[CutOut]]:
    """The photos of ``bank``'s validation split (``val_fraction``, the split the trainers leave out), in bank order,
    and its validation objects whose box is at least ``min_body_side`` px on both sides, cut to their box (copies:
    the bank can be freed)."""
    _, val_idx = bank.split(val_fraction)
    if not len(val_idx):
        raise FinecutError(f"the object bank has no validation images at val_fraction {val_fraction}")
    image_indices = sorted({bank.objects[int(i)].image_index for i in val_idx})
    photos = [Photo(bank.images[k].copy(), {"dataset": bank.sources[bank.image_sources[k]], "index": k,
                                     "name": bank.image_names[k]}) for k in image_indices]
    bodies = []
    for i in (int(i) for i in val_idx):
        obj = bank.objects[i]
        x0, y0, x1, y1 = obj.bbox
        if min(x1 - x0, y1 - y0) < min_body_side:
            continue
        bodies.append(CutOut(np.ascontiguousarray(bank.image(i)[y0:y1, x0:x1]),
                             np.ascontiguousarray(bank.mask(i)[y0:y1, x0:x1]),
                             {"dataset": bank.sources[obj.source], "index": i, "image_index": obj.image_index,
                              "name": bank.image_names[obj.image_index]}))
    return photos, bodies


def folder_photos(folder: str | os.PathLike) -> list[Photo]:
    """The images directly in ``folder`` (sorted by name) as backgrounds."""
    root = Path(folder)
    files = list_images(require_dir(root, "folder of photos"))
    if not files:
        raise FinecutError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return [Photo(read_image(p), {"dataset": str(root), "index": i, "name": p.name}) for i, p in enumerate(files)]


def _crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, float, list[int]]:
    """A random ``size``² crop; a photo with a side under ``size`` is first enlarged (bilinear) to fit it."""
    h, w = photo.shape[:2]
    scale = max(1.0, size / min(h, w))
    if scale > 1.0:
        w, h = max(size, int(np.ceil(w * scale))), max(size, int(np.ceil(h * scale)))
        photo = cv2.resize(photo, (w, h), interpolation=cv2.INTER_LINEAR)
    y0, x0 = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return np.ascontiguousarray(photo[y0:y0 + size, x0:x0 + size]), scale, [x0, y0, x0 + size, y0 + size]


def quantize_alpha(alpha: np.ndarray) -> np.ndarray:
    """Alpha in [0, 1] -> uint16 0..65535 (rounded)."""
    return np.rint(np.clip(alpha, 0.0, 1.0) * ALPHA_MAX).astype(np.uint16)


def alpha_trimap(alpha16: np.ndarray, band: int) -> np.ndarray:
    """The trimap of a uint16 alpha: 128 on the fractional pixels (0 < alpha < 1) dilated by ``band`` px (a disc),
    255 where alpha is 1, 0 elsewhere."""
    unknown = ((alpha16 > 0) & (alpha16 < ALPHA_MAX)).astype(np.uint8)
    if band > 0 and unknown.any():
        unknown = cv2.dilate(unknown, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1)))
    trimap = np.where(alpha16 == ALPHA_MAX, FOREGROUND, BACKGROUND).astype(np.uint8)
    trimap[unknown > 0] = UNKNOWN
    return trimap


def _json_bytes(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=False) + "\n").encode()


def _prepare(out: Path, stems: Sequence[str], overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite``; with it, remove the files of the previous set written there
    (listed in its manifest) and refuse files in images/, alphas/ or trimaps/ that no manifest accounts for (they
    would join the set)."""
    if out.exists() and not out.is_dir():
        raise FinecutError(f"{out}: exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise FinecutError(f"{out}: not empty; refusing to write an alpha set into it (choose an empty or new folder, "
                           "or pass overwrite=True / --overwrite to replace a set written there)")
    previous: set[str] = set()
    manifest = out / "manifest.json"
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError) as exc:
            raise FinecutError(f"{manifest}: unreadable ({exc}); not replacing the folder's files") from exc
        if data.get("format") != FORMAT:
            raise FinecutError(f"{manifest}: not a {FORMAT} manifest; not replacing the folder's files")
        previous = {str(s["stem"]) if isinstance(s, dict) else str(s) for s in data.get("samples", [])}
    ours = previous | set(stems)
    foreign = sorted(str(p.relative_to(out)) for sub in SUBFOLDERS if (out / sub).is_dir()
                     for p in (out / sub).iterdir() if p.stem not in ours or p.suffix.lower() != ".png")
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise FinecutError(f"{out}: holds files that are not part of an alpha set written there ({shown}); "
                           "not overwriting — remove them or choose another folder")
    for stem in sorted(previous - set(stems)):
        for sub in SUBFOLDERS:
            (out / sub / f"{stem}.png").unlink(missing_ok=True)


def write_alpha_set(out_dir: str | os.PathLike, backgrounds: Sequence[Photo | np.ndarray], count: int, seed: int,
                    size: int = 320, kinds: Sequence[str] = KINDS, bodies: Sequence[CutOut] = (),
                    body_probability: float = 0.5, trimap_band: int = 3, supersample: int = 4,
                    config: AlphaSynthConfig | None = None, source: dict[str, Any] | None = None,
                    overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """Render ``count`` composites onto ``size``² crops of ``backgrounds`` and write them as an alpha set into
    ``out_dir`` (layout and seeding: the module doc). ``bodies`` (real cut-outs) are the body of a ``hair``, ``fur``
    or ``cutout`` composite with probability ``body_probability`` (else a procedural blob). ``source`` describes where
    the backgrounds come from, for the manifest. Refuses a non-empty ``out_dir`` unless ``overwrite``. Returns the
    manifest as written (parsed back from its JSON)."""
    out = Path(out_dir)
    if count < 1:
        raise FinecutError(f"count must be >= 1, got {count}")
    if seed < 0:
        raise FinecutError(f"seed must be >= 0, got {seed}")
    if size < 16:
        raise FinecutError(f"size must be >= 16, got {size}")
    if trimap_band < 0:
        raise FinecutError(f"trimap_band must be >= 0, got {trimap_band}")
    if not 0.0 <= body_probability <= 1.0:
        raise FinecutError(f"body_probability must be in [0, 1], got {body_probability}")
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if not kinds or unknown:
        raise FinecutError(f"kinds must be a non-empty choice of {', '.join(KINDS)}; got {kinds}")
    photos = [b if isinstance(b, Photo) else Photo(np.asarray(b), {"index": i}) for i, b in enumerate(backgrounds)]
    if not photos:
        raise FinecutError("no background photos")
    for p in photos:
        if p.image.ndim != 3 or p.image.shape[2] != 3 or p.image.dtype != np.uint8:
            raise FinecutError(f"background {p.source}: must be a uint8 (H, W, 3) image, got {p.image.dtype} "
                               f"{p.image.shape}")
    cfg = config or AlphaSynthConfig()
    stems = [f"{i:04d}-{kinds[i % len(kinds)]}" for i in range(count)]
    _prepare(out, stems, overwrite)

    manifest: dict[str, Any] = {
        "format": FORMAT,
        "synthetic": True,
        "description": "composites rendered by finecut.training.alpha_synth.render_alpha_composite (exact fractional "
                       "alpha) onto crops of the listed photos; not a matting benchmark",
        "finecut_version": __version__,
        "numpy_version": np.__version__,
        "opencv_version": cv2.__version__,
        "seed": int(seed),
        "count": int(count),
        "size": int(size),
        "kinds": kinds,
        "body_probability": float(body_probability),
        "trimap_band": int(trimap_band),
        "renderer": {"function": "finecut.training.alpha_synth:render_alpha_composite",
                     "supersample": int(supersample), "config": dataclasses.asdict(cfg)},
        "encoding": {"images": "8-bit RGB PNG", "alphas": f"16-bit grey PNG, alpha = value / {ALPHA_MAX}",
                     "trimaps": f"8-bit grey PNG: {UNKNOWN} = unknown (0 < alpha < 1, dilated by trimap_band px), "
                                f"{FOREGROUND} = alpha 1, {BACKGROUND} = the rest"},
        "source": dict(source or {}),
        "backgrounds": len(photos),
        "bodies": len(bodies),
        "complete": False,
        "samples": stems,
    }
    # a manifest first, so an interrupted write can be replaced with overwrite=True
    atomic_write_bytes(out / "manifest.json", _json_bytes(manifest), overwrite=True)
    order = np.random.default_rng([seed, _ORDER]).permutation(len(photos))
    samples: list[dict[str, Any]] = []
    totals: dict[str, np.ndarray] = {}
    indices: Any = range(count)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="alpha set", unit="sample")
    for i in indices:
        kind, stem = kinds[i % len(kinds)], stems[i]
        rng = np.random.default_rng([seed, _SAMPLE, i])
        photo = photos[int(order[i % len(photos)])]
        background, scale, crop = _crop(photo.image, size, rng)
        use_body = bool(bodies) and rng.random() < body_probability
        body_index = int(rng.integers(len(bodies))) if bodies else -1
        render_seed = int(rng.integers(2**31 - 1))
        body = bodies[body_index] if use_body and kind != "wires" else None
        comp = render_alpha_composite(background, render_seed, kind, None if body is None else (body.image, body.mask),
                                      supersample, cfg)
        alpha16 = quantize_alpha(comp.alpha)
        trimap = alpha_trimap(alpha16, trimap_band)
        write_image(out / "images" / f"{stem}.png", comp.image, overwrite=True)
        atomic_write_bytes(out / "alphas" / f"{stem}.png", encode_png(alpha16), overwrite=True)
        atomic_write_bytes(out / "trimaps" / f"{stem}.png", encode_png(trimap), overwrite=True)
        counts = np.array([alpha16.size, int(((alpha16 > 0) & (alpha16 < ALPHA_MAX)).sum()),
                           int((trimap == UNKNOWN).sum()), int((alpha16 >= ALPHA_MAX // 2 + 1).sum())], np.int64)
        totals[kind] = totals.get(kind, np.zeros(4, np.int64)) + counts
        samples.append({
            "stem": stem, "kind": kind, "render_seed": render_seed,
            "background": {**photo.source, "scale": round(scale, 6), "crop": crop},
            "body": None if body is None else dict(body.source),
            "box": [int(v) for v in comp.box],
            "fractional_pixels": int(counts[1]), "unknown_pixels": int(counts[2]), "foreground_pixels": int(counts[3]),
        })

    def stats(c: np.ndarray) -> dict[str, Any]:
        return {"pixels": int(c[0]), "fractional_fraction": round(float(c[1] / c[0]), 6),
                "unknown_fraction": round(float(c[2] / c[0]), 6), "foreground_fraction": round(float(c[3] / c[0]), 6)}

    manifest["stats"] = {"all": stats(sum(totals.values())), **{k: stats(totals[k]) for k in kinds if k in totals}}
    manifest["samples"] = samples
    manifest["complete"] = True
    data = _json_bytes(manifest)
    atomic_write_bytes(out / "manifest.json", data, overwrite=True)
    return json.loads(data)


__all__ = ["CutOut", "Photo", "alpha_trimap", "folder_photos", "held_out_photos", "quantize_alpha", "write_alpha_set"]
