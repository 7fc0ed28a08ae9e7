"""Two training recipes at an equal wall-clock budget from the same start: which one learns more per CPU-hour?

Runs the new recipe (``--config``) and today's — the same config with the new recipe's levers taken out: no
small-crop stage, no smaller refiner crop — side by side, at the same time, one process x 1 thread each (so both see
the same machine for the same minutes), each with the samples per step its recipe has (batch x processes) and a step count
set so that its learning-rate schedule ends inside the budget: steps come from the samples/s that
``benchmarks/train_throughput.py`` measured (``--rates``, its JSON; half of each 2-process rate, one core each), times
``--fill`` of the budget. ``--minutes`` is also a hard stop. Both start from the same weights (ImageNet backbones by
default, or each config's ``init_checkpoint`` with ``--warm``), the same seed and the same object bank, and are
then evaluated on the same held-out objects of that bank with the full inference pipeline (``finecut train
--validate``, standard protocol, 20 clicks). Training sets only.

    python3 benchmarks/train_budget.py --config configs/focalclick-lite0-v4.toml --lr 5e-4 \\
        --rates results/train_throughput.json --minutes 30

With ``--backbones A B`` the compared runs are instead the new recipe (``--config``) on each of those segmentor
backbones (e.g. ``efficientnet_lite0 efficientnet_lite2``: does a larger segmentor learn more per CPU-hour?), each
backbone's samples/s being the new recipe's rates divided by its training-step time relative to the config's own
backbone, from ``benchmarks/backbone_cost.py``'s JSON (``--cost``).

Writes ``--out`` (default ``results/train_budget.md``) and prints it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

RATE_KEYS = {"today": ("today", "today"), "new": ("new-small", "new-full")}


def rates_from(path: Path) -> dict[str, float]:
    """Samples/s by setting name from a ``train_throughput.py --json`` file."""
    runs = json.loads(path.read_text())["runs"]
    return {r["name"]: float(r["samples_per_s"]) for r in runs if "samples_per_s" in r}


def sizes_from(path: Path) -> dict[str, int]:
    """Training crop size by setting name from a ``train_throughput.py --json`` file."""
    return {r["name"]: int(r["size"]) for r in json.loads(path.read_text())["runs"] if "size" in r}


def at_size(rate: float, measured_size: int, size: int) -> float:
    """A samples/s measured at ``measured_size``² crops, carried to ``size``² crops by the pixel count (the step time
    of these convolutional nets grows about linearly with it): the small stage of a config need not be the size the
    throughput benchmark measured."""
    return rate * (measured_size / size) ** 2


def plan_steps(minutes: float, fill: float, samples_per_step: int, small_rate: float, full_rate: float,
               small_share: float) -> tuple[int, int]:
    """(steps, full_size_from) whose schedule takes ``fill`` of ``minutes`` at the given one-core samples/s: a
    ``small_share`` of the steps at ``small_rate``, the rest at ``full_rate``."""
    seconds = minutes * 60 * fill
    seconds_per_step = samples_per_step * (small_share / small_rate + (1 - small_share) / full_rate)
    steps = max(1, int(seconds / seconds_per_step))
    return steps, round(small_share * steps)


def backbone_step_seconds(path: Path) -> dict[str, float]:
    """Training-step time of each backbone in a ``backbone_cost.py`` JSON, by name."""
    return {b["name"]: float(b["train_step_s"]) for b in json.loads(path.read_text())["backbones"]}


def budget_config(raw: dict[str, Any], name: str, work: Path, steps: int, full_size_from: int, warm: bool,
                  samples_per_step: int, lr: float | None) -> Path:
    """A copy of the config ``raw`` for this comparison: one process x 1 thread with ``samples_per_step`` per step,
    ``steps`` steps (the small-crop stage until ``full_size_from``), no periodic validation, its own run folder;
    from ImageNet unless ``warm``; ``lr`` when given."""
    raw = copy.deepcopy(raw)
    raw.update(run_dir=str(work / name), steps=steps, batch_size=samples_per_step, threads=1,
               val_every=10**9, checkpoint_every=100, log_every=20)
    if lr is not None:
        raw["lr"] = lr
    raw["warmup_steps"] = min(int(raw.get("warmup_steps", 0)), max(1, steps // 10))
    if not warm:
        raw["init_checkpoint"] = ""
        raw["pretrained"] = "imagenet"
    fc = raw.setdefault("focalclick", {})
    if fc.get("small_size"):
        fc["full_size_from"] = full_size_from
    fc["prefetch"] = 0
    out = work / f"{name}.toml"
    out.write_text(to_toml(raw))
    return out


def to_toml(raw: dict[str, Any]) -> str:
    """The small TOML subset training configs use: scalars, lists, inline tables, one level of sections."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(f"cannot write {v!r} as TOML")

    top = [f"{k} = {value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    sections = [f"\n[{k}]\n" + "\n".join(f"{kk} = {value(vv)}" for kk, vv in v.items())
                for k, v in raw.items() if isinstance(v, dict)]
    return "\n".join(top) + "\n" + "\n".join(sections) + "\n"


def last_record(records: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The last of a run's ``log.jsonl`` records that has ``key``."""
    return next((r for r in reversed(records) if key in r), {})


def summary_of(run_dir: Path, sources: list[str] | None) -> dict[str, Any]:
    """The summary ``finecut train --validate RUN_DIR/last.json [--val-sources ...]`` wrote (its folder is named
    after the checkpoint and the sources, as ``finecut train`` names it)."""
    path = run_dir / "validation" / ("last" + (f"-{'+'.join(sources)}" if sources else "")) / "summary.json"
    if not path.exists():
        raise SystemExit(f"{path}: no validation summary")
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True,
                        help="the new recipe; today's is the same config without its small stage and refiner crop")
    parser.add_argument("--lr", type=float, default=None, help="learning rate of both runs (default: the config's)")
    parser.add_argument("--rates", type=Path, default=Path("results/train_throughput.json"),
                        help="train_throughput.py --json output (samples/s of today, new-small, new-full)")
    parser.add_argument("--minutes", type=float, default=40.0, help="wall-clock budget of each run")
    parser.add_argument("--fill", type=float, default=0.8, help="share of the budget the planned schedule takes")
    parser.add_argument("--warm", action="store_true", help="start from each config's init_checkpoint")
    parser.add_argument("--val-count", type=int, default=96, help="held-out objects for the final validation")
    parser.add_argument("--val-sources", nargs="+", default=None, metavar="SOURCE",
                        help="validate on the held-out objects of these training sets only (e.g. the whole-object "
                             "sets COCO128 ECSSD WeizmannHorse MSRA10K CCP-person)")
    parser.add_argument("--backbones", nargs="+", default=None, metavar="NAME",
                        help="compare the new recipe on these segmentor backbones instead of today's vs the new recipe")
    parser.add_argument("--cost", type=Path, default=Path("results/backbone_cost.json"),
                        help="benchmarks/backbone_cost.py's JSON (training-step time per backbone; with --backbones)")
    parser.add_argument("--work", type=Path, default=Path("runs/train-budget"), help="run folders")
    parser.add_argument("--out", type=Path, default=Path("results/train_budget.md"))
    args = parser.parse_args(argv)

    rates, sizes = rates_from(args.rates), sizes_from(args.rates)
    args.work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[str, Any]] = {}
    new_raw = tomllib.loads(args.config.read_text())
    arms: list[tuple[str, dict[str, Any], tuple[str, str], float]] = []
    if args.backbones:
        step_s = backbone_step_seconds(args.cost)
        own = new_raw.get("model", {}).get("backbone", "efficientnet_lite0")
        for backbone in args.backbones:
            raw = copy.deepcopy(new_raw)
            raw.setdefault("model", {})["backbone"] = backbone
            arms.append((backbone, raw, RATE_KEYS["new"], step_s[backbone] / step_s[own]))
    else:
        today_raw = copy.deepcopy(new_raw)
        for lever in ("small_size", "full_size_from", "small_refiner_size"):
            today_raw.get("focalclick", {}).pop(lever, None)
        arms = [("today", today_raw, RATE_KEYS["today"], 1.0), ("new", new_raw, RATE_KEYS["new"], 1.0)]
    for name, raw, (small_key, full_key), slowdown in arms:
        fc = raw.get("focalclick", {})
        processes = 2  # both recipes are 2 processes x 1 thread; here each runs as one process with both batches
        samples_per_step = int(raw.get("batch_size", 8)) * processes
        small_share = (fc.get("full_size_from", 0) / raw["steps"]) if fc.get("small_size") else 0.0
        small_rate = rates[small_key]
        if fc.get("small_size") and small_key in sizes:
            small_rate = at_size(small_rate, sizes[small_key], int(fc["small_size"]))
        steps, full_from = plan_steps(args.minutes, args.fill, samples_per_step,
                                      small_rate / processes / slowdown,
                                      rates[full_key] / processes / slowdown, small_share)
        config = budget_config(raw, name, args.work, steps, full_from, args.warm, samples_per_step, args.lr)
        runs[name] = {"config": config, "raw": tomllib.loads(config.read_text()), "steps": steps,
                      "full_size_from": full_from,
                      "samples_per_step": samples_per_step}
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load_before = os.getloadavg()
    procs = {}
    for name, r in runs.items():
        with open(args.work / f"{name}.err", "w") as err:  # the child keeps its own copy of the descriptor
            procs[name] = subprocess.Popen([sys.executable, "-m", "finecut.cli", "train", str(r["config"]),
                                            "--max-minutes", str(args.minutes), "--no-progress"], env=env,
                                           stdout=subprocess.DEVNULL, stderr=err)
    for name, proc in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"{name}: training failed (see {args.work / (name + '.err')})")
    load_after = os.getloadavg()
    for name, r in runs.items():
        run_dir = args.work / name
        records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
        progress, stop = last_record(records, "train_seconds"), last_record(records, "event")
        r.update(done_steps=stop.get("step"), stop=stop.get("event"), train_seconds=progress.get("train_seconds"))
        r["samples"] = (r["done_steps"] or 0) * r["samples_per_step"]
        subprocess.run([sys.executable, "-m", "finecut.cli", "train", str(r["config"]), "--validate",
                        str(run_dir / "last.json"), "--val-count", str(args.val_count), "--no-progress"]
                       + (["--val-sources", *args.val_sources] if args.val_sources else []),
                       env=dict(os.environ, OMP_NUM_THREADS="2"), check=True)
        r["validation"] = summary_of(run_dir, args.val_sources)
    text = render(runs, args, rates, started, load_before, load_after)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


def render(runs: dict[str, dict[str, Any]], args: argparse.Namespace, rates: dict[str, float], started: str,
           load_before: tuple[float, ...], load_after: tuple[float, ...]) -> str:
    start = "each config's init_checkpoint" if args.warm else "ImageNet backbones, every other weight at init"
    what = (f"The recipe of `{args.config}` on the segmentor backbones {', '.join(args.backbones)} (steps planned "
            f"from each backbone's training-step time in `{args.cost}`)" if args.backbones else
            f"The new recipe (`{args.config}`) and today's (the same config without its small-crop stage and "
            "smaller refiner crop)")
    objects = f" ({' '.join(args.val_sources)} only)" if args.val_sources else ""
    lines = ["# Training " + ("backbones" if args.backbones else "recipes") + " at an equal wall-clock budget", "",
             (f"{what}, run at the same time for **{args.minutes:g} minutes** each, one process x 1 thread each, "
              f"from the same start ({start}), the same seed, learning rate and object bank. Each run's step count was "
              f"set from the samples/s in `{args.rates}` (half of each 2-process rate) so that its learning-rate "
              f"schedule ends within {args.fill:.0%} of the budget; the budget is also a hard stop. Then both were "
              f"validated on the same {args.val_count} held-out objects of the bank{objects} with the full inference "
              "pipeline (`finecut train --validate`, standard protocol, 20 clicks). Training sets only."), "",
             f"* Machine: {platform.node()}, {os.cpu_count()} logical cores; Python {platform.python_version()}",
             f"* Started: {started}; load average (1/5/15 min) before: "
             + " / ".join(f"{v:.2f}" for v in load_before) + "; after: " + " / ".join(f"{v:.2f}" for v in load_after),
             f"* Command: `{' '.join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])}`", "",
             (f"| {'backbone' if args.backbones else 'recipe'} | crop schedule | planned steps | steps done | stopped by "
              "| samples | training s | samples/s | mIoU@1 | mIoU@5 | NoC85 | NoC90 |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        raw = r["raw"]
        fc = raw.get("focalclick", {})
        crop = (f"{fc['small_size']} (refiner {fc.get('small_refiner_size') or fc.get('refiner_size', 96)}) until "
                f"step {fc['full_size_from']}, then {raw['size']}" if fc.get("small_size") else f"{raw['size']}")
        s = r["validation"]
        miou = s.get("miou") or []
        sps = r["samples"] / r["train_seconds"] if r.get("train_seconds") else float("nan")
        lines.append(f"| {name} | {crop} | {r['steps']} | {r['done_steps']} | {r['stop']} | {r['samples']} | "
                     f"{r['train_seconds'] or 0:.0f} | {sps:.2f} | {100 * miou[0]:.1f} | {100 * miou[4]:.1f} | "
                     f"{s['noc'].get('85'):.2f} | {s['noc'].get('90'):.2f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
