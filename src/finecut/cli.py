"""The ``finecut`` command line: a thin dispatcher over one module per subcommand in :mod:`finecut.commands`.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. A
:class:`~finecut.errors.FinecutError` (bad input) ends the program with a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

from finecut import __version__, commands
from finecut.errors import FinecutError, one_line


def _command_modules() -> list:
    modules = []
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        modules.append(importlib.import_module(f"finecut.commands.{info.name}"))
    return modules


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``finecut segment: error: ...``, exit status 2), like every other finecut error;
    ``--help`` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        if message.endswith("expected one argument"):
            message += " (a value that starts with '-' goes after '=', e.g. --click=-5,-5)"
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="finecut", description="Precise interactive image segmentation.")
    parser.add_argument("--version", action="version", version=f"finecut {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "_run"):
        parser.print_help()
        return 1
    try:
        return int(args._run(args) or 0)
    except FinecutError as exc:
        print(f"finecut {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"finecut {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
