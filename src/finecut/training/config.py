"""Training configuration: a dataclass tree read from a TOML file (``finecut train CONFIG.toml``).

A config has a common part, read by the one training loop (:func:`finecut.training.trainer.train`) and shared by the
methods — run directory, initialisation, ``[model]``, ``[data]``, schedule and optimizer, the click simulation that
FocalClick-style training and NTClick's ECP share, held-out validation, logging — and one section per training method
for the options only that method reads:

* ``[focalclick]`` (:class:`FocalClickOptions`): the FocalClick method, which also trains SimpleClick and RITM-style
  single networks (the segmentation half only): refiner crop and loss weight, the small-crop stage, the batch
  prefetching worker, memory format, ``torch.compile``;
* ``[ntclick_hrr]`` (:class:`NTClickHRROptions`): NTClick's HRR: its BCE weight, the frozen ECP whose predicted FBU
  maps it sees, native-scale views;
* ``[focalclick_xl]`` (:class:`FocalClickXLOptions`): FocalClick-XL's three stages (click pretraining of the
  Object-Net + context adapters, the Detail-Net on alpha patches, one interaction form's prompting layer), their
  warm start and their sample simulation.

* ``[mae]`` (:class:`MAEOptions`): masked-autoencoder pretraining of SimpleClick's plain ViT (arch ``mae_vit``):
  the masking ratio and the random crops of whole training photos.

* ``[ntclick_ecp]`` (:class:`NTClickECPOptions`): NTClick's ECP: the warm start of the EfficientNet ECP
  (``ntclick_ecp_effnet``) from a FocalClick segmentor, the binary term, and clicks on the final (post-HRR) mask's
  mistakes from a frozen HRR.

Which method trains a config follows from ``[model].arch``
(:data:`METHOD_OF_ARCH`); a section for another method is refused. Flat files of the earlier layout (every option at
the top level) still load: their method options move into the method's section, and the options of other methods —
which those runs ignored too — are dropped (:data:`FLAT_KEYS`).
"""

from __future__ import annotations

import dataclasses
import re
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
class FocalClickOptions:
    """``[focalclick]``: options of the FocalClick method (FocalClick nets; SimpleClick / RITM-style single networks
    train their segmentation half and ignore the refiner's two)."""

    refiner_size: int = 96  # side of the refiner's focus crop
    refiner_loss_weight: float = 1.0
    small_size: int = 0  # > 0: train at this crop size (FocalClick-S1-like) until step ``full_size_from`` ...
    full_size_from: int = 0  # ... then at ``size``; validation always runs at ``size``
    # > 0: after ``full_size_from``, every ``small_every``-th step still trains at ``small_size`` (2: alternate), so a
    # model whose first pass runs at the small size keeps training at it while the later passes' size is learnt
    small_every: int = 0
    # > 0: the refiner's focus crop side during the small stage (scaled with the crop: at a 128 px crop a 96 px focus
    # crop costs as much as the segmentor); 0 = ``refiner_size`` throughout
    small_refiner_size: int = 0
    channels_last: bool = True  # NHWC memory format for images, prompt maps and weights
    compile: bool = False  # torch.compile the networks in place (nn.Module.compile; checkpoint keys unchanged)
    prefetch: int = 0  # > 0: a worker process draws (decodes, augments, simulates clicks for) this many batches ahead
    # worker processes that draw prefetched batches (with ``prefetch`` > 0): one keeps up with a CPU step; a GPU step
    # needs about one worker per core (each has its own seeded stream, batches arrive in completion order)
    prefetch_workers: int = 1
    # distillation: a trained checkpoint (shipped name or path) whose segmentor, given the same image, clicks and
    # previous mask, gives soft targets (its probabilities) for an extra BCE term of weight ``distill_weight``
    distill_checkpoint: str = ""
    distill_weight: float = 0.5

    def check(self) -> None:
        for name in ("refiner_size", "small_size", "full_size_from", "small_every", "small_refiner_size", "prefetch",
                     "distill_weight"):
            if getattr(self, name) < 0:
                raise FinecutError(f"[focalclick].{name} must be >= 0, got {getattr(self, name)}")
        if self.refiner_size < 8:
            raise FinecutError(f"[focalclick].refiner_size must be at least 8, got {self.refiner_size}")
        if self.prefetch_workers < 1:
            raise FinecutError(f"[focalclick].prefetch_workers must be at least 1, got {self.prefetch_workers}")
        if 0 < self.small_refiner_size < 8:
            raise FinecutError(f"[focalclick].small_refiner_size must be 0 (off) or at least 8, got "
                               f"{self.small_refiner_size}")

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout of the network inputs and weights: NHWC (``channels_last``) or plain NCHW."""
        import torch

        return torch.channels_last if self.channels_last else torch.contiguous_format


@dataclass
class NTClickHRROptions:
    """``[ntclick_hrr]``: options of NTClick's HRR training (:mod:`finecut.training.ntclick`)."""

    bce_weight: float = 1.0  # weight of the BCE term beside L1 + gradient loss (0 = the paper's loss)
    ecp_checkpoint: str = ""  # a trained ECP whose predicted FBU maps replace the ground-truth ones ...
    ecp_probability: float = 0.0  # ... on this share of samples (the maps the HRR sees at inference)
    native_scale: float = 0.0  # share of views at the image's own resolution (as at inference)
    # an HRR with a click input ([model].click_channels = 3): each sample gets a first click from the NTClick protocol's
    # simulated user on the FBU map's certain foreground, then 0..click_iterations more, each on the errors a no-grad
    # pass of the HRR leaves in the uncertain region (tolerant where they fall in the object's fine-structure band)
    click_iterations: int = 2
    click_radius: float = 5.0  # disk radius of the click maps (the engine's click_radius)
    tolerant_offset: float = 10.0  # a tolerant click lands up to this far from the error it marks (the protocol's)
    click_weight: float = 1.0  # extra loss weight within click_weight_radius of a click (0 = none)
    click_weight_radius: float = 24.0

    def check(self) -> None:
        if self.click_iterations < 0:
            raise FinecutError(f"[ntclick_hrr].click_iterations {self.click_iterations}: must be >= 0")
        if not (self.click_radius > 0 and self.tolerant_offset >= 0 and self.click_weight >= 0
                and self.click_weight_radius > 0):
            raise FinecutError("[ntclick_hrr] click_radius and click_weight_radius must be > 0, tolerant_offset and "
                               "click_weight >= 0")


@dataclass
class NTClickECPOptions:
    """``[ntclick_ecp]``: options of NTClick's ECP training (:mod:`finecut.training.ntclick`)."""

    # a FocalClick checkpoint (shipped name or path) that starts an ntclick_ecp_effnet ECP when init_checkpoint is
    # empty (:func:`finecut.models.ntclick_ecp_effnet.init_from_focalclick`); "" = ImageNet backbone (``pretrained``)
    init_segmentor: str = ""
    # weight of a binary term beside the paper's 3-class cross-entropy: BCE of sigmoid(logit_fg - logit_bg) against
    # the object mask on every pixel. The FBU cross-entropy says nothing about foreground vs background inside the
    # uncertain band; where no HRR decides the band (hrr=false, hrr_scope="tolerant") these odds do. 0 = the paper.
    binary_weight: float = 0.0
    # the ECP's extra (iterative) clicks placed on the *final* mask's mistakes, the one the user sees: a frozen HRR
    # (this checkpoint: an ntclick_hrr or an assembled ntclick, whose HRR is used) decides the uncertain pixels of
    # each no-grad pass as the engine does, the NTClick protocol's simulated user clicks on what is still wrong
    # (tolerant where the error lies in the object's fine-structure band), and the final probabilities are the next
    # pass's previous mask. On this share of the iterative samples (the rest: clicks on the FBU map's own errors).
    hrr_checkpoint: str = ""
    hrr_probability: float = 0.0
    # which uncertain pixels the HRR decides in those passes (the engine's hrr_scope): "session" = all of them once
    # the sample has a tolerant click, the ECP's fg / bg odds before that (the shipped engine); "all" = always
    hrr_scope: str = "session"
    click_radius: float = 5.0  # the HRR's click disks (the engine's click_radius)
    tolerant_offset: float = 10.0  # the protocol's largest offset of a tolerant click

    def check(self) -> None:
        if not self.binary_weight >= 0.0:
            raise FinecutError(f"[ntclick_ecp].binary_weight {self.binary_weight}: must be >= 0")
        if not 0.0 <= self.hrr_probability <= 1.0:
            raise FinecutError(f"[ntclick_ecp].hrr_probability {self.hrr_probability}: must be in [0, 1]")
        if self.hrr_probability > 0.0 and not self.hrr_checkpoint:
            raise FinecutError("[ntclick_ecp].hrr_probability > 0 needs hrr_checkpoint (the frozen HRR)")
        if self.hrr_scope not in ("session", "all"):
            raise FinecutError(f"[ntclick_ecp].hrr_scope {self.hrr_scope!r}: use 'session' or 'all'")
        if not (self.click_radius > 0 and self.tolerant_offset >= 0):
            raise FinecutError("[ntclick_ecp] click_radius must be > 0 and tolerant_offset >= 0")


@dataclass
class MAEOptions:
    """``[mae]``: options of MAE pretraining (:mod:`finecut.training.mae`). Each sample is a random crop of a whole
    training photo (area ``crop_scale`` of the photo, aspect ratio in ``crop_ratio``), flipped with probability
    ``flip``, resized to ``size``²."""

    mask_ratio: float | None = None  # share of hidden patches; None: the model's ``mask_ratio``
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 4.0 / 3.0)
    flip: float = 0.5

    def __post_init__(self) -> None:
        self.crop_scale = tuple(float(v) for v in self.crop_scale)  # type: ignore[assignment]
        self.crop_ratio = tuple(float(v) for v in self.crop_ratio)  # type: ignore[assignment]

    def check(self) -> None:
        if self.mask_ratio is not None and not 0.0 < self.mask_ratio < 1.0:
            raise FinecutError(f"[mae].mask_ratio {self.mask_ratio}: in (0, 1)")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise FinecutError(f"[mae].crop_scale {list(self.crop_scale)}: 0 < low <= high <= 1")
        lo, hi = self.crop_ratio
        if not 0.0 < lo <= hi:
            raise FinecutError(f"[mae].crop_ratio {list(self.crop_ratio)}: 0 < low <= high")
        if not 0.0 <= self.flip <= 1.0:
            raise FinecutError(f"[mae].flip {self.flip}: a probability")


#: FocalClick-XL's training stages (``[focalclick_xl].stage``) and the forms the prompting stage tunes.
XL_STAGES: tuple[str, ...] = ("object", "detail", "prompting")
XL_PROMPTING_FORMS: tuple[str, ...] = ("box", "scribbles", "coarse_mask")


@dataclass
class FocalClickXLOptions:
    """``[focalclick_xl]``: options of FocalClick-XL training (:mod:`finecut.training.focalclick_xl`).

    ``stage`` picks what one run trains: ``object`` (the paper's click pretraining: Object-Net, the clicks prompting
    layer and the context encoder's adapters / neck), ``detail`` (the Detail-Net alone on 64² alpha patches) or
    ``prompting`` (only ``form``'s prompting layer). Every stage saves the whole network."""

    stage: str = "object"
    form: str = "box"  # prompting stage: box | scribbles | coarse_mask
    # warm start of the object stage when init_checkpoint is empty (the top-level ``pretrained`` must be "none")
    object_init: str = "focalclick-lite0-v2"  # a FocalClick checkpoint (shipped name or path) for Object-Net + prompting
    # object stage from init_checkpoint (an XL checkpoint): a FocalClick checkpoint whose segmentor replaces the
    # Object-Net, and the prompting layers that take its click encoder (the others keep theirs); the context
    # projections restart at zero. Context-Net and Detail-Net stay the init checkpoint's
    rebase_object: str = ""
    rebase_forms: tuple[str, ...] = ("clicks",)
    context_pretrained: str = "imagenet"  # Lite0 context: "imagenet" / a path; SAM context: a SAM checkpoint path; "none"
    context_train: str = "adapters"  # adapters (SAM adapters / Lite0 neck) | all | none
    # object patches (object and prompting stages): the object box expanded by a factor in box_expand, its centre
    # moved by up to box_shift of its side, clamped to the image; or the whole image (a first click from scratch)
    box_expand: tuple[float, float] = (1.2, 1.8)
    box_shift: float = 0.1
    whole_image_probability: float = 0.15
    flip: bool = True
    # detail stage
    detail_size: int = 64  # patch side (the pipeline's detail_size)
    synthetic_fraction: float = 0.5  # share of synthetic alpha composites; the rest are real masks' boundary patches
    synthetic_side: int = 160  # side of the background crop a composite is rendered on
    real_body_probability: float = 0.5  # composites whose body is a real object cut-out of the bank
    patch_scale: tuple[float, float] = (1.0, 2.5)  # source pixels per Detail-Net pixel
    trimap_low: float = 0.1  # the pipeline's thresholds on the (simulated) primitive probabilities
    trimap_high: float = 0.9
    trimap_band: int | None = 6  # the pipeline's trimap_band: unknown only this close to the primitive's boundary
    detail_click_probability: float = 0.5  # samples with 1-3 clicks as sure foreground / background
    # simulated primitives first seen at a 1.5-4x coarser scale (as the Object-Net's output resized to a patch)
    coarse_primitive_probability: float = 0.0
    # patches of the Object-Net's own primitives: bank objects through the pipeline (Detail-Net off, the init
    # checkpoint's settings), 1 to primitive_max_clicks simulated clicks, the windows it would refine
    # (finecut.training.xl_primitives); the rest are the simulated samples above
    object_primitive_fraction: float = 0.0
    primitive_max_clicks: int = 4
    detail_click_radius: float = 3.0
    known_weight: float = 0.0  # loss weight of the trimap's decided pixels (the unknown ones weigh 1)
    l1_weight: float = 1.0
    mse_weight: float = 1.0
    gradient_weight: float = 1.0
    composition_weight: float = 0.5  # synthetic samples only (their foreground and background are known)
    # prompting stage
    copy_clicks: str = "auto"  # start the form's layer from the clicks layer: auto (unless already tuned) | always | never
    box_jitter: float = 0.08  # simulated boxes: edge noise (share of the side)
    scribble_width: tuple[int, int] = (3, 7)
    coarse_previous_probability: float = 1.0  # the coarse mask also in the previous-mask channel (as the pipeline)
    # object stage, a departure from the paper: the share of steps that train the Object-Net on another form (each step
    # one form for the whole batch, with that form's prompting layer, which trains too), e.g. {box = 0.25}; the rest
    # are click steps. The paper tunes only the form's prompting layer afterwards (the prompting stage)
    joint_forms: dict[str, float] = field(default_factory=dict)

    def check(self) -> None:
        if self.stage not in XL_STAGES:
            raise FinecutError(f"[focalclick_xl].stage {self.stage!r}: one of {', '.join(XL_STAGES)}")
        if self.stage == "prompting" and self.form not in XL_PROMPTING_FORMS:
            raise FinecutError(f"[focalclick_xl].form {self.form!r}: one of {', '.join(XL_PROMPTING_FORMS)} "
                               "(clicks are trained by the object stage)")
        if self.context_train not in ("adapters", "all", "none"):
            raise FinecutError(f"[focalclick_xl].context_train {self.context_train!r}: adapters, all or none")
        if self.copy_clicks not in ("auto", "always", "never"):
            raise FinecutError(f"[focalclick_xl].copy_clicks {self.copy_clicks!r}: auto, always or never")
        if self.joint_forms:
            if self.stage != "object":
                raise FinecutError("[focalclick_xl].joint_forms trains other forms in the object stage; "
                                   f"this run's stage is {self.stage!r}")
            unknown = sorted(set(self.joint_forms) - set(XL_PROMPTING_FORMS))
            if unknown:
                raise FinecutError(f"[focalclick_xl].joint_forms {unknown}: forms are {', '.join(XL_PROMPTING_FORMS)}")
            shares = [float(v) for v in self.joint_forms.values()]
            if min(shares) < 0 or sum(shares) >= 1:
                raise FinecutError(f"[focalclick_xl].joint_forms {dict(self.joint_forms)}: shares >= 0 summing to "
                                   "less than 1 (the rest are click steps)")
        if self.rebase_object and self.stage != "object":
            raise FinecutError("[focalclick_xl].rebase_object replaces the Object-Net, which the object stage trains; "
                               f"this run's stage is {self.stage!r}")
        unknown_forms = sorted(set(self.rebase_forms) - {"clicks", *XL_PROMPTING_FORMS})
        if unknown_forms:
            raise FinecutError(f"[focalclick_xl].rebase_forms {unknown_forms}: forms are clicks, "
                               f"{', '.join(XL_PROMPTING_FORMS)}")
        if not 0.0 <= self.trimap_low < self.trimap_high <= 1.0:
            raise FinecutError("[focalclick_xl] trimap thresholds need 0 <= trimap_low < trimap_high <= 1")
        lo, hi = self.box_expand
        if not 1.0 <= lo <= hi:
            raise FinecutError(f"[focalclick_xl].box_expand {list(self.box_expand)}: 1 <= low <= high")
        if self.detail_size < 16:
            raise FinecutError(f"[focalclick_xl].detail_size {self.detail_size}: at least 16")
        if self.primitive_max_clicks < 1:
            raise FinecutError(f"[focalclick_xl].primitive_max_clicks {self.primitive_max_clicks}: at least 1")
        for name in ("synthetic_fraction", "detail_click_probability", "coarse_primitive_probability",
                     "object_primitive_fraction", "whole_image_probability"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise FinecutError(f"[focalclick_xl].{name} {getattr(self, name)}: a probability in [0, 1]")


#: The training method of each trainable architecture (the loop's step functions:
#: :data:`finecut.training.trainer.METHODS`). The assembled ``ntclick`` is not trained as such: its two networks are
#: (``ntclick_ecp``, ``ntclick_hrr``), then ``finecut train --assemble`` joins them.
METHOD_OF_ARCH: dict[str, str] = {
    "focalclick": "focalclick",
    "simpleclick": "focalclick",
    "focalclick_segmentor": "focalclick",
    "ntclick_ecp": "ntclick_ecp",
    "ntclick_ecp_effnet": "ntclick_ecp",
    "ntclick_hrr": "ntclick_hrr",
    "focalclick_xl": "focalclick_xl",
    "mae_vit": "mae",
}

#: The per-method config sections (a method not listed has no options of its own).
METHOD_OPTIONS: dict[str, type] = {"focalclick": FocalClickOptions, "ntclick_ecp": NTClickECPOptions,
                                   "ntclick_hrr": NTClickHRROptions,
                                   "focalclick_xl": FocalClickXLOptions, "mae": MAEOptions}

#: Top-level keys of the earlier flat layout -> (section, option) in the current one.
FLAT_KEYS: dict[str, tuple[str, str]] = {
    **{name: ("focalclick", name) for name in ("refiner_size", "refiner_loss_weight", "small_size", "full_size_from",
                                               "small_refiner_size", "channels_last", "compile", "prefetch",
                                               "distill_checkpoint", "distill_weight")},
    "hrr_bce_weight": ("ntclick_hrr", "bce_weight"),
    "hrr_ecp_checkpoint": ("ntclick_hrr", "ecp_checkpoint"),
    "hrr_ecp_probability": ("ntclick_hrr", "ecp_probability"),
    "hrr_native_scale": ("ntclick_hrr", "native_scale"),
    "ecp_init_segmentor": ("ntclick_ecp", "init_segmentor"),
    "ecp_binary_weight": ("ntclick_ecp", "binary_weight"),
}


#: Training methods that run on a CUDA device (``device = "cuda"``); the others train on the CPU.
GPU_METHODS: frozenset[str] = frozenset({"focalclick"})


def method_of(model: dict[str, Any]) -> str:
    """The training method of a ``[model]`` config (:data:`METHOD_OF_ARCH`)."""
    arch = model.get("arch")
    if arch == "ntclick":
        raise FinecutError("[model].arch ntclick is assembled, not trained: train its networks (arch ntclick_ecp, "
                           "ntclick_hrr), then join them with `finecut train --assemble ECP HRR OUT`")
    if arch not in METHOD_OF_ARCH:
        raise FinecutError(f"[model].arch {arch!r}: no training method; trainable: {', '.join(METHOD_OF_ARCH)}")
    return METHOD_OF_ARCH[arch]


@dataclass
class TrainConfig:
    run_dir: str = "runs/default"
    model: dict[str, Any] = field(default_factory=lambda: {"arch": "focalclick"})
    pretrained: str = "imagenet"  # "imagenet", "none" or a path to backbone weights
    init_checkpoint: str = ""  # a finecut checkpoint (NAME.json/.safetensors or a shipped name) to start all weights from
    # a finecut checkpoint whose encoder starts the backbone (e.g. an MAE run's "runs/mae-xtiny/last"): every backbone
    # tensor must be found in it, the rest of the network starts as built (trainer.load_backbone_checkpoint)
    init_backbone_checkpoint: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    steps: int = 20000
    batch_size: int = 8
    size: int = 224  # training crop side (validation always runs at this size)
    hi_factor: int = 2  # views are also cut at size * hi_factor (FocalClick's refiner, NTClick's HRR)
    lr: float = 5e-4
    backbone_lr_mult: float = 0.1
    weight_decay: float = 0.0
    warmup_steps: int = 300
    min_lr_fraction: float = 0.05
    # > 0: a time-boxed run (a lent GPU): training stops after this many minutes of training time (summed over
    # resumes), and the cosine schedule runs on whichever of steps and time is further along, so the learning rate
    # reaches its floor at the budget's end however fast the machine is; ``steps`` is then an upper bound
    time_budget_minutes: float = 0.0
    # click simulation (FocalClick method and NTClick's ECP)
    max_iterative_clicks: int = 3
    iterative_probability: float = 0.8
    prior_mask_probability: float = 0.15
    click_radius: float = 5.0
    seed: int = 0
    threads: int = 2
    # where the networks train: "cpu", or "cuda" / "cuda:N" (FocalClick-method runs, one process); TF32 matrix
    # products on CUDA. Checkpoints are written as CPU float32 either way.
    device: str = "cpu"
    log_every: int = 20
    checkpoint_every: int = 200
    # held-out validation through the evaluator's click loop (methods with a validation engine; NTClick's have none);
    # 0 turns it off
    val_every: int = 1000
    val_objects: int = 64
    val_clicks: int = 10
    # per-method sections: only the one of this config's method is set (filled with defaults when not given)
    focalclick: FocalClickOptions | None = None
    ntclick_ecp: NTClickECPOptions | None = None
    ntclick_hrr: NTClickHRROptions | None = None
    focalclick_xl: FocalClickXLOptions | None = None
    mae: MAEOptions | None = None

    def __post_init__(self) -> None:
        method = method_of(self.model)
        if method in METHOD_OPTIONS and getattr(self, method) is None:
            setattr(self, method, METHOD_OPTIONS[method]())

    @property
    def method(self) -> str:
        """The training method, from ``[model].arch`` (:data:`METHOD_OF_ARCH`)."""
        return method_of(self.model)

    def check(self) -> None:
        """Refuse a config whose sections do not fit its method (e.g. ``[ntclick_hrr]`` for a FocalClick model), and
        ``[data]`` that cannot work or is an evaluation split."""
        method = self.method
        for section in METHOD_OPTIONS:
            if section != method and getattr(self, section) is not None:
                raise FinecutError(f"[{section}] holds options of the {section} method, but [model].arch "
                                   f"{self.model.get('arch')!r} trains with the {method} method")
        if method in METHOD_OPTIONS and getattr(self, method) is None:
            setattr(self, method, METHOD_OPTIONS[method]())
        section = getattr(self, method, None) if method in METHOD_OPTIONS else None
        if hasattr(section, "check"):
            section.check()
        if method == "focalclick_xl" and self.pretrained not in ("none", ""):
            raise FinecutError('FocalClick-XL: set pretrained = "none"; the context encoder\'s weights are '
                               "[focalclick_xl].context_pretrained, the Object-Net's [focalclick_xl].object_init")
        if (method == "ntclick_ecp" and self.ntclick_ecp is not None and self.ntclick_ecp.init_segmentor
                and self.model.get("arch") != "ntclick_ecp_effnet"):
            raise FinecutError("[ntclick_ecp].init_segmentor starts an ntclick_ecp_effnet ECP from a FocalClick "
                               f"segmentor; [model].arch {self.model.get('arch')!r} cannot take it")
        if self.init_backbone_checkpoint and self.init_checkpoint:
            raise FinecutError("init_checkpoint starts every weight; init_backbone_checkpoint (the backbone only) "
                               "cannot be combined with it")
        for name in ("log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise FinecutError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.val_every < 0:
            raise FinecutError(f"val_every must be >= 0 (0: no validation during training), got {self.val_every}")
        if self.time_budget_minutes < 0:
            raise FinecutError(f"time_budget_minutes must be >= 0, got {self.time_budget_minutes}")
        self.check_device()
        self.data.check()

    def check_device(self) -> None:
        """Refuse a ``device`` that is not ``cpu`` / ``cuda`` / ``cuda:N``, or a GPU for a method that trains on the CPU
        only."""
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise FinecutError(f"device must be \"cpu\", \"cuda\" or \"cuda:N\", got {self.device!r}")
        if self.device != "cpu" and self.method not in GPU_METHODS:
            raise FinecutError(f"device {self.device!r}: the {self.method} method trains on the CPU only "
                               f"(GPU training: {', '.join(sorted(GPU_METHODS))})")

    def small_at(self, step: int) -> bool:
        """Whether ``step`` trains at ``[focalclick].small_size``: every step before ``full_size_from``, and after it
        every ``small_every``-th one when that is set."""
        fc = self.focalclick
        if fc is None or fc.small_size <= 0:
            return False
        if step < fc.full_size_from:
            return True
        return fc.small_every > 0 and (step - fc.full_size_from) % fc.small_every == fc.small_every - 1

    def size_at(self, step: int) -> int:
        """The training crop size at ``step`` (``[focalclick]``'s small stage first, then ``size``, with every
        ``small_every``-th step at the small size when set)."""
        return self.focalclick.small_size if self.small_at(step) else self.size

    def refiner_size_at(self, step: int) -> int:
        """The refiner's focus-crop side at ``step``: ``[focalclick].small_refiner_size`` on the small-crop steps
        (:meth:`small_at`) when set, else ``refiner_size``."""
        fc = self.focalclick if self.focalclick is not None else FocalClickOptions()
        if fc.small_refiner_size > 0 and self.small_at(step):
            return fc.small_refiner_size
        return fc.refiner_size

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        """Build from a TOML/JSON document: the sectioned layout, or the earlier flat one (:data:`FLAT_KEYS`)."""
        raw = dict(raw)
        model = raw.get("model", {"arch": "focalclick"})
        if not isinstance(model, dict):
            raise FinecutError("[model] must be a table")
        method = method_of(model)
        sections: dict[str, dict[str, Any]] = {}
        for name in METHOD_OPTIONS:
            if name in raw:
                if not isinstance(raw[name], dict):
                    raise FinecutError(f"[{name}] must be a table")
                sections[name] = dict(raw.pop(name))
        for key in [k for k in raw if k in FLAT_KEYS]:
            section, option = FLAT_KEYS[key]
            value = raw.pop(key)
            if section != method:
                continue  # an option of another method, which the flat layout carried and the run ignored
            if option in sections.get(section, {}):
                raise FinecutError(f"{key} is given twice: at the top level and in [{section}]")
            sections.setdefault(section, {})[option] = value
        known = {f.name for f in dataclasses.fields(cls)} - set(METHOD_OPTIONS)
        unknown = set(raw) - known
        if unknown:
            raise FinecutError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        data = raw.pop("data", {})
        data_known = {f.name for f in dataclasses.fields(DataConfig)}
        if set(data) - data_known:
            raise FinecutError(f"unknown [data] option(s): {', '.join(sorted(set(data) - data_known))}")
        options = {}
        for name, values in sections.items():
            section_known = {f.name for f in dataclasses.fields(METHOD_OPTIONS[name])}
            if set(values) - section_known:
                raise FinecutError(f"unknown [{name}] option(s): {', '.join(sorted(set(values) - section_known))}")
            options[name] = METHOD_OPTIONS[name](**values)
        cfg = cls(data=DataConfig(**data), **raw, **options)
        cfg.check()
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        p = Path(path)
        if not p.exists():
            raise FinecutError(f"{p}: training config not found")
        try:
            raw = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise FinecutError(f"{p}: invalid TOML ({exc})") from exc
        if not raw:
            # an empty file would otherwise start a run with every default (runs/default, random weights)
            raise FinecutError(f"{p}: the training config is empty")
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        """The sectioned layout (what ``config.json``, ``log.jsonl`` and checkpoints record); only this config's
        method section appears."""
        out = dataclasses.asdict(self)
        for name in METHOD_OPTIONS:
            if out[name] is None:
                del out[name]
        return out


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """A recorded config (either layout) with its method section's options at the top level, under their flat names
    (``refiner_size``, ``hrr_bce_weight``, ...): what readers of training records (model cards, run histories) use,
    so checkpoints of both layouts read alike."""
    out = {k: v for k, v in config.items() if k not in METHOD_OPTIONS}
    for key, (section, option) in FLAT_KEYS.items():
        values = config.get(section)
        if isinstance(values, dict) and option in values:
            out[key] = values[option]
    return out
