"""``finecut evaluate``: run the evaluation protocols for several models on several datasets.

Each (model, dataset, protocol variant) gets a run folder ``OUT/<model>-<dataset>[-<protocol>...]/`` with
``config.json``, ``samples.jsonl``, ``summary.json``, ``summary.md`` and ``miou.png``; ``--table`` merges every summary
under ``OUT`` into one Markdown comparison table, with a section per protocol.

Protocols (``--protocol``, several allowed): ``standard`` and ``ntclick`` clicks; FocalClick-XL's ``scribble`` (NoS,
``--scribble-first``), ``box`` (mIoU, ``--box-jitter``), ``coarse`` (coarse vs refined mIoU, ``--coarse-levels``) and
``correction`` (DAVIS-585-style initial masks, NoC with / without Progressive Merge, ``--merge``, ``--init-band``).
``--alpha`` reads each ``--dataset`` folder as an alpha set and scores the last prediction with SAD / MSE / Grad.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from finecut.errors import FinecutError
from finecut.engines.base import Engine
from finecut.evaluation.config import COARSE_LEVELS, DEFAULT_INIT_BAND, PROTOCOLS, EvalConfig
from finecut.evaluation.init_masks import InitMaskFolder
from finecut.evaluation.report import write_results_table
from finecut.evaluation.runner import check_run_dir, run_evaluation
from finecut.evaluation.summary import miou_at
from finecut.registry import load_model, parse_model_spec

NAME = "evaluate"
HELP = ("Evaluate models on benchmarks or your own images + masks: click, scribble, box, coarse-mask and "
        "mask-correction protocols.")

EXAMPLES = """\
examples:
  finecut evaluate --model grabcut random_walker geodesic --dataset GrabCut Berkeley DAVIS \\
      --out results --table results/RESULTS.md
  finecut evaluate --model grabcut --dataset path/to/images --masks path/to/masks --out runs/mine
  finecut evaluate --model grabcut --dataset path/to/folder            (images/ + masks/ inside, autodetected)
  finecut evaluate --table results/RESULTS.md --out results           (only rebuild the table)
  finecut evaluate --model default grabcut --dataset GrabCut --protocol scribble box coarse correction \\
      --scribble-first simulated 1 --limit 3 --out runs/xl --table runs/xl/RESULTS.md
  finecut evaluate --model default --dataset path/to/alpha-set --alpha   (images/ + alphas/ inside)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    parser.add_argument("--model", nargs="+", default=None, metavar="NAME",
                        help="model names or checkpoint paths (default: default)")
    parser.add_argument("--dataset", nargs="+", default=None, metavar="NAME|DIR",
                        help="benchmark names (GrabCut, Berkeley, DAVIS, ...) or folders of images + masks")
    parser.add_argument("--data-root", metavar="DIR", help="folder holding the benchmarks (default: the datasets' "
                        "default data root)")
    parser.add_argument("--masks", metavar="DIR", help="masks folder for a --dataset given as a folder of images")
    parser.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N samples of each dataset")
    parser.add_argument("--threshold", type=float, default=0.49, help="prediction threshold (default: %(default)s)")
    parser.add_argument("--max-clicks", type=int, default=20, help="clicks per sample (default: %(default)s)")
    parser.add_argument("--target-iou", type=float, metavar="T",
                        help="stop a sample once its IoU reaches T (faster; reports NoC up to T, no mIoU@k)")
    parser.add_argument("--seed", type=int, nargs="+", default=[0], metavar="SEED",
                        help="random seed, set before every sample (default: 0); several seeds give one run each, "
                             "reported as mean ± std (NTClick's robustness table)")
    parser.add_argument("--protocol", nargs="+", choices=PROTOCOLS, default=["standard"], metavar="NAME",
                        help="one or more of: standard (RITM clicks), ntclick (clicks that land in the GT uncertain "
                             "band become tolerant clicks at a seeded random offset), scribble (FocalClick-XL's "
                             "deterministic scribbles, NoS), box (one box, mIoU), coarse (one coarse mask per level, "
                             "coarse vs refined mIoU), correction (clicks from seeded DAVIS-585-style initial masks)")
    xl = parser.add_argument_group("FocalClick-XL protocols")
    xl.add_argument("--scribble-first", nargs="+", default=["simulated"], metavar="SET",
                    help="scribble protocol: where the first scribble comes from, one run each: simulated, or a human "
                         "scribble set (1 or 2: <dataset root>/../GrabCut-scribbles/scribbles-set-N; or a folder of "
                         "<name>-anno.png maps); the rest are simulated (default: simulated)")
    xl.add_argument("--scribble-width", type=float, default=5.0, metavar="PX",
                    help="width of simulated scribbles (default: %(default)s)")
    xl.add_argument("--box-jitter", type=float, nargs="+", default=[0.0, 0.1], metavar="F",
                    help="box protocol: one run per value; each side of the GT box moves by a seeded offset of up to F "
                         "times the box side (default: 0 0.1, the exact box and +-10%%)")
    xl.add_argument("--coarse-levels", type=int, nargs="+", default=list(range(1, len(COARSE_LEVELS) + 1)),
                    metavar="L", help="coarse protocol: levels to run, 1..5 = IoU bands " + ", ".join(
                        f"[{lo:g}, {hi:g}]" for lo, hi in COARSE_LEVELS) + " (default: all)")
    xl.add_argument("--init-band", type=float, nargs=2, default=list(DEFAULT_INIT_BAND), metavar=("LO", "HI"),
                    help="correction protocol: IoU band of the simulated initial masks (default: 0.75 0.85)")
    xl.add_argument("--merge", choices=("both", "on", "off"), default="both",
                    help="correction protocol: with the evaluator's Progressive Merge, without, or one run each "
                         "(default: both); an engine's own merge is switched off for these runs")
    xl.add_argument("--alpha", action="store_true",
                    help="read each --dataset folder as an alpha set (images/ + alphas/) and score SAD / MSE / Grad")
    parser.add_argument("--tolerant-offset", type=float, default=10.0, metavar="PX",
                        help="ntclick protocol: largest offset of a tolerant click from the precise one (default 10)")
    parser.add_argument("--raw-masks", action="store_true",
                        help="score the engines' masks without the click-honour rule (finecut.click_honour); "
                             "runs get a -raw suffix")
    parser.add_argument("--init-masks", metavar="DIR",
                        help="mask correction: start each sample from DIR/<sample name>.png instead of empty")
    parser.add_argument("--mask-correction", action="store_true",
                        help="mask correction from the initial masks the dataset itself provides")
    parser.add_argument("--out", default="runs/eval", metavar="DIR",
                        help="parent folder of the run folders (default: %(default)s)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue runs in --out, skipping finished samples")
    group.add_argument("--overwrite", action="store_true", help="replace earlier runs in --out")
    parser.add_argument("--table", metavar="FILE.md",
                        help="write a Markdown table merging every summary.json under --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def slug(text: str) -> str:
    """A file-name-safe form of a model or dataset name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_.") or "run"


def _model_label(spec: str) -> str:
    name, options = parse_model_spec(spec)
    if "checkpoint" in options:  # an official release: NAME:checkpoint=PATH -> NAME-FILESTEM
        return f"{name}-{Path(str(options['checkpoint'])).stem}"
    path = Path(spec)
    return path.stem if path.suffix in (".json", ".safetensors", ".pth", ".pt") else spec


def open_dataset_arg(spec: str, data_root: str | None, masks: str | None, alpha: bool = False) -> Any:
    """A ``--dataset`` value (a benchmark name or a folder) -> dataset, through :func:`finecut.datasets.open_dataset`;
    with ``alpha``, a folder read as an alpha set (:class:`finecut.evaluation.alpha.AlphaFolder`)."""
    from finecut.datasets import open_dataset

    if alpha:
        from finecut.evaluation.alpha import AlphaFolder

        if masks is not None:
            raise FinecutError("--alpha reads images/ and alphas/ inside the --dataset folder; drop --masks")
        return AlphaFolder(spec)

    opts: dict[str, Any] = {}
    if masks is not None:
        masks_dir = Path(masks)
        if not masks_dir.is_dir():
            raise FinecutError(f"{masks_dir}: masks folder not found")
        images_dir = Path(spec)
        if not images_dir.is_dir():
            raise FinecutError(f"{images_dir}: images folder not found (--masks needs --dataset to be a folder)")
        opts.update(kind="folder", images_dir=images_dir.resolve(), masks_dir=masks_dir.resolve())
    dataset = open_dataset(spec, root=data_root, **opts)
    if masks is not None:
        folder = Path(spec).resolve()
        generic = {"images", "image", "imgs", "img", "im", "rgb", "photos", "inputs", "input", "src", "data"}
        dataset.name = folder.parent.name if folder.name.lower() in generic and folder.parent.name else folder.name
    return dataset


def _print_summary(summary: dict[str, Any], out_dir: Path | None) -> None:
    def f(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
        return "–" if value is None else f"{scale * value:.{digits}f}"

    protocol = str(summary.get("protocol", "standard"))
    where = f" -> {out_dir}" if out_dir is not None else ""
    what = f"{summary['model']} / {summary['dataset']}" + ("" if protocol == "standard" else f" [{protocol}]")
    if summary.get("not_supported"):
        print(f"{what}: not supported ({summary['not_supported']}){where}")
        return
    noc, nof = summary["noc"], summary["nof"]
    unit = "NoS" if protocol == "scribble" else "NoC"
    parts = [f"{unit}85 {f(noc.get('85'))}", f"{unit}90 {f(noc.get('90'))}", f"NoF90 {nof.get('90', '–')}"]
    if summary.get("mean_init_iou") is not None:
        parts.insert(0, f"initial mIoU {f(summary['mean_init_iou'], 100)}")
    if protocol in ("box", "coarse"):
        parts = parts[:1] if protocol == "coarse" else []
        parts.append(f"mIoU {f(summary.get('final_miou'), 100)}")
    elif summary.get("miou"):
        parts += [f"mIoU@{k} {f(miou_at(summary, k), 100)}" for k in (1, 5, 10) if k <= len(summary["miou"])]
    if isinstance(summary.get("alpha"), dict):
        a = summary["alpha"]
        parts.append(f"alpha ({a['source']}) SAD {a['sad']:.3f} MSE {a['mse']:.5f} Grad {a['grad']:.3f}")
    parts.append(f"{f(summary.get('seconds_per_click'), digits=3)} s/step")
    if summary.get("click_violations") is not None and protocol in ("standard", "ntclick", "correction"):
        parts.append(f"{summary['click_violations']} clicks not honoured")
    n = summary["num_samples"]
    print(f"{what} ({n} sample{'' if n == 1 else 's'}): " + ", ".join(parts) + where)


def protocol_suffix(config: EvalConfig) -> str:
    """The run-folder suffix of a protocol variant: ``-scribble[-human-<set>]``, ``-box[-jitter10]``,
    ``-coarse-L2``, ``-correction-merge`` / ``-correction-nomerge``, ``-ntclick``; empty for the standard one."""
    p = config.protocol
    if p == "standard":
        return "-merge" if config.merge else ""
    if p == "scribble":
        return "-scribble" + (f"-human-{slug(Path(config.scribble_start).name)}" if config.scribble_start else "")
    if p == "box":
        return "-box" + (f"-jitter{format(round(config.box_jitter * 100, 4), 'g')}" if config.box_jitter else "")
    if p == "coarse":
        band = tuple(config.coarse_band or ())
        levels = [tuple(level) for level in COARSE_LEVELS]
        return "-coarse-" + (f"L{levels.index(band) + 1}" if band in levels else "-".join(f"{v:g}" for v in band))
    if p == "correction":
        return "-correction-" + ("merge" if config.merge else "nomerge")
    return f"-{p}"


def run_folder_name(model: str, dataset: str, config: EvalConfig, several_seeds: bool = False) -> str:
    """``MODEL-DATASET`` for a standard run; the protocol and the seed are appended when they vary
    (``MODEL-DATASET-ntclick-s3``, ``MODEL-DATASET-coarse-L2``); ``-raw`` marks runs without the click-honour rule."""
    name = f"{slug(model)}-{slug(dataset)}" + protocol_suffix(config)
    if several_seeds or config.seed != 0:
        name += f"-s{config.seed}"
    if not config.honour_clicks:
        name += "-raw"
    return name


def human_scribble_folder(value: str, dataset: Any) -> str | None:
    """A ``--scribble-first`` value -> the folder of human scribbles (None for ``simulated``): ``1`` / ``2`` name
    GrabCut-scribbles' sets beside the dataset's own folder, anything else is a folder path."""
    if value.lower() in ("simulated", "sim", "none"):
        return None
    if value.isdigit():
        root = getattr(dataset, "root", None)
        if root is None:
            raise FinecutError(f"--scribble-first {value}: dataset {dataset.name} has no folder to find the sets by")
        folder = Path(root).parent / "GrabCut-scribbles" / f"scribbles-set-{value}"
    else:
        folder = Path(value)
    if not folder.is_dir():
        raise FinecutError(f"--scribble-first {value}: human scribble folder {folder} not found")
    return str(folder.resolve())


def _check_human(folder: str, dataset: Any, limit: int | None) -> None:
    """Fail before any work when a sample to evaluate has no human scribbles in ``folder``."""
    from finecut.evaluation.scribbles import HumanScribbles

    human = HumanScribbles(folder)
    refs = getattr(dataset, "refs", None)
    if refs is None:
        return
    names = [str(r.name) for r in list(refs)[: limit or None]]
    missing = [n for n in names if not human.has(n)]
    if missing:
        raise FinecutError(f"{folder}: no human scribbles for {len(missing)} sample(s) of {dataset.name}, e.g. "
                           f"{missing[0]!r} (human scribble sets exist for GrabCut only)")


def protocol_configs(args: argparse.Namespace, protocols: list[str], seed: int, dataset: Any) -> list[EvalConfig]:
    """Every run configuration of one seed on one dataset: one per protocol variant."""
    common = dict(max_clicks=args.max_clicks, threshold=args.threshold, seed=seed, limit=args.limit,
                  honour_clicks=not args.raw_masks)
    corrected = bool(args.init_masks or args.mask_correction)
    out: list[EvalConfig] = []
    for protocol in protocols:
        if protocol in ("standard", "ntclick"):
            out.append(EvalConfig(**common, protocol=protocol, target_iou=args.target_iou,
                                  mask_correction=corrected, tolerant_offset=args.tolerant_offset))
        elif protocol == "scribble":
            for first in dict.fromkeys(args.scribble_first):
                folder = human_scribble_folder(first, dataset)
                if folder is not None:
                    _check_human(folder, dataset, args.limit)
                out.append(EvalConfig(**common, protocol=protocol, target_iou=args.target_iou,
                                      mask_correction=corrected, scribble_width=args.scribble_width,
                                      scribble_start=folder))
        elif protocol == "box":
            out += [EvalConfig(**common, protocol=protocol, box_jitter=j) for j in dict.fromkeys(args.box_jitter)]
        elif protocol == "coarse":
            out += [EvalConfig(**common, protocol=protocol, coarse_band=COARSE_LEVELS[level - 1])
                    for level in dict.fromkeys(args.coarse_levels)]
        elif protocol == "correction":
            merges = {"both": (False, True), "on": (True,), "off": (False,)}[args.merge]
            out += [EvalConfig(**common, protocol=protocol, target_iou=args.target_iou, merge=m,
                               init_band=tuple(args.init_band)) for m in merges]
    return out


_NO_MERGE: dict[str, Engine] = {}


def without_engine_merge(spec: str, engine: Engine) -> Engine:
    """The engine with its own Progressive Merge switched off (``progressive_merge=False``), when it has one (the
    correction protocol compares the evaluator's merge on and off, the same for every engine)."""
    pipeline = engine.config().get("pipeline")
    if not isinstance(pipeline, dict) or not pipeline.get("progressive_merge"):
        return engine
    if spec not in _NO_MERGE:
        _NO_MERGE[spec] = load_model(spec, progressive_merge=False)
    return _NO_MERGE[spec]


def run(args: argparse.Namespace) -> int:
    out_root = Path(args.out)
    if args.dataset is None:
        if args.table and args.model is None:
            table = write_results_table(args.table, root=out_root)
            print(f"wrote {table}")
            return 0
        raise FinecutError("give --dataset (benchmark names or folders), or only --table to rebuild the table")
    if args.init_masks and args.mask_correction:
        raise FinecutError("--init-masks already turns on mask correction; drop --mask-correction")
    if args.masks and len(args.dataset) != 1:
        raise FinecutError("--masks goes with exactly one --dataset folder")
    seeds = list(dict.fromkeys(args.seed))
    protocols = list(dict.fromkeys(args.protocol))
    for level in args.coarse_levels:
        if not 1 <= level <= len(COARSE_LEVELS):
            raise FinecutError(f"--coarse-levels: level {level} does not exist (1..{len(COARSE_LEVELS)})")
    init_masks = InitMaskFolder(args.init_masks) if args.init_masks else None
    # Open every dataset and build every model first, so a bad name or folder fails before hours of work.
    datasets = [open_dataset_arg(spec, args.data_root, args.masks, alpha=args.alpha) for spec in args.dataset]
    model_specs = args.model or ["default"]
    engines = [(spec, load_model(spec)) for spec in model_specs]
    runs = []
    for spec, engine in engines:
        for dataset in datasets:
            for seed in seeds:
                for config in protocol_configs(args, protocols, seed, dataset):
                    if config.protocol == "correction":
                        engine_for = without_engine_merge(spec, engine)
                    else:
                        engine_for = engine
                    runs.append((spec, engine_for, dataset, config))
    folders = [out_root / run_folder_name(_model_label(spec), dataset.name, config, len(seeds) > 1)
               for spec, _, dataset, config in runs]
    if len(set(folders)) != len(folders):
        raise FinecutError("two runs would share a folder: give each --model, --dataset and variant only once")
    for folder in folders:
        check_run_dir(folder, args.resume, args.overwrite)
    for (spec, engine, dataset, config), out_dir in zip(runs, folders):
        label = _model_label(spec)
        result = run_evaluation(
            engine,
            dataset,
            out_dir,
            config,
            model_name=label,
            dataset_name=dataset.name,
            dataset_root=getattr(dataset, "root", None),
            init_masks=init_masks if config.protocol not in ("box", "coarse") else None,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
        _print_summary(result.summary, out_dir)
    if args.table:
        table = write_results_table(args.table, root=out_root)
        print(f"wrote {table}")
    return 0
