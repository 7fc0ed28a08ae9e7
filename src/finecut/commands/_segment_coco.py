"""``finecut segment --batch BOXES.json`` with a COCO file: every box (e.g. a detector's) prompts one mask.

Pre-labelling a folder: the boxes of a COCO instances file become masks, written as ``<out-dir>/coco_rle.json`` with
the same images, categories (ids kept) and scores; open it for correction with
``finecut app IMAGES --import <out-dir>/coco_rle.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from finecut.errors import FinecutError, one_line
from finecut.export import ExportImage, ExportObject, write_coco
from finecut.importers.coco import CocoFile, CocoImage
from finecut.io import overlay, read_image, refuse_existing, write_image
from finecut.predictor import Predictor
from finecut.prompts import Box

COCO_SCHEMA = """\
  PROMPTS.json may instead be a COCO instances file whose annotations have boxes ("bbox": [x, y, w, h]), e.g. a
  detector's output: each box gives one mask, and DIR/coco_rle.json is written (same images, categories and
  scores; boxes reaching past the image are clipped). Open it for correction with
    finecut app IMAGES --import DIR/coco_rle.json"""

OUTPUT = "coco_rle.json"


def _clipped(box: Box, height: int, width: int) -> Box | None:
    x0, y0 = min(max(box.x0, 0.0), width), min(max(box.y0, 0.0), height)
    x1, y1 = min(max(box.x1, 0.0), width), min(max(box.y1, 0.0), height)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return Box(x0, y0, x1, y1)


def _image_path(images_dir: Path, image: CocoImage) -> Path:
    rel = Path(image.file_name)
    if rel.is_absolute() or ".." in rel.parts or not rel.name:
        raise FinecutError(f"{image.file_name!r}: image file names must be relative paths inside --images")
    return images_dir / rel


def _segment_image(predictor: Predictor, coco: CocoFile, image: CocoImage, images_dir: Path, threshold: float,
                   max_pixels: int, overlay_path: Path | None, overwrite: bool) -> tuple[ExportImage, int, float]:
    path = _image_path(images_dir, image)
    pixels = read_image(path, max_pixels=max_pixels)
    height, width = pixels.shape[:2]
    if (height, width) != (image.height, image.width):
        raise FinecutError(f"{path}: the COCO file says {image.width}x{image.height}, the image is {width}x{height}")
    start = time.perf_counter()
    predictor.set_image(pixels)
    objects, skipped = [], 0
    for ann in coco.annotations_of(image):
        box = ann.box()
        box = _clipped(box, height, width) if box is not None else None
        if box is None:
            skipped += 1
            print(one_line(f"finecut segment: note: {image.file_name}: {ann.name} has no usable box; skipped"),
                  file=sys.stderr)
            continue
        prediction = predictor.predict(box=box, threshold=threshold)
        objects.append(ExportObject(len(objects) + 1, ann.label, prediction.mask, ann.score))
    seconds = time.perf_counter() - start
    if overlay_path is not None:
        union = np.zeros((height, width), bool)
        for obj in objects:
            union |= obj.mask
        write_image(overlay_path, overlay(pixels, union), overwrite=overwrite)
    return ExportImage(image.file_name, height, width, tuple(objects)), skipped, seconds


def run_coco_batch(args: argparse.Namespace, coco: CocoFile, predictor: Predictor, images_dir: Path,
                   out_dir: Path, max_pixels: int) -> int:
    """Segment every box of ``coco``; write ``out_dir/coco_rle.json``; 2 when an image failed."""
    target = out_dir / OUTPUT
    if not args.overwrite:
        refuse_existing([target], "pass --overwrite to replace it")
    for problem in coco.problems:
        print(one_line(f"finecut segment: note: {problem}"), file=sys.stderr)
    results, failed, boxes = [], 0, 0
    for image in sorted(coco.images.values(), key=lambda i: i.id):
        rel = Path(image.file_name)
        overlay_path = out_dir / rel.parent / f"{rel.stem}_overlay.png" if args.overlays else None
        try:
            if overlay_path is not None and not args.overwrite:
                refuse_existing([overlay_path], "pass --overwrite to replace it")
            result, _skipped, seconds = _segment_image(predictor, coco, image, images_dir, args.threshold,
                                                       max_pixels, overlay_path, args.overwrite)
        except FinecutError as exc:
            failed += 1
            text = str(exc) if str(exc).startswith((image.file_name, str(images_dir))) else f"{image.file_name}: {exc}"
            print(one_line(f"finecut segment: error: {text}"), file=sys.stderr)
            continue
        except (OSError, MemoryError, RuntimeError, ValueError) as exc:
            failed += 1
            text = " ".join(str(exc).split()) or type(exc).__name__
            print(one_line(f"finecut segment: error: {image.file_name}: {type(exc).__name__}: {text}"),
                  file=sys.stderr)
            continue
        boxes += len(result.objects)
        results.append(result)
        print(one_line(f"{image.file_name}: {len(result.objects)} mask(s) from boxes in {seconds:.2f} s"))
    names: dict[str, int] = {}
    for cat_id, name in sorted(coco.categories.items()):
        names.setdefault(name, cat_id)
    out_dir.mkdir(exist_ok=True)
    write_coco(results, target, "rle", overwrite=args.overwrite, categories=names, listed=names)
    print(f"segmented {boxes} box(es) in {len(results)} of {len(coco.images)} images into {target}"
          + (f"; {failed} failed" if failed else ""))
    print(f"correct them in the app: finecut app {images_dir} --import {target}")
    return 2 if failed else 0
