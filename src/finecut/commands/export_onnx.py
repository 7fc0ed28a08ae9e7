"""``finecut export-onnx MODEL OUT_DIR``: a learned model's networks as ONNX graphs and a ``model.json``
(docs/onnx.md)."""

from __future__ import annotations

import argparse
import json

NAME = "export-onnx"
HELP = "export a learned model's networks as ONNX graphs (dynamic sizes) with a model.json that says how to drive them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model name or checkpoint (as load_model takes it, e.g. default, ntclick, "
                                      "path/to/NAME.json; NAME:KEY=VALUE options are stored in model.json)")
    parser.add_argument("out_dir", help="folder to write the graphs and model.json into (created if missing)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the files of an earlier export in OUT_DIR (refused by default)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 17)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip running each graph on onnxruntime against PyTorch at other input sizes")


def run(args: argparse.Namespace) -> int:
    from finecut.onnx.export import OPSET, export_onnx
    from finecut.registry import load_model

    engine = load_model(args.model)
    path = export_onnx(engine, args.out_dir, opset=args.opset or OPSET, verify=not args.no_verify,
                        overwrite=args.overwrite)
    doc = json.loads(path.read_text(encoding="utf-8"))
    for graph in doc["graphs"].values():
        size = (path.parent / graph["file"]).stat().st_size / 2**20
        check = graph.get("verified_max_relative_difference")
        checked = f", max relative difference to PyTorch {check:.1e}" if check is not None else ""
        print(f"{graph['file']}: {size:.1f} MiB{checked}")
    print(f"wrote {path}")
    return 0
