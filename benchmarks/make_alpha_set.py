"""Write the seeded synthetic alpha set of FocalClick-XL's alpha protocol (SAD / MSE / Grad, docs/evaluation.md).

Renders ``--count`` composites with exact fractional alpha (hair, fur, wires, cut-outs;
:mod:`finecut.training.alpha_synth`) onto ``--size``² crops of held-out training photos — the validation split of the
object bank a training config names (``[data].bank``, ``[data].val_fraction``: the images every trainer leaves out),
with held-out objects as some of the bodies — or onto a folder of your own photos (``--photos``). Writes
``OUT/images``, ``OUT/alphas`` (16-bit), ``OUT/trimaps`` and ``OUT/manifest.json``
(:func:`finecut.training.alpha_set.write_alpha_set`); refuses a non-empty ``--out`` unless ``--overwrite``. The set is
synthetic: no matting benchmark exists offline.

    python benchmarks/make_alpha_set.py --config configs/focalclick-lite0-v2.toml --out /tmp/alpha-set --count 100 --seed 0
    python benchmarks/make_alpha_set.py --photos my/photos --out /tmp/alpha-set --count 50
    finecut evaluate --model MODEL --dataset /tmp/alpha-set --alpha --out runs/alpha
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from finecut.errors import FinecutError
from finecut.training.alpha_set import folder_photos, held_out_photos, write_alpha_set
from finecut.training.alpha_synth import KINDS
from finecut.training.config import TrainConfig
from finecut.training.objects import ObjectBank


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="training config whose [data].bank / val_fraction give the held-out photos")
    source.add_argument("--bank", help="object bank .npz (with --val-fraction)")
    source.add_argument("--photos", help="a folder of your own photos as backgrounds (procedural bodies only)")
    parser.add_argument("--val-fraction", type=float, default=None,
                        help="validation fraction of --bank (default 0.04; --config uses its own)")
    parser.add_argument("--out", required=True, help="output folder (must be empty or new unless --overwrite)")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=320, help="side of the square composites (px)")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--body-probability", type=float, default=0.5,
                        help="share of hair / fur / cutout composites whose body is a held-out object")
    parser.add_argument("--trimap-band", type=int, default=3, help="dilation (px) of the trimap's unknown band")
    parser.add_argument("--overwrite", action="store_true", help="replace a set written in --out before")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        bodies = []
        if args.photos:
            photos = folder_photos(args.photos)
            described = {"kind": "photo folder", "photos": str(args.photos)}
        else:
            if args.config:
                cfg = TrainConfig.from_file(args.config)
                bank_path, val_fraction = cfg.data.bank, cfg.data.val_fraction
                if args.val_fraction is not None and args.val_fraction != val_fraction:
                    raise FinecutError(f"--val-fraction {args.val_fraction} differs from {args.config}'s "
                                       f"{val_fraction}; the held-out split is the config's")
            else:
                bank_path = args.bank
                val_fraction = 0.04 if args.val_fraction is None else args.val_fraction
            if not Path(bank_path).is_file():
                raise FinecutError(f"{bank_path}: no object bank (built by `finecut train` from the config's [data])")
            bank = ObjectBank.load(bank_path)
            photos, bodies = held_out_photos(bank, val_fraction)
            described = {"kind": "object bank validation split", "config": args.config, "bank": str(bank_path),
                         "val_fraction": val_fraction, "bank_sources": bank.sources}
            del bank
        loaded = time.perf_counter()
        manifest = write_alpha_set(args.out, photos, args.count, args.seed, size=args.size, kinds=args.kinds,
                                   bodies=bodies, body_probability=args.body_probability,
                                   trimap_band=args.trimap_band, source=described, overwrite=args.overwrite,
                                   progress=True)
    except FinecutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done = time.perf_counter()
    stats = manifest["stats"]
    print(f"wrote {args.count} samples to {args.out} from {len(photos)} photos and {len(bodies)} held-out bodies "
          f"(load {loaded - start:.1f} s, render + write {done - loaded:.1f} s)")
    for name, s in stats.items():
        print(f"  {name:7s} fractional-alpha pixels {100 * s['fractional_fraction']:.2f} %, trimap unknown "
              f"{100 * s['unknown_fraction']:.2f} %, foreground {100 * s['foreground_fraction']:.2f} %")
    print(f"evaluate: finecut evaluate --model MODEL --dataset {args.out} --alpha --out runs/alpha")
    return 0


if __name__ == "__main__":
    sys.exit(main())
