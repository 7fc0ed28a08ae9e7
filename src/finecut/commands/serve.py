"""``finecut serve``: the CVAT interactor and Label Studio ML backend on one HTTP server."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from finecut.commands._server_options import add_server_options
from finecut.errors import FinecutError
from finecut.io import megapixels_to_pixels, pixel_limit
from finecut.threads import set_inference_threads

NAME = "serve"
HELP = "serve finecut models to CVAT (interactor) and Label Studio (ML backend)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="model used by default (default: %(default)s)")
    parser.add_argument("--models", default=None,
                        help="comma-separated models offered to CVAT (default: every available model)")
    add_server_options(parser, port=9090,
                       host_help="address to listen on (use 0.0.0.0 to reach it from containers)")
    parser.add_argument("--label-studio-url", default=os.environ.get("LABEL_STUDIO_URL"),
                        help="Label Studio address, to fetch task images from it (env LABEL_STUDIO_URL)")
    parser.add_argument("--label-studio-token", default=os.environ.get("LABEL_STUDIO_API_KEY"),
                        help="Label Studio access token for those fetches (env LABEL_STUDIO_API_KEY)")
    parser.add_argument("--local-files-root", type=Path, default=None,
                        help="folder behind Label Studio's /data/local-files/?d=... URLs")
    parser.add_argument("--allow-url-fetch", action="store_true",
                        help="allow fetching task images from any http(s) URL (off by default)")
    parser.add_argument("--allow-url-host", action="append", default=[], metavar="HOST[:PORT]",
                        help="allow fetching task images from this host (e.g. your cloud storage, where Label Studio "
                             "redirects to presigned URLs); repeat for more hosts. Redirects are checked hop by hop, "
                             "and the Label Studio token is only ever sent to --label-studio-url")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from finecut.registry import available_models
    from finecut.server.app import ServeConfig, create_server

    known = available_models()
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    for name in [args.model, *(models or [])]:
        if name not in known:
            raise FinecutError(f"unknown model {name!r}; available: {', '.join(known)}")
    if args.local_files_root is not None and not args.local_files_root.is_dir():
        raise FinecutError(f"{args.local_files_root}: local files root not found")
    set_inference_threads(args.threads)
    config = ServeConfig(
        model=args.model,
        models=models,
        threshold=args.threshold,
        cache_size=args.cache,
        max_pixels=pixel_limit() if args.max_megapixels is None else megapixels_to_pixels(args.max_megapixels),
        label_studio_url=args.label_studio_url,
        label_studio_token=args.label_studio_token,
        local_files_root=args.local_files_root,
        allow_url_fetch=args.allow_url_fetch,
        allow_url_hosts=tuple(args.allow_url_host),
        public_port=args.port,
    )
    app = create_server(config)
    base = f"http://{args.host}:{args.port}"
    print(f"finecut serve: model {args.model!r} on {base}")
    print(f"  Label Studio ML backend: {base}   (GET /health, POST /setup, POST /predict)")
    print(f"  CVAT interactor:         {base}/cvat   (nuclio stand-in: {base}/api/functions)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
