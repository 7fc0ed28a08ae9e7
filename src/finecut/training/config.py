"""Training configuration: a dataclass tree read from a TOML file (``finecut train CONFIG.toml``)."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finecut.errors import FinecutError

if TYPE_CHECKING:
    import torch


@dataclass
class DataConfig:
    sources: list[str] = field(default_factory=lambda: ["COCO128", "BSDS500", "WeizmannHorse", "MSRA10K"])
    weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 0.5, 1.0])
    data_root: str = ""  # empty: finecut.datasets.default_data_root()
    bank: str = "runs/object-bank-512.npz"  # cache of decoded images + masks (built on first use)
    max_side: int = 512
    min_area_fraction: float = 0.002
    max_area_fraction: float = 0.85
    val_fraction: float = 0.04
    synthetic_thin: float = 0.0  # probability of a procedural thin-structure sample
    # reader options per source, e.g. {"DRIVE" = {split = "training"}} (see finecut.datasets.open_dataset)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)


    def check(self) -> None:
        """Refuse configs that cannot work or would train on an evaluation split."""
        if len(self.weights) != len(self.sources):
            raise FinecutError(f"[data]: {len(self.sources)} sources but {len(self.weights)} weights")
        stray = set(self.options) - set(self.sources)
        if stray:
            raise FinecutError(f"[data].options names {sorted(stray)}, which are not in [data].sources")
        for name in self.sources:
            check_training_source(name, self.options.get(name, {}))


#: Benchmark sets that are evaluation-only (``../shared/DATA.md``); DRIVE is allowed with ``split = "training"``.
EVALUATION_ONLY = ("GrabCut", "Berkeley", "DAVIS", "DAVIS345", "CrackForest", "CFD", "COCO-MVal")


def check_training_source(name: str, options: dict[str, Any]) -> None:
    """Raise :class:`FinecutError` when ``name`` (with reader ``options``) is an evaluation split."""
    low = name.lower()
    if low in {n.lower() for n in EVALUATION_ONLY}:
        raise FinecutError(f"[data].sources: {name} is an evaluation benchmark and must not be trained on")
    if low == "drive" and options.get("split") != "training":
        raise FinecutError('[data].sources: DRIVE needs options {split = "training"}; its test split is for '
                           "evaluation only")


@dataclass
class TrainConfig:
    run_dir: str = "runs/default"
    model: dict[str, Any] = field(default_factory=lambda: {"arch": "focalclick"})
    pretrained: str = "imagenet"  # "imagenet", "none" or a path to backbone weights
    init_checkpoint: str = ""  # a finecut checkpoint (NAME.json/.safetensors or a shipped name) to start all weights from
    data: DataConfig = field(default_factory=DataConfig)
    steps: int = 20000
    batch_size: int = 8
    size: int = 224
    small_size: int = 0  # > 0: train at this crop size (FocalClick-S1-like) until step ``full_size_from`` ...
    full_size_from: int = 0  # ... then at ``size``; validation always runs at ``size``
    channels_last: bool = True  # NHWC memory format for images, prompt maps and weights
    compile: bool = False  # torch.compile the networks in place (nn.Module.compile; checkpoint keys unchanged)
    prefetch: int = 0  # > 0: a worker process draws (decodes, augments, simulates clicks for) this many batches ahead
    hi_factor: int = 2
    refiner_size: int = 96
    lr: float = 5e-4
    backbone_lr_mult: float = 0.1
    weight_decay: float = 0.0
    warmup_steps: int = 300
    min_lr_fraction: float = 0.05
    max_iterative_clicks: int = 3
    iterative_probability: float = 0.8
    prior_mask_probability: float = 0.15
    click_radius: float = 5.0
    refiner_loss_weight: float = 1.0
    hrr_bce_weight: float = 1.0  # NTClick HRR: weight of the BCE term beside L1 + gradient loss (0 = the paper's loss)
    hrr_ecp_checkpoint: str = ""  # NTClick HRR: a trained ECP whose predicted FBU maps replace the ground-truth ones ...
    hrr_ecp_probability: float = 0.0  # ... on this share of samples (the maps the HRR sees at inference)
    hrr_native_scale: float = 0.0  # NTClick HRR: share of views at the image's own resolution (as at inference)
    seed: int = 0
    threads: int = 2
    log_every: int = 20
    checkpoint_every: int = 200
    val_every: int = 1000
    val_objects: int = 64
    val_clicks: int = 10

    @property
    def memory_format(self) -> "torch.memory_format":
        """The layout of the network inputs and weights: NHWC (``channels_last``) or plain NCHW."""
        import torch

        return torch.channels_last if self.channels_last else torch.contiguous_format

    def size_at(self, step: int) -> int:
        """The training crop size at ``step`` (the small stage first, then ``size``)."""
        return self.small_size if self.small_size > 0 and step < self.full_size_from else self.size

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrainConfig":
        raw = dict(raw)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise FinecutError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        data = raw.pop("data", {})
        data_known = {f.name for f in dataclasses.fields(DataConfig)}
        if set(data) - data_known:
            raise FinecutError(f"unknown [data] option(s): {', '.join(sorted(set(data) - data_known))}")
        cfg = cls(data=DataConfig(**data), **raw)
        cfg.data.check()
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        p = Path(path)
        if not p.exists():
            raise FinecutError(f"{p}: training config not found")
        try:
            raw = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise FinecutError(f"{p}: invalid TOML ({exc})") from exc
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
