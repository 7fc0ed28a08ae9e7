"""What a larger EfficientNet-Lite segmentor costs on this CPU: parameters, the segmentor's forward at inference size
and a training step (forward + backward) at the training recipe's small crop, for Lite0 / Lite1 / Lite2 backbones of
the same FocalClick network (random weights: the cost does not depend on them). The engines take turns run by run, so
load changes touch them alike. Cost only — which one learns more per CPU-hour needs equal-budget training runs.

    python benchmarks/backbone_cost.py --threads 1 --repeats 30

Writes ``--out`` (default ``results/backbone_cost.md``; and the same numbers as JSON beside it, which
``benchmarks/train_budget.py --backbones`` reads to plan each backbone's steps) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from finecut.models.focalclick import FocalClickNet

BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per backbone and measurement")
    parser.add_argument("--size", type=int, default=256, help="inference input side (the Target Crop's 256)")
    parser.add_argument("--train-size", type=int, default=160, help="training crop side (the recipe's small stage)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("results/backbone_cost.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    nets = {name: FocalClickNet(backbone=name) for name in BACKBONES}
    params = {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()}
    infer: dict[str, list[float]] = {name: [] for name in BACKBONES}
    train: dict[str, list[float]] = {name: [] for name in BACKBONES}
    image = torch.randn(1, 3, args.size, args.size)
    maps = torch.zeros(1, 4, args.size, args.size)
    batch = torch.randn(args.batch, 3, args.train_size, args.train_size)
    batch_maps = torch.zeros(args.batch, 4, args.train_size, args.train_size)
    for name, net in nets.items():  # warm-up
        with torch.no_grad():
            net.eval().segmentor(image, maps)
    for r in range(args.repeats):
        order = BACKBONES[r % 3:] + BACKBONES[:r % 3]
        for name in order:
            net = nets[name].eval()
            start = time.perf_counter()
            with torch.no_grad():
                net.segmentor(image, maps)
            infer[name].append(time.perf_counter() - start)
        if r % 3 == 0:  # fewer training steps: each takes a second or more
            for name in order:
                net = nets[name].train()
                start = time.perf_counter()
                net.segmentor(batch, batch_maps)["logits"].mean().backward()
                net.zero_grad(set_to_none=True)
                train[name].append(time.perf_counter() - start)
    lines = [
        "# Segmentor cost of larger EfficientNet-Lite backbones",
        "",
        f"Produced by `python benchmarks/backbone_cost.py --threads {args.threads} --repeats {args.repeats}`: the same "
        "FocalClick segmentor (FPN head, 64 channels, clicks fused after the stem) on each backbone, random weights. "
        f"Inference: one segmentor forward on a {args.size}² Target Crop (the default's input; a click also runs "
        f"the refiner, the same for every backbone). Training: forward + backward of the segmentor on a batch of "
        f"{args.batch} crops of {args.train_size}² (the recipe's small stage; the refiner's step is the same for "
        "every backbone). Medians; the backbones take turns.",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{args.threads} thread(s); {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at the end "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        "| backbone | parameters (whole network) | segmentor forward, median ms | vs Lite0 | training step, median s | "
        "training samples/s (segmentor only) | vs Lite0 |",
        "|---|---|---|---|---|---|---|",
    ]
    base_i, base_t = statistics.median(infer[BACKBONES[0]]), statistics.median(train[BACKBONES[0]])
    for name in BACKBONES:
        mi, mt = statistics.median(infer[name]), statistics.median(train[name])
        lines.append(f"| {name} | {params[name] / 1e6:.2f} M | {1000 * mi:.1f} | {mi / base_i:.2f}x | {mt:.2f} | "
                     f"{args.batch / mt:.1f} | {mt / base_t:.2f}x |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"backbones": [
        {"name": name, "parameters": params[name], "forward_s": statistics.median(infer[name]),
         "train_step_s": statistics.median(train[name]), "train_batch": args.batch, "train_size": args.train_size}
        for name in BACKBONES]}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
