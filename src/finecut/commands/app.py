"""``finecut app IMAGE_DIR``: the browser annotation app on a local server."""

from __future__ import annotations

import argparse
import webbrowser
from pathlib import Path

from finecut.errors import FinecutError
from finecut.io import megapixels_to_pixels, pixel_limit
from finecut.threads import set_inference_threads

NAME = "app"
HELP = "annotate a folder of images in the browser (local web app)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image_dir", type=Path, help="folder of images to annotate")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for annotations and exports (default: IMAGE_DIR/.finecut)")
    parser.add_argument("--model", default="default", help="model selected at start (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="port (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per inference (default: $FINECUT_THREADS, else 1, which keeps clicks fast on "
                             "a busy machine; 0 = one per core)")
    parser.add_argument("--cache", type=int, default=4, help="images kept encoded per model (default: %(default)s)")
    parser.add_argument("--max-megapixels", type=float, default=None,
                        help="refuse images larger than this, checked on the header before decoding "
                             "(default: $FINECUT_MAX_MEGAPIXELS or 40)")
    parser.add_argument("--max-file-mb", type=float, default=64.0,
                        help="refuse image files / uploads larger than this (default: %(default)s)")
    parser.add_argument("--open", action="store_true", help="open the page in the default browser")


def build_config(args: argparse.Namespace):
    from finecut.app.folder import Limits
    from finecut.app.service import AppConfig

    if not args.image_dir.is_dir():
        raise FinecutError(f"{args.image_dir}: image folder not found")
    if not 0.0 <= args.threshold <= 1.0:
        raise FinecutError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.cache < 1:
        raise FinecutError(f"--cache must be >= 1, got {args.cache}")
    max_pixels = pixel_limit() if args.max_megapixels is None else megapixels_to_pixels(args.max_megapixels)
    return AppConfig(
        image_dir=args.image_dir,
        out_dir=args.out,
        default_model=args.model,
        threshold=args.threshold,
        cache_size=args.cache,
        limits=Limits(max_file_bytes=int(args.max_file_mb * 1024 * 1024), max_pixels=max_pixels),
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from finecut.app.server import create_app
    from finecut.registry import available_models

    if args.model not in available_models():
        raise FinecutError(f"unknown model {args.model!r}; available: {', '.join(available_models())}")
    set_inference_threads(args.threads)
    config = build_config(args)
    app = create_app(config)
    url = f"http://{args.host}:{args.port}/"
    print(f"finecut app: annotating {config.image_dir.resolve()} -> {config.output_dir.resolve()}")
    print(f"finecut app: open {url}  (Ctrl+C to stop)")
    if args.open:
        webbrowser.open(url)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
