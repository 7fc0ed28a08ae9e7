"""``finecut demo``: segment a real photo (the astronaut portrait) bundled with scikit-image from a few fixed clicks (no download needed)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from finecut.errors import FinecutError
from finecut.io import overlay, refuse_existing, write_image, write_mask
from finecut.predictor import Predictor
from finecut.prompts import Click, ClickKind
from finecut.registry import load_model

NAME = "demo"
HELP = "Segment the astronaut photo bundled with scikit-image from three clicks; writes mask.png and overlay.png."

#: The demo's clicks on ``skimage.data.astronaut()`` (512 x 512): the suit, the hair, and the flag at the left edge.
DEMO_CLICKS: tuple[Click, ...] = (
    Click(150, 420, ClickKind.POSITIVE),
    Click(230, 60, ClickKind.POSITIVE),
    Click(20, 300, ClickKind.NEGATIVE),
)
OUTPUT_FILES = ("image.png", "mask.png", "overlay.png")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="finecut-demo", help="output folder (default: %(default)s)")
    parser.add_argument("--model", default="default", help="model name or checkpoint path (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an earlier demo run")


def demo_image() -> np.ndarray:
    """The demo photo: NASA's portrait of astronaut Eileen Collins (public domain), shipped inside the scikit-image
    wheel (RGB uint8, 512 x 512)."""
    try:
        from skimage import data
    except ImportError as exc:  # pragma: no cover - scikit-image is a dependency
        raise FinecutError(f"the demo needs scikit-image ({exc})") from None
    return np.ascontiguousarray(data.astronaut())


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FinecutError(f"{out}: exists and is not a folder")
    paths = {name: out / name for name in OUTPUT_FILES}
    if not args.overwrite:
        refuse_existing(paths.values(), "pass --overwrite or choose another --out folder")
    image = demo_image()
    engine = load_model(args.model)
    predictor = Predictor(engine)
    start = time.perf_counter()
    predictor.set_image(image)
    prediction = None
    for count in range(1, len(DEMO_CLICKS) + 1):  # click by click, as a person would, each result fed back
        prediction = predictor.predict(clicks=list(DEMO_CLICKS[:count]), previous=prediction)
    assert prediction is not None
    seconds = time.perf_counter() - start
    mask = prediction.mask
    write_image(paths["image.png"], image, overwrite=args.overwrite)
    write_mask(paths["mask.png"], mask, overwrite=args.overwrite)
    write_image(paths["overlay.png"], overlay(image, mask, clicks=DEMO_CLICKS), overwrite=args.overwrite)
    area = int(mask.sum())
    clicks = ", ".join(f"({c.x:g}, {c.y:g}) {c.kind.value}" for c in DEMO_CLICKS)
    print(f"finecut demo: {engine.name} on scikit-image's astronaut.png ({image.shape[1]}x{image.shape[0]})")
    print(f"  clicks, one after the other: {clicks}")
    print(f"  mask: {area} px ({100.0 * area / mask.size:.1f}% of the image) in {seconds:.2f} s")
    for name in ("mask.png", "overlay.png", "image.png"):
        print(f"  wrote {paths[name]}")
    return 0
