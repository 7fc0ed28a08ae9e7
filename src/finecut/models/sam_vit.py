"""SAM's ViT image encoder with a Conv-GELU-Conv adapter after every block: FocalClick-XL's paper Context-Net.

The encoder is segment_anything's ``ImageEncoderViT`` layer for layer — patch embedding (16 x 16 conv), an absolute
position embedding stored as a ``(1, 64, 64, C)`` grid for 1024 x 1024 inputs, pre-norm blocks with windowed
attention (window 14, zero padding, no key masking) and global attention in blocks 2, 5, 8 and 11 (ViT-B), the
decomposed relative position bias of ViTDet, and a neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) to 256
channels at stride 16 — with SAM's parameter names (``patch_embed.proj``, ``pos_embed``,
``blocks.N.{norm1,attn.qkv,attn.proj,attn.rel_pos_h,attn.rel_pos_w,norm2,mlp.lin1,mlp.lin2}``, ``neck.0`` .. ``neck.3``),
so an official SAM checkpoint's ``image_encoder.*`` tensors load one to one (:func:`load_sam_image_encoder`).

FocalClick-XL adds an adapter after each block (``adapters.N``: a bottleneck ``Conv 1x1 -> GELU -> Conv``, added
to the block's output). The adapter's last conv starts at zero, so a freshly loaded SAM encoder computes exactly
SAM's features until the adapters are trained (the paper trains the adapters and keeps the SAM weights;
:meth:`SamViTAdapterEncoder.freeze_encoder`).

No SAM weights exist offline: loading takes a user-supplied local file, nothing is ever downloaded. Input images are
ImageNet-normalised like every finecut network (SAM's pixel mean / std are ImageNet's, in 0..255 units); SAM
resizes the longest side to 1024 and zero-pads to a square (after normalisation) — :func:`context_input_geometry` in
:mod:`finecut.models.focalclick_xl` gives that geometry to the pipeline. Inputs whose sides are not multiples of 16
are zero-padded at the bottom / right; other grid sizes than the stored one resize the position embedding (bicubic)
and interpolate the relative position tables, as ViTDet does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from finecut.errors import FinecutError
from finecut.models.layers import LayerNorm2d
from finecut.models.pretrained import read_state_dict
from finecut.models.vit import (
    Attention,
    resize_pos_embed,
    window_partition,
    window_unpartition,
)

#: Prefix of the image encoder's tensors in an official SAM checkpoint (``sam_vit_b_01ec64.pth`` and siblings).
SAM_ENCODER_PREFIX = "image_encoder."


@dataclass
class SamViTConfig:
    """Architecture of :class:`SamViTAdapterEncoder`; the defaults are SAM ViT-B's (``build_sam_vit_b``).

    ``adapter_dim`` is the adapters' bottleneck width (0: no adapters); ``adapter_kernel`` the kernel of their first
    conv (1 or 3; the second is 1x1)."""

    img_size: int = 1024
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    out_channels: int = 256
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    use_rel_pos: bool = True
    adapter_dim: int = 64
    adapter_kernel: int = 1
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        for name in ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "out_channels"):
            if int(getattr(self, name)) < 1:
                raise FinecutError(f"SAM ViT {name} must be >= 1, got {getattr(self, name)}")
        if self.img_size % self.patch_size:
            raise FinecutError(f"SAM ViT img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise FinecutError(f"SAM ViT embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.window_size < 0 or self.adapter_dim < 0 or self.adapter_kernel not in (1, 3):
            raise FinecutError("SAM ViT window_size and adapter_dim must be >= 0, adapter_kernel 1 or 3")
        self.global_attn_indexes = tuple(int(i) for i in self.global_attn_indexes)
        bad = [i for i in self.global_attn_indexes if not 0 <= i < self.depth]
        if bad:
            raise FinecutError(f"SAM ViT global_attn_indexes {bad} out of range for depth {self.depth}")

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["global_attn_indexes"] = list(self.global_attn_indexes)
        return doc


class SamMLP(nn.Module):
    """SAM's ``MLPBlock``: ``lin1 -> GELU -> lin2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class SamBlock(nn.Module):
    """SAM's transformer block: windowed (zero-padded, padding not masked, as SAM) or global attention + MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int, use_rel_pos: bool,
                 grid_size: int) -> None:
        super().__init__()
        self.window_size = int(window_size)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        rel_size = (window_size, window_size) if window_size > 0 else (grid_size, grid_size)
        self.attn = Attention(dim, num_heads, qkv_bias=True, use_rel_pos=use_rel_pos, rel_pos_size=rel_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = SamMLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            hw = (x.shape[1], x.shape[2])
            x, padded = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(x), self.window_size, padded, hw)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class ConvAdapter(nn.Module):
    """FocalClick-XL's adapter on a ``(B, H, W, C)`` token grid: ``x + up(GELU(down(x)))`` with convs ``down``
    (C -> ``hidden``, ``kernel`` x ``kernel``) and ``up`` (1x1, zero-initialised: the adapter starts as identity)."""

    def __init__(self, dim: int, hidden: int, kernel: int = 1) -> None:
        super().__init__()
        self.down = nn.Conv2d(dim, hidden, kernel, padding=kernel // 2)
        self.act = nn.GELU()
        self.up = nn.Conv2d(hidden, dim, 1)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.act(self.down(x.permute(0, 3, 1, 2))))
        return x + y.permute(0, 2, 3, 1)


class SamViTAdapterEncoder(nn.Module):
    """SAM's image encoder (:class:`SamViTConfig`, ViT-B by default) with an adapter after every block.

    ``forward(image) -> (B, out_channels, ceil(H/16), ceil(W/16))``: image ImageNet-normalised, any size (padded
    to a multiple of the patch size at the bottom / right). ``stride`` = 16, ``out_channels`` = 256 for SAM's neck.
    The whole image is fed as SAM does (:attr:`input_size` = ``img_size`` on the longest side, :attr:`pad_square`).
    """

    pad_square = True

    def __init__(self, config: SamViTConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        cfg = config if config is not None else SamViTConfig(**kwargs)
        self.config = cfg
        self.stride = cfg.patch_size
        self.out_channels = cfg.out_channels
        grid = cfg.grid_size
        self.patch_embed = _PatchEmbed(cfg.patch_size, cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, cfg.embed_dim))
        global_indexes = set(cfg.global_attn_indexes)
        self.blocks = nn.ModuleList(
            SamBlock(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, 0 if i in global_indexes else cfg.window_size,
                     cfg.use_rel_pos, grid)
            for i in range(cfg.depth)
        )
        self.adapters = nn.ModuleList(
            ConvAdapter(cfg.embed_dim, cfg.adapter_dim, cfg.adapter_kernel) for _ in range(cfg.depth)
        ) if cfg.adapter_dim > 0 else None
        self.neck = nn.Sequential(
            nn.Conv2d(cfg.embed_dim, cfg.out_channels, 1, bias=False),
            LayerNorm2d(cfg.out_channels, impl="explicit"),
            nn.Conv2d(cfg.out_channels, cfg.out_channels, 3, padding=1, bias=False),
            LayerNorm2d(cfg.out_channels, impl="explicit"),
        )

    @property
    def input_size(self) -> int:
        return self.config.img_size

    def encoder_keys(self) -> list[str]:
        """The state-dict keys SAM's ``image_encoder`` has (all but the adapters')."""
        return [k for k in self.state_dict() if not k.startswith("adapters.")]

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [] if self.adapters is None else list(self.adapters.parameters())

    def freeze_encoder(self) -> None:
        """Train only the adapters (the paper's setting): every SAM parameter gets ``requires_grad = False``."""
        adapters = {id(p) for p in self.adapter_parameters()}
        for p in self.parameters():
            p.requires_grad_(id(p) in adapters)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        p = self.config.patch_size
        h, w = image.shape[-2:]
        pad_h, pad_w = (-h) % p, (-w) % p
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h))
        x = self.patch_embed(image)
        x = x + resize_pos_embed(self.pos_embed, (x.shape[1], x.shape[2]))
        for index, block in enumerate(self.blocks):
            if self.config.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if self.adapters is not None:
                x = self.adapters[index](x)
        return self.neck(x.permute(0, 3, 1, 2))


class _PatchEmbed(nn.Module):
    """SAM's ``PatchEmbed``: ``proj`` conv with kernel = stride = patch size, output ``(B, h, w, C)``."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


# ------------------------------------------------------------------------------------------- official SAM weights


@dataclass
class SamLoadReport:
    """What :func:`load_sam_image_encoder` did: SAM tensors loaded (``resized``: position tables interpolated to
    this encoder's sizes), encoder keys left at init (adapters), checkpoint tensors not used (the prompt encoder,
    the mask decoder)."""

    loaded: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    left_at_init: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"loaded {len(self.loaded)} SAM image-encoder tensors ({len(self.resized)} resized), "
                f"{len(self.left_at_init)} left at init (adapters), {len(self.unused)} checkpoint tensors unused")


def sam_encoder_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image encoder's tensors of a SAM state dict, without the ``image_encoder.`` prefix (a state dict that
    has no such prefix is taken as the encoder's own)."""
    prefixed = {k[len(SAM_ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(SAM_ENCODER_PREFIX)}
    return prefixed if prefixed else dict(state)


def _resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """A ``(L, d)`` relative position table linearly interpolated to ``(length, d)`` (as SAM's ``get_rel_pos``)."""
    resized = F.interpolate(table.float().T[None], size=length, mode="linear")
    return resized[0].T.to(table.dtype).contiguous()


def convert_sam_state_dict(state: Mapping[str, torch.Tensor], model: SamViTAdapterEncoder
                           ) -> tuple[dict[str, torch.Tensor], SamLoadReport]:
    """Map an official SAM checkpoint (or its ``image_encoder`` part) onto ``model``'s names and shapes.

    Names are SAM's own, so the mapping is the prefix; the position embedding and the relative position tables are
    interpolated when ``model`` was built for another input size or window. Every SAM encoder tensor the model has
    must be present and of a compatible shape, else :class:`FinecutError` (the file is not a SAM checkpoint of this
    width / depth)."""
    encoder = sam_encoder_state(state)
    target = model.state_dict()
    report = SamLoadReport()
    out: dict[str, torch.Tensor] = {}
    wrong: list[str] = []
    for key in model.encoder_keys():
        value = encoder.get(key)
        if value is None:
            continue
        want = tuple(target[key].shape)
        if tuple(value.shape) != want:
            if key == "pos_embed" and value.ndim == 4 and value.shape[-1] == want[-1]:
                value = resize_pos_embed(value, (want[1], want[2])).contiguous()
                report.resized.append(key)
            elif "rel_pos" in key and value.ndim == 2 and value.shape[1] == want[1]:
                value = _resize_rel_pos(value, want[0])
                report.resized.append(key)
            else:
                wrong.append(f"{key}: {tuple(value.shape)} vs {want}")
                continue
        out[key] = value
    missing = [k for k in model.encoder_keys() if k not in out and k not in {w.split(":")[0] for w in wrong}]
    if wrong or missing:
        what = f"shape mismatches {wrong[:3]}" if wrong else f"missing {missing[:3]}"
        raise FinecutError(f"not a SAM image encoder of this architecture ({len(wrong)} shape mismatches, "
                           f"{len(missing)} missing tensors; {what})")
    report.loaded = sorted(out)
    report.resized.sort()
    report.left_at_init = sorted(k for k in target if k not in out)
    prefixed = any(k.startswith(SAM_ENCODER_PREFIX) for k in state)
    report.unused = sorted(k for k in state if not (prefixed and k.startswith(SAM_ENCODER_PREFIX)
                                                    and k[len(SAM_ENCODER_PREFIX):] in out)
                           and not (not prefixed and k in out))
    return out, report


def load_sam_image_encoder(model: SamViTAdapterEncoder,
                           source: str | os.PathLike[str] | Mapping[str, torch.Tensor]) -> SamLoadReport:
    """Load an official SAM checkpoint's image encoder into ``model`` (adapters stay at their initialisation).

    ``source`` is a local file (``sam_vit_b_01ec64.pth``, read with ``weights_only`` torch loading, or a
    ``.safetensors``) or an already read state dict; nothing is downloaded."""
    if isinstance(source, Mapping):
        state = dict(source)
    else:
        state = read_state_dict(source)
    out, report = convert_sam_state_dict(state, model)
    missing, unexpected = model.load_state_dict(out, strict=False)
    assert not unexpected and sorted(missing) == report.left_at_init, (missing, unexpected)
    return report


def sam_vit_config(variant: str = "b", **overrides: Any) -> SamViTConfig:
    """SAM's image-encoder settings by variant (``b``, ``l``, ``h``), with overrides (e.g. ``adapter_dim``)."""
    variants: dict[str, dict[str, Any]] = {
        "b": {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": (2, 5, 8, 11)},
        "l": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "global_attn_indexes": (5, 11, 17, 23)},
        "h": {"embed_dim": 1280, "depth": 32, "num_heads": 16, "global_attn_indexes": (7, 15, 23, 31)},
    }
    if variant not in variants:
        raise FinecutError(f"unknown SAM variant {variant!r}; known: {sorted(variants)}")
    return SamViTConfig(**{**variants[variant], **overrides})


__all__ = [
    "SAM_ENCODER_PREFIX",
    "ConvAdapter",
    "SamLoadReport",
    "SamViTAdapterEncoder",
    "SamViTConfig",
    "convert_sam_state_dict",
    "load_sam_image_encoder",
    "sam_encoder_state",
    "sam_vit_config",
]
