"""``finecut evaluate``: run the standard (RITM) protocol for several models on several datasets.

Each (model, dataset) pair gets a run folder ``OUT/<model>-<dataset>/`` with ``config.json``, ``samples.jsonl``,
``summary.json``, ``summary.md`` and ``miou.png``; ``--table`` merges every summary under ``OUT`` into one Markdown
comparison table.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from finecut.errors import FinecutError
from finecut.evaluation.config import EvalConfig
from finecut.evaluation.init_masks import InitMaskFolder
from finecut.evaluation.report import write_results_table
from finecut.evaluation.runner import check_run_dir, run_evaluation
from finecut.evaluation.summary import miou_at
from finecut.registry import load_model, parse_model_spec

NAME = "evaluate"
HELP = "Evaluate models on benchmarks or your own images + masks under the standard click protocol."

EXAMPLES = """\
examples:
  finecut evaluate --model grabcut random_walker geodesic --dataset GrabCut Berkeley DAVIS \\
      --out results --table results/RESULTS.md
  finecut evaluate --model grabcut --dataset path/to/images --masks path/to/masks --out runs/mine
  finecut evaluate --model grabcut --dataset path/to/folder            (images/ + masks/ inside, autodetected)
  finecut evaluate --table results/RESULTS.md --out results           (only rebuild the table)"""


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
    parser.add_argument("--protocol", choices=("standard", "ntclick"), default="standard",
                        help="click simulation: standard (RITM) or ntclick (clicks that land in the GT uncertain band "
                             "become tolerant clicks at a seeded random offset)")
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


def open_dataset_arg(spec: str, data_root: str | None, masks: str | None) -> Any:
    """A ``--dataset`` value (a benchmark name or a folder) -> dataset, through :func:`finecut.datasets.open_dataset`."""
    from finecut.datasets import open_dataset

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

    noc, nof = summary["noc"], summary["nof"]
    parts = [f"NoC85 {f(noc.get('85'))}", f"NoC90 {f(noc.get('90'))}", f"NoF90 {nof.get('90', '–')}"]
    if summary.get("miou"):
        parts += [f"mIoU@{k} {f(miou_at(summary, k), 100)}" for k in (1, 5, 10)]
    parts.append(f"{f(summary.get('seconds_per_click'), digits=3)} s/click")
    if summary.get("click_violations") is not None:
        parts.append(f"{summary['click_violations']} clicks not honoured")
    where = f" -> {out_dir}" if out_dir is not None else ""
    n = summary["num_samples"]
    print(f"{summary['model']} / {summary['dataset']} ({n} sample{'' if n == 1 else 's'}): "
          + ", ".join(parts) + where)


def run_folder_name(model: str, dataset: str, config: EvalConfig, several_seeds: bool = False) -> str:
    """``MODEL-DATASET`` for a standard run; the protocol and the seed are appended when they vary
    (``MODEL-DATASET-ntclick-s3``); ``-raw`` marks runs without the click-honour rule."""
    name = f"{slug(model)}-{slug(dataset)}"
    if config.protocol != "standard":
        name += f"-{config.protocol}"
    if several_seeds or config.seed != 0:
        name += f"-s{config.seed}"
    if not config.honour_clicks:
        name += "-raw"
    return name


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
    configs = [
        EvalConfig(
            max_clicks=args.max_clicks,
            threshold=args.threshold,
            target_iou=args.target_iou,
            mask_correction=bool(args.init_masks or args.mask_correction),
            seed=seed,
            limit=args.limit,
            protocol=args.protocol,
            tolerant_offset=args.tolerant_offset,
            honour_clicks=not args.raw_masks,
        )
        for seed in seeds
    ]
    init_masks = InitMaskFolder(args.init_masks) if args.init_masks else None
    # Open every dataset and build every model first, so a bad name or folder fails before hours of work.
    datasets = [open_dataset_arg(spec, args.data_root, args.masks) for spec in args.dataset]
    model_specs = args.model or ["default"]
    engines = [(spec, load_model(spec)) for spec in model_specs]
    runs = [(spec, engine, dataset, config) for spec, engine in engines for dataset in datasets for config in configs]
    folders = [out_root / run_folder_name(_model_label(spec), dataset.name, config, len(seeds) > 1)
               for spec, _, dataset, config in runs]
    if len(set(folders)) != len(folders):
        raise FinecutError("two runs would share a folder: give each --model and --dataset only once")
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
            init_masks=init_masks,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
        _print_summary(result.summary, out_dir)
    if args.table:
        table = write_results_table(args.table, root=out_root)
        print(f"wrote {table}")
    return 0
