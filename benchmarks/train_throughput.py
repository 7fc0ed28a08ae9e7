"""Training throughput (samples/s) of a training config under several settings, side by side.

Each setting runs the real trainer (:func:`finecut.training.trainer.train`, temporary run_dir, ``steps = warmup +
timed``) in a fresh subprocess — one process, or ``torchrun --standalone --nproc_per_node 2`` (gloo DDP) — and the time
of every optimizer step is taken with a global optimizer step hook, so the timed window covers exactly the training
steps after the warm-up (batch sampling, iterative-click passes, forward/backward, DDP all-reduce, Adam) and nothing
else (no bank loading, model building or checkpoint writing).

Settings vary one lever at a time from today's recipe (2 processes x 1 thread, the config's full crop and refiner
crop, batches drawn in the training process, channels_last): a small crop, a small crop with the refiner's focus crop
scaled down with it, the smaller refiner crop alone, a batch-prefetching worker process, NCHW instead of
channels_last, torch.compile, one process x 2 threads with the same samples per step (no DDP all-reduce, no second
copy of the bank), no iterative clicks; then the new recipe's two stages as the config sets them. The
whole-schedule rate of the new recipe weights its stages by the config's step counts.

    python3 benchmarks/train_throughput.py --config configs/focalclick-lite0-v2.toml --steps 15 --warmup 3
    python3 benchmarks/train_throughput.py --only today --steps 2 --warmup 1 --out /tmp/tt.md   # smoke test

Writes a Markdown table (with machine info and load averages) to ``--out`` (default
``results/train_throughput.md``) and prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Setting:
    name: str
    processes: int
    threads: int
    size: int
    iterative: bool = True
    prefetch: int = 0
    channels_last: bool = True
    compile: bool = False
    batch: int = 0  # per process; 0: the config's
    refiner: int = 0  # the refiner's focus-crop side; 0: the config's refiner_size

    def describe(self) -> str:
        parts = [f"{self.processes} proc x {self.threads} thr"] + ([f"batch {self.batch}"] if self.batch else [])
        parts += [f"crop {self.size}"] + ([f"refiner crop {self.refiner}"] if self.refiner else []) + [
                 f"iterative {'on' if self.iterative else 'off'}", f"prefetch {self.prefetch}",
                 "channels_last" if self.channels_last else "NCHW"]
        return ", ".join(parts + (["torch.compile"] if self.compile else []))


def default_settings(base_size: int, small_size: int, batch: int, refiner_size: int, small_refiner: int,
                     prefetch: int) -> list[Setting]:
    """Today's recipe (2 processes x 1 thread, full crop, the config's refiner crop, in-process sampling), each lever
    alone, and the new recipe's two stages as the config sets them (small crop with its refiner crop; full crop),
    both 2 processes x 1 thread."""
    one = dict(processes=1, threads=2, batch=2 * batch)
    scaled = max(8, round(refiner_size * 128 / base_size / 8) * 8)  # the refiner crop scaled with a 128 px crop
    settings = [
        Setting("today", 2, 1, base_size),
        Setting(f"small{small_size}", 2, 1, small_size),
        Setting("small128", 2, 1, 128),
        Setting(f"small128-refiner{scaled}", 2, 1, 128, refiner=scaled),
        Setting(f"refiner{scaled}", 2, 1, base_size, refiner=scaled),
        Setting("prefetch", 2, 1, base_size, prefetch=2),
        Setting("nchw", 2, 1, base_size, channels_last=False),
        Setting("compile", 2, 1, base_size, compile=True),
        Setting("one-process", size=base_size, **one),
        Setting("no-iterative", 2, 1, base_size, iterative=False),
        Setting("new-small", 2, 1, small_size, prefetch=prefetch, refiner=small_refiner),
        Setting("new-full", 2, 1, base_size, prefetch=prefetch),
    ]
    unique: dict[str, Setting] = {}
    for setting in settings:  # small{small_size} may be small128
        unique.setdefault(setting.name, setting)
    return list(unique.values())


# ----------------------------------------------------------------------------------------------------------- worker


def run_worker(args: argparse.Namespace) -> None:
    """One setting inside its own process (or torchrun group): train warmup + steps with the real trainer."""
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from finecut.training.config import TrainConfig
    from finecut.training.trainer import train

    cfg = TrainConfig.from_file(args.config)
    cfg.data.bank = args.bank or cfg.data.bank
    cfg.size = args.size
    cfg.batch_size = args.batch or cfg.batch_size
    fc = cfg.focalclick  # the [focalclick] options (the benchmarked configs are FocalClick-method configs)
    fc.small_size = 0  # one fixed crop size per setting
    fc.refiner_size = args.refiner or fc.refiner_size
    cfg.threads = args.threads
    fc.prefetch = args.prefetch
    fc.channels_last = not args.nchw
    fc.compile = args.compile
    cfg.init_checkpoint = ""
    if not args.iterative:
        cfg.iterative_probability = 0.0
    cfg.steps = args.warmup + args.steps
    huge = 10**9
    cfg.log_every, cfg.val_every, cfg.checkpoint_every = huge, huge, huge
    cfg.run_dir = args.run_dir
    cfg.pretrained = "none"  # init does not change the speed; avoids needing backbone weights

    stamps: list[float] = []

    def hook(optimizer: Any, fargs: Any, fkwargs: Any) -> None:
        stamps.append(time.perf_counter())

    handle = register_optimizer_step_post_hook(hook)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        t0 = time.perf_counter()
        train(cfg, progress=False)
        total = time.perf_counter() - t0
    finally:
        handle.remove()
    if rank != 0:
        return
    if len(stamps) < args.warmup + args.steps:
        raise SystemExit(f"expected {args.warmup + args.steps} optimizer steps, saw {len(stamps)}")
    start = stamps[args.warmup - 1] if args.warmup > 0 else t0
    timed = stamps[args.warmup + args.steps - 1] - start
    samples = args.steps * cfg.batch_size * world
    result = {"seconds": timed, "steps": args.steps, "samples": samples, "samples_per_s": samples / timed,
              "seconds_per_step": timed / args.steps, "batch_per_process": cfg.batch_size, "world": world,
              "torch_threads": torch.get_num_threads(), "wall_seconds": total}
    Path(args.result).write_text(json.dumps(result) + "\n")


# ----------------------------------------------------------------------------------------------------------- driver


def machine_info() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def run_setting(setting: Setting, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="finecut-tt-") as tmp:
        result_path = Path(tmp) / "result.json"
        worker = [str(Path(__file__).resolve()), "--worker", "--config", args.config, "--size", str(setting.size),
                  "--threads", str(setting.threads), "--steps", str(args.steps), "--warmup", str(args.warmup),
                  "--run-dir", str(Path(tmp) / "run"), "--result", str(result_path)]
        if args.bank:
            worker += ["--bank", args.bank]
        if not setting.iterative:
            worker.append("--no-iterative")
        worker += ["--prefetch", str(setting.prefetch)] + ([] if setting.channels_last else ["--nchw"])
        worker += ["--compile"] if setting.compile else []
        worker += ["--batch", str(setting.batch)] if setting.batch else []
        worker += ["--refiner", str(setting.refiner)] if setting.refiner else []
        if setting.processes > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node", str(setting.processes)] + worker
        else:
            cmd = [sys.executable] + worker
        env = dict(os.environ, OMP_NUM_THREADS=str(setting.threads), MKL_NUM_THREADS=str(setting.threads))
        load = os.getloadavg()[0]
        t0 = time.time()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {args.timeout} s", "load_start": load}
        if proc.returncode != 0 or not result_path.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"error": f"exit {proc.returncode}: {' / '.join(tail)}", "load_start": load}
        out = json.loads(result_path.read_text())
        out["load_start"] = load
        out["load_end"] = os.getloadavg()[0]
        out["process_seconds"] = time.time() - t0
        return out


def median_trial(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The trial with the median samples/s (the lower middle one for an even count), with every trial's rate in
    ``all_samples_per_s``; the first error when no trial succeeded."""
    good = sorted((t for t in trials if "samples_per_s" in t), key=lambda t: t["samples_per_s"])
    if not good:
        return trials[0]
    return {**good[(len(good) - 1) // 2], "all_samples_per_s": [round(t["samples_per_s"], 2) for t in trials
                                                               if "samples_per_s" in t]}


def recipe_rate(rows: dict[str, dict[str, Any]], cfg: Any, share: float | None = None) -> float | None:
    """Samples/s of the config's whole schedule: its small-crop steps at ``new-small``'s rate, the rest at
    ``new-full``'s (total samples / total time); ``share`` replaces the config's share of small-crop steps."""
    small, full = rows.get("new-small", {}), rows.get("new-full", {})
    if "samples_per_s" not in small or "samples_per_s" not in full:
        return None
    if share is None:
        fc = cfg.focalclick
        share = (min(fc.full_size_from, cfg.steps) / cfg.steps) if fc.small_size else 0.0
    return 1.0 / (share / small["samples_per_s"] + (1.0 - share) / full["samples_per_s"])


def render(rows: list[tuple[Setting, dict[str, Any]]], info: dict[str, Any], args: argparse.Namespace,
           load_before: Sequence[float], load_after: Sequence[float], cfg: Any, command: str) -> str:
    by_name = {s.name: r for s, r in rows}
    base = by_name.get("today", {}).get("samples_per_s")
    lines = ["# Training throughput", "",
             (f"Config `{args.config}`; {args.steps} timed steps after {args.warmup} warm-up step(s) per setting, "
             "each setting in a fresh process (group) running the real trainer "
             "(`finecut.training.trainer.train`); samples/s counts all processes. \"today\" is the recipe the "
             "shipped default was trained with, run as 2 processes x 1 thread; each lever below changes one thing "
             "from it; new-small / new-full are the new recipe's two stages."
             + (f" Every setting ran {args.repeat} times, the settings taking turns (round-robin); each row is the "
                "run with the median samples/s, and the last column lists every run's rate." if args.repeat > 1
                else "")), "",
             (f"* Machine: {info['host']}, {info['cpu']}, {info['cores']} logical cores; Python {info['python']}, "
             f"torch {info['torch']}"),
             f"* Date: {info['date']}",
             "* Load average (1/5/15 min) before: " + " / ".join(f"{v:.2f}" for v in load_before)
             + "; after: " + " / ".join(f"{v:.2f}" for v in load_after),
             f"* Command: `{command}`", "",
             ("| setting | what changes | s/step | samples/s | x today | load (1 min) at start "
              "| samples/s of each run |"),
             "|---|---|---|---|---|---|---|"]
    for s, r in rows:
        head = f"| {s.name} | {s.describe()} | "
        if "error" in r:
            lines.append(head + f"– | failed: {r['error']} | – | {r['load_start']:.2f} | – |")
        else:
            ratio = f"{r['samples_per_s'] / base:.2f}" if base else "–"
            every = ", ".join(f"{v:.2f}" for v in r.get("all_samples_per_s", [r["samples_per_s"]]))
            lines.append(head + f"{r['seconds_per_step']:.3f} | {r['samples_per_s']:.2f} | {ratio} "
                         f"| {r['load_start']:.2f} | {every} |")
    rate = recipe_rate(by_name, cfg)
    if rate is not None:
        fc = cfg.focalclick
        share = (min(fc.full_size_from, cfg.steps) / cfg.steps) if fc.small_size else 0.0
        lines += ["", (f"New recipe over its whole schedule ({share:.0%} of {cfg.steps} steps at crop "
                       f"{fc.small_size}, the rest at {cfg.size}): **{rate:.2f} samples/s**"
                       + (f", **{rate / base:.2f}x** today's recipe." if base else "."))]
        if base:
            shares = (0.8, 0.85, 0.9, 0.95, 1.0)
            lines += ["", "The same schedule with another share of its steps in the small stage:", "",
                      "| small-stage share | " + " | ".join(f"{v:.0%}" for v in shares) + " |",
                      "|---|" + "---|" * len(shares),
                      "| x today | " + " | ".join(f"{recipe_rate(by_name, cfg, v) / base:.2f}" for v in shares) + " |"]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/focalclick-lite0-v2.toml")
    parser.add_argument("--bank", default=None, help="object bank (default: the config's [data].bank)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--only", default=None, help="comma-separated setting names to run (e.g. base,ddp2)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per setting")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds over all settings (round-robin); the table gives each setting's median")
    parser.add_argument("--out", default="results/train_throughput.md")
    parser.add_argument("--json", default=None, help="also write the raw results as JSON")
    parser.add_argument("--render", metavar="JSON", default=None,
                        help="only write the table again from an earlier run's --json, with --config's schedule")
    # worker mode (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=224, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--no-iterative", dest="iterative", action="store_false", help=argparse.SUPPRESS)
    parser.add_argument("--prefetch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--nchw", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--refiner", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args)
        return 0
    if args.steps < 1 or args.warmup < 0 or args.repeat < 1:
        parser.error("--steps and --repeat must be >= 1 and --warmup >= 0")

    from finecut.training.config import TrainConfig

    cfg = TrainConfig.from_file(args.config)
    batch = cfg.batch_size // 2 if cfg.threads > 1 else cfg.batch_size  # today's per-process batch
    fc = cfg.focalclick
    settings = default_settings(cfg.size, fc.small_size or 160, batch, fc.refiner_size, fc.small_refiner_size,
                                fc.prefetch)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - {s.name for s in settings})
        if unknown:
            parser.error(f"unknown setting(s) {unknown}; known: {', '.join(s.name for s in settings)}")
        settings = [s for s in settings if s.name in wanted]

    if args.render:
        saved = json.loads(Path(args.render).read_text())
        fields = {f.name for f in dataclasses.fields(Setting)}
        rows = [(Setting(**{k: v for k, v in r.items() if k in fields}),
                 {k: v for k, v in r.items() if k not in fields}) for r in saved["runs"]]
        for key in ("steps", "warmup", "repeat"):
            setattr(args, key, saved["args"][key])
        args.config = saved["args"]["config"]
        text = render(rows, saved["machine"], args, saved["load_before"], saved["load_after"], cfg, saved["command"])
        Path(args.out).write_text(text)
        print(text)
        return 0

    bank = Path(args.bank or cfg.data.bank)
    if not bank.exists():
        parser.error(f"{bank}: object bank not found (pass --bank; the benchmark does not build one)")
    info = machine_info()
    load_before = os.getloadavg()
    trials: dict[str, list[dict[str, Any]]] = {s.name: [] for s in settings}
    for round_ in range(args.repeat):  # round-robin, so slow phases of a shared machine hit every setting alike
        for setting in settings:
            print(f"[{setting.name}] (round {round_ + 1}/{args.repeat}) {setting.describe()} ...", flush=True)
            result = run_setting(setting, args)
            summary = result["error"] if "error" in result else f"{result['samples_per_s']:.2f} samples/s"
            print(f"  -> {summary}", flush=True)
            trials[setting.name].append(result)
    rows = [(setting, median_trial(trials[setting.name])) for setting in settings]
    load_after = os.getloadavg()
    command = " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    text = render(rows, info, args, load_before, load_after, cfg, command)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if args.json:
        saved = {"machine": info, "runs": [{**asdict(s), **r} for s, r in rows], "load_before": load_before,
                 "load_after": load_after, "command": command,
                 "args": {"steps": args.steps, "warmup": args.warmup, "repeat": args.repeat, "config": args.config}}
        Path(args.json).write_text(json.dumps(saved, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
