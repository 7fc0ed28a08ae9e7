"""FocalClick-XL networks: parameter counts and CPU forward time of one interaction at 854x480 (a DAVIS frame).

Progressive magnification as the pipeline runs it: the Context-Net once per image (the whole frame resized so its
longest side is the encoder's ``input_size``: 512 for the shipped Lite0 encoder, 1024 padded square for SAM ViT-B),
then per interaction the Object-Net on a 256 x 256 object patch (with the RoIAligned context) and the Detail-Net on a
batch of 64 x 64 detail patches. Weights are random (time does not depend on them); inputs are random tensors.

    python benchmarks/xl_forward.py --threads 1 --repeats 7 [--sam] [--detail-patches 16]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from finecut.models.focalclick_xl import context_input_geometry, parameter_table
from finecut.models.registry import build_model


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, float]:
    """(median, min) seconds of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def bench(config: dict, label: str, repeats: int, detail_patches: int, height: int = 480, width: int = 854) -> None:
    torch.manual_seed(0)
    net = build_model(config).eval()
    table = parameter_table(net)
    print(f"\n## {label}\n")
    print("| part | parameters |")
    print("|---|---:|")
    for name, count in table.items():
        print(f"| {name} | {count / 1e6:.3f} M |" if count >= 1e5 else f"| {name} | {count:,} |")
    print(f"\nprompting layer per form: {net.prompting_bytes('clicks') / 1024:.1f} KiB (float32)")
    geo = context_input_geometry(height, width, net.context.input_size, net.context.pad_square)
    ctx_input = torch.randn(1, 3, *geo.padded)
    size = int(net.pipeline["object_size"])
    patch = int(net.pipeline["detail_size"])
    image = torch.randn(1, 3, size, size)
    maps = torch.zeros(1, 3, size, size)
    maps[:, 1, 120:130, 120:130] = 1.0
    box = torch.tensor([geo.map_box((200, 100, 600, 420))])
    details = torch.randn(detail_patches, 3, patch, patch)
    trimap = torch.zeros(detail_patches, 3, patch, patch)
    trimap[:, 2] = 1.0
    with torch.inference_mode():
        context = net.encode_context(ctx_input)
        rows = [
            (f"context (once per image, input {geo.padded[1]}x{geo.padded[0]})", timed(
                lambda: net.encode_context(ctx_input), max(1, repeats // 2))),
            (f"object ({size}x{size} patch + RoIAlign context)", timed(
                lambda: net.forward_object(image, maps, "clicks", context, box), repeats)),
            (f"detail ({detail_patches} patches of {patch}x{patch})", timed(
                lambda: net.forward_detail(details, trimap), repeats)),
        ]
    print(f"\ncontext features {tuple(context.shape)}\n")
    print("| step | median ms | min ms |")
    print("|---|---:|---:|")
    for name, (median, best) in rows:
        print(f"| {name} | {median * 1e3:.1f} | {best * 1e3:.1f} |")
    per_click = rows[1][1][0] + rows[2][1][0]
    print(f"| **per interaction (object + detail)** | {per_click * 1e3:.1f} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (finecut infers with 1)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--detail-patches", type=int, default=16)
    parser.add_argument("--sam", action="store_true", help="also the paper's SAM ViT-B context encoder (slow)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# FocalClick-XL forward on CPU ({platform.processor() or platform.machine()}, {args.threads} threads, "
          f"torch {torch.__version__}), one 854x480 frame")
    bench({"arch": "focalclick_xl"}, "shipped layout: EfficientNet-Lite0 context encoder", args.repeats,
          args.detail_patches)
    if args.sam:
        bench({"arch": "focalclick_xl", "context_net": {"type": "sam_vit", "variant": "b"}},
              "paper layout: SAM ViT-B + adapters context encoder", args.repeats, args.detail_patches)


if __name__ == "__main__":
    main()
