"""The options every ``finecut`` command that runs an inference server shares (``app``, ``serve``)."""

from __future__ import annotations

import argparse


def add_server_options(parser: argparse.ArgumentParser, port: int, host_help: str = "address to listen on") -> None:
    """``--host``, ``--port``, ``--threshold``, ``--threads``, ``--cache`` and ``--max-megapixels``."""
    parser.add_argument("--host", default="127.0.0.1", help=f"{host_help} (default: %(default)s)")
    parser.add_argument("--port", type=int, default=port, help="port (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per inference (default: $FINECUT_THREADS, else 1, which keeps clicks fast on "
                             "a busy machine; 0 = one per core)")
    parser.add_argument("--cache", type=int, default=4, help="images kept encoded per model (default: %(default)s)")
    parser.add_argument("--max-megapixels", type=float, default=None,
                        help="refuse images larger than this, checked on the header before decoding "
                             "(default: $FINECUT_MAX_MEGAPIXELS or 40)")
