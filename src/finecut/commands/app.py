"""``finecut app IMAGE_DIR``: the browser annotation app on a local server."""

from __future__ import annotations

import argparse
import webbrowser
from pathlib import Path

from finecut.commands._server_options import add_server_options
from finecut.errors import FinecutError
from finecut.io import megapixels_to_pixels, pixel_limit
from finecut.threads import set_inference_threads

NAME = "app"
HELP = "annotate a folder of images in the browser (local web app)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image_dir", type=Path, help="folder of images to annotate")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for annotations and exports (default: IMAGE_DIR/.finecut)")
    parser.add_argument("--model", default="default",
                        help="model selected at start: a name or a checkpoint path / spec, offered in the "
                             "chooser beside the shipped models (default: %(default)s)")
    add_server_options(parser, port=8765)
    parser.add_argument("--max-file-mb", type=float, default=64.0,
                        help="refuse image files / uploads larger than this (default: %(default)s)")
    parser.add_argument("--labels", metavar="NAMES|FILE", default=None,
                        help="a fixed label set: comma-separated class names (person,car,tree), or a .json / .yaml "
                             "file of classes with name, color and hotkey; classes get hotkeys 1-9 and stable "
                             "category ids (default: free-text labels)")
    parser.add_argument("--import", dest="imports", metavar="COCO.json|MASKS_DIR", action="append", default=[],
                        type=Path,
                        help="before starting, import existing annotations as objects of the matching images: a COCO "
                             "file (RLE or polygons) or a folder of PNG masks / instance maps; repeatable; importing "
                             "the same file again adds nothing")
    parser.add_argument("--open", action="store_true", help="open the page in the default browser")


def build_config(args: argparse.Namespace):
    from finecut.app.folder import Limits
    from finecut.app.labels import load_label_set
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
        labels=load_label_set(args.labels) if args.labels else None,
    )


def run_imports(service, sources: list[Path]) -> None:
    """Import each source into the folder, printing what was imported and every problem met."""
    from finecut.app.importing import import_path
    from finecut.errors import one_line

    for source in sources:
        report = import_path(service, source)
        print(one_line(f"finecut app: {report.summary()}"))
        for problem in report.problems:
            print(one_line(f"  {problem}"))
        if report.problem_count > len(report.problems):
            print(f"  ... and {report.problem_count - len(report.problems)} more")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from finecut.app.server import create_app
    from finecut.registry import available_models, load_model

    if args.model not in available_models():  # a checkpoint path or NAME:KEY=VALUE spec: load it now, or say why not
        try:
            load_model(args.model)
        except FinecutError as exc:
            raise FinecutError(f"--model {args.model}: {exc} (models: {', '.join(available_models())}, or a "
                               f"checkpoint path)") from None
    set_inference_threads(args.threads)
    config = build_config(args)
    for source in args.imports:
        if not source.exists():
            raise FinecutError(f"--import {source}: not found (give a COCO .json file or a folder of PNG masks)")
    app = create_app(config)
    run_imports(app.state.service, args.imports)
    url = f"http://{args.host}:{args.port}/"
    print(f"finecut app: annotating {config.image_dir.resolve()} -> {config.output_dir.resolve()}")
    print(f"finecut app: open {url}  (Ctrl+C to stop)")
    if args.open:
        webbrowser.open(url)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
