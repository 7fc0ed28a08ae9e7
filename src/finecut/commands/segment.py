"""``finecut segment``: segment one image from clicks and/or a box, or many images from a prompts JSON file."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finecut.errors import FinecutError, one_line
from finecut.importers.coco import is_coco, parse_coco
from finecut.io import (megapixels_to_pixels, overlay, pixel_limit, read_image, refuse_existing, write_image,
                        write_mask)
from finecut.predictor import Predictor
from finecut.prompts import Box, Click, ClickKind
from finecut.registry import load_model

from finecut.commands._segment_coco import COCO_SCHEMA, run_coco_batch

NAME = "segment"
HELP = "Segment an image from clicks and/or a box (or a batch of images from a prompts JSON file)."

BATCH_SCHEMA = """\
batch mode: --batch PROMPTS.json --images DIR --out-dir DIR
  PROMPTS.json maps image file names (relative to --images) to prompts:
    {"img.jpg": {"clicks": [[x, y, "pos"], [x, y, "neg"]], "box": [x0, y0, x1, y1]},
     "other.png": {"clicks": [[120, 80]]}}
  A click is [x, y] (positive) or [x, y, kind] with kind pos|neg|tol (or positive|negative|tolerant);
  "box" is optional. Coordinates are pixels of the original image, x to the right, y down.
  Each image gives DIR/<name>.png (0/255 mask) and, with --overlays, DIR/<name>_overlay.png.
  An image that fails is reported and skipped; the exit status is nonzero if any failed.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "single image: finecut segment photo.jpg --click 120,80 --click 40,30:neg --out mask.png "
        "--overlay overlay.png\n\n" + BATCH_SCHEMA + COCO_SCHEMA
    )
    parser.add_argument("image", nargs="?", help="image to segment (single-image mode)")
    parser.add_argument(
        "--click", action="append", default=[], metavar="X,Y[:KIND]",
        help="a click at pixel (X, Y); KIND is pos (default), neg or tol. Repeat for more clicks, in order.",
    )
    parser.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box around the object, in pixels")
    parser.add_argument("--model", default="default", help="model name or checkpoint path (default: %(default)s)")
    parser.add_argument("--out", help="where to write the mask PNG (single-image mode)")
    parser.add_argument("--overlay", help="also write the image with the mask and clicks drawn on it")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace output files that already exist")
    parser.add_argument("--max-megapixels", type=float, default=None,
                        help="refuse larger images, checked on the file's header before decoding "
                             "(default: $FINECUT_MAX_MEGAPIXELS or 40)")
    batch = parser.add_argument_group("batch mode")
    batch.add_argument("--batch", metavar="PROMPTS.json",
                       help="prompts for many images (schema below), or a COCO file of boxes to pre-label a folder")
    batch.add_argument("--images", metavar="DIR", help="folder holding the images named in the prompts file")
    batch.add_argument("--out-dir", metavar="DIR", help="folder for the masks (and overlays)")
    batch.add_argument("--overlays", action="store_true", help="batch mode: also write <name>_overlay.png")


# ---------------------------------------------------------------- parsing prompts


def parse_click(text: str) -> Click:
    """``"X,Y"`` or ``"X,Y:KIND"`` -> :class:`Click`."""
    coords, _, kind = str(text).partition(":")
    parts = coords.split(",")
    if len(parts) != 2:
        raise FinecutError(f"--click {text!r}: expected X,Y or X,Y:KIND (e.g. 120,80 or 40,30:neg)")
    try:
        x, y = float(parts[0]), float(parts[1])
    except ValueError:
        raise FinecutError(f"--click {text!r}: X and Y must be numbers") from None
    return Click(x, y, ClickKind.parse(kind) if kind else ClickKind.POSITIVE)


def parse_box(text: str) -> Box:
    """``"X0,Y0,X1,Y1"`` -> :class:`Box`."""
    parts = str(text).split(",")
    if len(parts) != 4:
        raise FinecutError(f"--box {text!r}: expected four numbers X0,Y0,X1,Y1")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise FinecutError(f"--box {text!r}: coordinates must be numbers") from None
    return Box(*values)


def _json_click(item: Any, where: str) -> Click:
    if isinstance(item, dict):
        if "x" not in item or "y" not in item:
            raise FinecutError(f"{where}: a click object needs \"x\" and \"y\"")
        x, y, kind = item["x"], item["y"], item.get("kind", "positive")
    elif isinstance(item, (list, tuple)) and len(item) in (2, 3):
        x, y = item[0], item[1]
        kind = item[2] if len(item) == 3 else "positive"
    else:
        raise FinecutError(f"{where}: a click must be [x, y] or [x, y, kind], got {item!r}")
    if isinstance(x, bool) or isinstance(y, bool) or not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
        raise FinecutError(f"{where}: click coordinates must be numbers, got {item!r}")
    return Click(float(x), float(y), ClickKind.parse(kind))


@dataclass(frozen=True)
class ImagePrompts:
    """The prompts for one image of a batch."""

    clicks: tuple[Click, ...]
    box: Box | None


def parse_prompt_entry(entry: Any, where: str) -> ImagePrompts:
    """One value of the prompts JSON -> :class:`ImagePrompts` (errors name ``where``)."""
    if not isinstance(entry, dict):
        raise FinecutError(f"{where}: expected an object with \"clicks\" and/or \"box\", got {type(entry).__name__}")
    unknown = sorted(set(entry) - {"clicks", "box"})
    if unknown:
        raise FinecutError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} (allowed: clicks, box)")
    raw_clicks = entry.get("clicks", [])
    if not isinstance(raw_clicks, list):
        raise FinecutError(f"{where}: \"clicks\" must be a list")
    clicks = tuple(_json_click(c, f"{where} click {i + 1}") for i, c in enumerate(raw_clicks))
    box = None
    if entry.get("box") is not None:
        raw = entry["box"]
        if not isinstance(raw, list) or len(raw) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw
        ):
            raise FinecutError(f"{where}: \"box\" must be [x0, y0, x1, y1] numbers, got {raw!r}")
        box = Box(*(float(v) for v in raw))
    if not clicks and box is None:
        raise FinecutError(f"{where}: no prompt (give at least one click or a box)")
    return ImagePrompts(clicks, box)


def read_prompts_file(path: Path) -> dict[str, Any]:
    """Read the batch prompts JSON: an object mapping image names to prompt entries (validated per image later), or a
    COCO instances file (returned as parsed JSON; see :func:`finecut.importers.coco.is_coco`)."""
    if not path.is_file():
        raise FinecutError(f"{path}: prompts file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise FinecutError(f"{path}: cannot read prompts file ({exc})") from None
    except json.JSONDecodeError as exc:
        raise FinecutError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if is_coco(data):
        return data
    if not isinstance(data, dict):
        raise FinecutError(f"{path}: expected a JSON object mapping image names to prompts")
    if not data:
        raise FinecutError(f"{path}: the prompts file names no image")
    return data


# ---------------------------------------------------------------- segmenting


def segment_image(
    predictor: Predictor,
    image: np.ndarray,
    clicks: tuple[Click, ...] | list[Click],
    box: Box | None,
    threshold: float,
) -> tuple[np.ndarray, float]:
    """Set the image, predict once from all prompts; return the mask and the seconds it took."""
    start = time.perf_counter()
    predictor.set_image(image)
    prediction = predictor.predict(clicks=list(clicks), box=box, threshold=threshold)
    return prediction.mask, time.perf_counter() - start


def _check_threshold(value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise FinecutError(f"--threshold must be in [0, 1], got {value}")


def _check_output_folder(path: Path, option: str) -> None:
    """Outputs go into folders that exist: a typo in a path must not create a tree of new folders."""
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise FinecutError(f"{option} {path}: folder {folder} {what} (create it first)")
    if path.is_dir():
        raise FinecutError(f"{option} {path}: is a folder; give a file name (e.g. {path / 'mask.png'})")


def _max_pixels(args: argparse.Namespace) -> int:
    return pixel_limit() if args.max_megapixels is None else megapixels_to_pixels(args.max_megapixels)


def _describe(mask: np.ndarray) -> str:
    area = int(mask.sum())
    return f"{area} px ({100.0 * area / mask.size:.1f}% of the image)"


def _run_single(args: argparse.Namespace) -> int:
    if args.image is None:
        raise FinecutError("give an IMAGE (or --batch PROMPTS.json for many images)")
    if args.out is None:
        raise FinecutError("--out MASK.png is required")
    if args.images or args.out_dir or args.overlays:
        raise FinecutError("--images, --out-dir and --overlays belong to batch mode (--batch)")
    clicks = [parse_click(c) for c in args.click]
    box = parse_box(args.box) if args.box else None
    if not clicks and box is None:
        raise FinecutError("no prompt: give at least one --click X,Y or a --box X0,Y0,X1,Y1")
    out = Path(args.out)
    outputs = [out] + ([Path(args.overlay)] if args.overlay else [])
    if len(set(outputs)) != len(outputs):
        raise FinecutError(f"{out}: --out and --overlay name the same file")
    for path, option in zip(outputs, ("--out", "--overlay")):
        _check_output_folder(path, option)
    if not args.overwrite:
        refuse_existing(outputs, "pass --overwrite to replace it")
    image = read_image(args.image, max_pixels=_max_pixels(args))
    try:
        for click in clicks:
            click.check_inside(*image.shape[:2])
        if box is not None:
            box.check_inside(*image.shape[:2])
    except FinecutError as exc:
        raise FinecutError(f"{args.image}: {exc}") from None
    predictor = Predictor(load_model(args.model))
    mask, seconds = segment_image(predictor, image, clicks, box, args.threshold)
    write_mask(out, mask, overwrite=args.overwrite)
    print(f"wrote {out}: mask of {_describe(mask)} in {seconds:.2f} s ({predictor.model.name})")
    if args.overlay:
        write_image(args.overlay, overlay(image, mask, clicks=clicks), overwrite=args.overwrite)
        print(f"wrote {args.overlay}")
    return 0


def _batch_targets(key: str, out_dir: Path) -> tuple[Path, Path]:
    rel = Path(key)
    if rel.is_absolute() or ".." in rel.parts or not rel.name:
        raise FinecutError(f"{key!r}: image names in the prompts file must be relative paths inside --images")
    return out_dir / rel.with_suffix(".png"), out_dir / rel.parent / f"{rel.stem}_overlay.png"


def _naming(key: str, image_path: Path, message: str) -> str:
    """A batch error message that starts with its image: the prompts file's key, unless it starts with the image."""
    return message if message.startswith((key, str(image_path))) else f"{key}: {message}"


def _run_batch(args: argparse.Namespace) -> int:
    if args.image or args.click or args.box or args.out or args.overlay:
        raise FinecutError("batch mode takes no IMAGE, --click, --box, --out or --overlay (prompts come from JSON)")
    if not args.images or not args.out_dir:
        raise FinecutError("batch mode needs --images DIR and --out-dir DIR")
    prompts_path = Path(args.batch)
    images_dir = Path(args.images)
    if not images_dir.is_dir():
        raise FinecutError(f"{images_dir}: images folder not found")
    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FinecutError(f"{out_dir}: exists and is not a folder")
    if not out_dir.exists() and not out_dir.parent.is_dir():
        raise FinecutError(f"--out-dir {out_dir}: folder {out_dir.parent} does not exist (create it first)")
    max_pixels = _max_pixels(args)
    entries = read_prompts_file(prompts_path)
    if is_coco(entries):
        coco = parse_coco(prompts_path.read_bytes(), str(prompts_path))
        return run_coco_batch(args, coco, Predictor(load_model(args.model)), images_dir, out_dir, max_pixels)
    predictor = Predictor(load_model(args.model))
    failed = 0
    seen: set[Path] = set()
    for key, entry in entries.items():
        try:
            mask_path, overlay_path = _batch_targets(key, out_dir)
            if mask_path in seen:
                raise FinecutError(f"{key}: another image of the batch already writes {mask_path}")
            seen.add(mask_path)
            prompts = parse_prompt_entry(entry, f"{prompts_path} [{key!r}]")
            image_path = images_dir / key
            if mask_path.resolve() == image_path.resolve():
                raise FinecutError(f"{image_path}: the mask would replace the image itself; choose another --out-dir")
            outputs = [mask_path] + ([overlay_path] if args.overlays else [])
            if not args.overwrite:
                refuse_existing(outputs, "pass --overwrite to replace it")
            image = read_image(image_path, max_pixels=max_pixels)
            try:
                for click in prompts.clicks:
                    click.check_inside(*image.shape[:2])
                if prompts.box is not None:
                    prompts.box.check_inside(*image.shape[:2])
            except FinecutError as exc:
                raise FinecutError(f"{image_path}: {exc}") from None
            mask, seconds = segment_image(predictor, image, prompts.clicks, prompts.box, args.threshold)
            write_mask(mask_path, mask, overwrite=args.overwrite)
            if args.overlays:
                write_image(overlay_path, overlay(image, mask, clicks=prompts.clicks), overwrite=args.overwrite)
            print(one_line(f"{key}: wrote {mask_path} ({_describe(mask)}, {seconds:.2f} s)"))
        except FinecutError as exc:
            failed += 1
            print(f"finecut segment: error: {one_line(_naming(key, images_dir / key, str(exc)))}", file=sys.stderr)
        except (OSError, MemoryError, RuntimeError, ValueError) as exc:  # a disk or model failure on this image only
            failed += 1
            text = " ".join(str(exc).split()) or type(exc).__name__
            print(one_line(f"finecut segment: error: {key}: {type(exc).__name__}: {text}"), file=sys.stderr)
    done = len(entries) - failed
    print(f"segmented {done} of {len(entries)} images into {out_dir}" + (f"; {failed} failed" if failed else ""))
    return 2 if failed else 0


def run(args: argparse.Namespace) -> int:
    _check_threshold(args.threshold)
    if args.batch:
        return _run_batch(args)
    return _run_single(args)
