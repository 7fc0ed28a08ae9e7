"""``finecut train CONFIG.toml``: train an interactive segmentation model (resumable, DDP-ready via torchrun).

Every method trains through this one entry point; ``[model].arch`` chooses it (FocalClick, SimpleClick / RITM-style
nets, NTClick's ECP and HRR). ``--validate CHECKPOINT[:KEY=VALUE,...]`` evaluates a checkpoint on the config's held-out
bank images instead; ``--assemble ECP HRR OUT`` joins a trained NTClick ECP and HRR into one ``ntclick`` checkpoint;
``--average A B [...] --average-out OUT`` writes the weight average of checkpoints of one architecture
(:mod:`finecut.training.average`).
"""

from __future__ import annotations

import argparse
import json
import sys

NAME = "train"
HELP = "train a model from a TOML config (resume with --resume; multi-process with torchrun)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="training config (TOML), e.g. configs/focalclick-lite0.toml")
    parser.add_argument("--resume", action="store_true", help="continue the run in the config's run_dir")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this long")
    parser.add_argument("--steps", type=int, default=None, help="override the total number of steps")
    parser.add_argument("--run-dir", default=None, help="override the run directory")
    parser.add_argument("--data-root", default=None, help="folder holding the training sets")
    parser.add_argument("--bank", default=None, help="object-bank cache file (built on first use)")
    parser.add_argument("--threads", type=int, default=None, help="override the number of CPU threads")
    parser.add_argument("--device", default=None, help='override where the networks train: "cpu", "cuda", "cuda:N"')
    parser.add_argument("--validate", metavar="CHECKPOINT[:KEY=VALUE,...]", default=None,
                        help="instead of training: evaluate CHECKPOINT (full inference pipeline, standard protocol) "
                             "on the held-out images of the config's object bank, with inference options in the "
                             "loader's NAME:KEY=VALUE syntax, e.g. runs/x/last:target_size=320")
    parser.add_argument("--val-count", type=int, default=100, help="objects for --validate (default 100)")
    parser.add_argument("--val-protocol", default="standard",
                        help="the evaluation protocol of --validate: standard (clicks), box, scribble, coarse (IoU band "
                             "0.75-0.80), ... (finecut evaluate --protocol's choices, with their defaults)")
    parser.add_argument("--val-sources", nargs="+", default=None, metavar="SOURCE",
                        help="--validate on the held-out objects of these training sets only (bank source names, e.g. "
                             "COCO128 ECSSD WeizmannHorse MSRA10K: whole objects, as in the benchmarks)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="deprecated: an inference option for --validate (use --validate CHECKPOINT:KEY=VALUE)")
    parser.add_argument("--assemble", nargs=3, metavar=("ECP", "HRR", "OUT"), default=None,
                        help="instead of training: join a trained NTClick ECP and HRR checkpoint into one ntclick "
                             "checkpoint OUT (.json + .safetensors); no CONFIG needed")
    parser.add_argument("--average", nargs="+", metavar="CHECKPOINT", default=None,
                        help="instead of training: average the weights of these checkpoints (paths or shipped names, "
                             "one architecture) into --average-out; no CONFIG needed")
    parser.add_argument("--average-out", metavar="OUT", default=None, help="where --average writes (.json + "
                                                                           ".safetensors)")
    parser.add_argument("--overwrite", action="store_true",
                        help="--average / --assemble: replace an existing checkpoint at OUT (refused by default)")
    parser.add_argument("--average-weights", nargs="+", type=float, metavar="W", default=None,
                        help="--average: one weight per checkpoint (default: equal)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from finecut.errors import FinecutError

    if args.assemble:
        if args.config is not None:
            raise FinecutError("--assemble takes no CONFIG")
        from finecut.training.ntclick import assemble_ntclick

        print(f"checkpoint: {assemble_ntclick(*args.assemble, overwrite=args.overwrite)}")
        return 0
    if args.average:
        if args.config is not None or not args.average_out:
            raise FinecutError("--average takes no CONFIG and needs --average-out OUT")
        from finecut.training.average import average_checkpoints

        out = average_checkpoints(args.average, args.average_out, args.average_weights, overwrite=args.overwrite)
        print(f"checkpoint: {out}")
        return 0
    if args.config is None:
        raise FinecutError("a training CONFIG is needed (or --assemble ECP HRR OUT, or --average ... --average-out)")
    if args.option and not args.validate:  # ignored, as it always was; say so
        print("finecut train: --option applies to --validate only (ignored)", file=sys.stderr)

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
    if args.device is not None:
        cfg.device = args.device
        cfg.check_device()
    if args.validate:
        return _validate(cfg, args)
    run_dir = train(cfg, resume=args.resume, max_minutes=args.max_minutes, progress=not args.no_progress)
    print(f"checkpoint: {run_dir / 'last.json'}")
    return 0


def _validate(cfg, args: argparse.Namespace) -> int:
    from pathlib import Path

    from finecut.errors import FinecutError

    import finecut
    from finecut.models.pretrained import checkpoint_name
    from finecut.registry import format_model_spec, parse_model_spec, parse_option
    from finecut.training.trainer import DistInfo, load_or_build_bank
    from finecut.training.validation import evaluate_on_validation, source_table, summaries_by_source

    checkpoint, options = parse_model_spec(args.validate)
    if args.option:
        print("finecut train: --option is deprecated; give inference options as --validate CHECKPOINT:KEY=VALUE,...",
              file=sys.stderr)
        options.update(parse_option(o) for o in args.option)
    from finecut.evaluation.config import PROTOCOLS, EvalConfig

    if args.val_protocol not in PROTOCOLS:
        raise FinecutError(f"--val-protocol {args.val_protocol!r}: one of {', '.join(PROTOCOLS)}")
    # the coarse protocol's masks come from one IoU band: the 0.75-0.80 level of the FocalClick-XL protocol
    band = {"coarse_band": (0.75, 0.80)} if args.val_protocol == "coarse" else {}
    eval_config = EvalConfig(protocol=args.val_protocol, **band)
    engine = finecut.load_model(checkpoint, **options)
    bank = load_or_build_bank(cfg, DistInfo(), progress=not args.no_progress)  # a fresh checkout builds the bank
    suffix = "".join(f"-{k}{v}" for k, v in sorted(options.items()))
    suffix += "" if args.val_protocol == "standard" else f"-{args.val_protocol}"
    suffix += f"-{'+'.join(args.val_sources)}" if args.val_sources else ""
    name = checkpoint_name(checkpoint)
    out = Path(cfg.run_dir) / "validation" / f"{name}{suffix}"
    result = evaluate_on_validation(engine, bank, cfg.data.val_fraction, args.val_count, out,
                                    model_name=format_model_spec(name, options), config=eval_config,
                                    progress=not args.no_progress, sources=args.val_sources)
    s = result.summary
    by_source = summaries_by_source(result.results, eval_config)
    if len(by_source) > 1:  # where a pooled score moved (or hid a move): one row per training set
        table = source_table(by_source)
        print(table, end="")
        if result.out_dir is not None:
            (result.out_dir / "by_source.json").write_text(json.dumps(by_source, indent=2) + "\n")
            (result.out_dir / "by_source.md").write_text(table)
    miou = s.get("miou") or []
    print(f"validation ({s['num_samples']} objects, {args.val_protocol} protocol): NoC85 {s['noc'].get('85')}, "
          f"NoC90 {s['noc'].get('90')}, mIoU@1 {miou[0] if miou else '-'}, "
          f"mIoU@5 {miou[4] if len(miou) > 4 else '-'} -> {out}")
    return 0
