"""``finecut train CONFIG.toml``: train an interactive segmentation model (resumable, DDP-ready via torchrun)."""

from __future__ import annotations

import argparse

NAME = "train"
HELP = "train a model from a TOML config (resume with --resume; multi-process with torchrun)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training config (TOML), e.g. configs/focalclick-lite0.toml")
    parser.add_argument("--resume", action="store_true", help="continue the run in the config's run_dir")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this long")
    parser.add_argument("--steps", type=int, default=None, help="override the total number of steps")
    parser.add_argument("--run-dir", default=None, help="override the run directory")
    parser.add_argument("--data-root", default=None, help="folder holding the training sets")
    parser.add_argument("--bank", default=None, help="object-bank cache file (built on first use)")
    parser.add_argument("--threads", type=int, default=None, help="override the number of CPU threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from finecut.training.config import TrainConfig
    from finecut.training.trainer import train

    cfg = TrainConfig.from_file(args.config)
    if args.steps is not None:
        cfg.steps = args.steps
    if args.run_dir is not None:
        cfg.run_dir = args.run_dir
    if args.data_root is not None:
        cfg.data.data_root = args.data_root
    if args.threads is not None:
        cfg.threads = args.threads
    if args.bank is not None:
        cfg.data.bank = args.bank
    run_dir = train(cfg, resume=args.resume, max_minutes=args.max_minutes, progress=not args.no_progress)
    print(f"checkpoint: {run_dir / 'last.json'}")
    return 0
