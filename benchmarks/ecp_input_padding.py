"""What NTClick's ECP labels on DRIVE's *training* images for one positive click, by input size.

The ECP trains on square, unpadded ``img_size``² views. At inference an image's aspect ratio gives other sizes; a side
that is not a multiple of the ECP's ``input_multiple`` (32) is zero-padded inside the network. This measures, on the
20 DRIVE training images (565×584; never the test split), the share of the field of view the ECP labels foreground
and uncertain after one positive click on the thickest vessel (the standard protocol's first click), for:

- ``240×256`` (long side 256, sides rounded to 16: what the pipeline fed the ECP before; padded to 256²),
- ``224×256`` and ``256×256`` (sides multiples of 32: no padding; the pipeline now rounds to the ECP's multiple).

The ground truth's vessels cover 8.7–16.8 % of the field of view and are thinner than the ECP's resolution, so the
expected FBU answer is "uncertain" over the vessel tree and no foreground.

    python benchmarks/ecp_input_padding.py            # writes results/ecp_input_padding.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import finecut
from finecut import fbu
from finecut.datasets import open_dataset
from finecut.evaluation.protocol import next_click
from finecut.pipelines.common import crop_prompt_maps, normalize
from finecut.prompts import Prompts

SIZES: tuple[tuple[int, int], ...] = ((256, 240), (256, 224), (256, 256))  # (height, width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ntclick")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default="results/ecp_input_padding.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    engine = finecut.load_model(args.model)
    ecp = engine.ecp
    dataset = open_dataset("DRIVE", root=args.data_root, split="training")
    rows: dict[tuple[int, int], list[tuple[float, float]]] = {size: [] for size in SIZES}
    vessel_share = []
    for sample in dataset:
        gt = sample.gt == 1
        fov = sample.region if sample.region is not None else np.ones_like(gt)
        vessel_share.append((gt & fov).sum() / fov.sum())
        prompts = Prompts(clicks=(next_click(sample.gt, np.zeros_like(gt)),))  # the standard protocol's first click
        full = normalize(sample.image)
        height, width = gt.shape
        for size_hw in SIZES:
            image = F.interpolate(full, size=size_hw, mode="bilinear", align_corners=False, antialias=True)
            maps = crop_prompt_maps(prompts, prompts.clicks, np.zeros((height, width), np.float32),
                                    (0, 0, width, height), size_hw, engine.options["click_radius"], 4)
            if ecp.config.prompt_channels == 3:
                maps = maps[:, 1:]
            with torch.no_grad():
                logits = ecp(image, maps)["logits"]
            labels = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False).argmax(1)[0]
            labels = labels.numpy()
            rows[size_hw].append(tuple(float(((labels == cls) & fov).sum() / fov.sum())
                                       for cls in (fbu.FBU_FOREGROUND, fbu.FBU_UNCERTAIN)))
    lines = [
        "# ECP labels on DRIVE training images by input size",
        "",
        f"`python benchmarks/ecp_input_padding.py` — model `{args.model}`, {len(vessel_share)} DRIVE training images "
        f"(vessels {min(vessel_share) * 100:.1f}–{max(vessel_share) * 100:.1f} % of the field of view), one positive "
        "click on the thickest vessel. Shares of the field of view; median (min–max) over the images.",
        "",
        "| ECP input (h×w) | padded inside the ECP | foreground | uncertain |",
        "|---|---|---|---|",
    ]
    multiple = ecp.config.input_multiple
    for (h, w), values in rows.items():
        fg = np.array([v[0] for v in values]) * 100
        unc = np.array([v[1] for v in values]) * 100
        padded = "yes" if h % multiple or w % multiple else "no"
        lines.append(f"| {h}×{w} | {padded} | {np.median(fg):.1f} % ({fg.min():.1f}–{fg.max():.1f}) | "
                     f"{np.median(unc):.1f} % ({unc.min():.1f}–{unc.max():.1f}) |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
