"""``finecut card CHECKPOINT --out FILE [--results DIR]``: write a Markdown model card for a trained checkpoint."""

from __future__ import annotations

import argparse

NAME = "card"
HELP = "write a Markdown model card (architecture, parameters, training recipe, validation and evaluation scores)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint NAME.json (or NAME.safetensors / the stem)")
    parser.add_argument("--out", required=True, help="Markdown file to write (an existing card there is rewritten, "
                        "keeping its hand-written '## Notes' section to the end; any other file is refused)")
    parser.add_argument("--results", default=None, metavar="DIR",
                        help="folder searched (recursively) for evaluation summary.json files of this model")
    parser.add_argument("--model-name", action="append", default=[], metavar="NAME",
                        help="extra model label that identifies this checkpoint in the summaries (repeatable)")


def run(args: argparse.Namespace) -> int:
    from finecut.training.card import write_model_card

    out = write_model_card(args.checkpoint, args.out, args.results, model_names=args.model_name)
    print(f"model card: {out}")
    return 0
