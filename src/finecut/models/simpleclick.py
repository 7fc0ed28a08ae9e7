"""SimpleClick (Liu et al., ICCV 2023): a plain ViT for click-based interactive segmentation.

* Backbone: plain ViT (:mod:`finecut.models.vit`), windowed attention with the last block of each quarter global,
  absolute position embedding resized (bicubic) to the input grid.
* Symmetric patch embedding: the prompt maps ``[previous_mask, positive, negative, (tolerant)]`` go through a conv
  with the same patch size, stride and width as the image patch embedding; the two token maps are added.
* Simple feature pyramid (ViTDet) from the last feature map only: 1/4 (two deconvs), 1/8 (one deconv), 1/16
  (identity), 1/32 (max-pool), each followed by 1x1 + 3x3 convs with LayerNorm; or, with ``neck="simpleclick"``,
  the official release's ``SimpleFPN`` (:class:`SimpleClickFPN`, GroupNorm), which the released weights need.
* All-MLP head (:class:`finecut.models.heads.SimpleClickHead`): logits at 1/4, bilinearly upsampled to the input.
  Official checkpoints load through :mod:`finecut.models.official`.

Variants (``variant=``): ``xtiny`` (160 dim, 8 blocks, 4 heads), ``b`` (768/12/12), ``l`` (1024/24/16),
``h`` (1280/32/16, patch 14). Built by the registry: ``build_model({"arch": "simpleclick", "variant": "b"})``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from finecut.errors import FinecutError
from finecut.models.pretrained import LoadReport, load_matching, read_state_dict
from finecut.model_inputs import InputSpec, leading_layout
from finecut.models.heads import HEAD_UPSAMPLE, SimpleClickHead
from finecut.models.layers import SimpleFeaturePyramid
from finecut.models.vit import PatchEmbed, ViTConfig, VisionTransformer, convert_mae_state_dict, to_2tuple


@dataclass(frozen=True)
class _Variant:
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    window_size: int
    neck_dim: int
    head_dim: int


#: Architecture presets. Windows are half the 448-px token grid (SimpleClick splits the grid into 2x2 windows).
SIMPLECLICK_VARIANTS: dict[str, _Variant] = {
    "xtiny": _Variant(16, 160, 8, 4, 14, 128, 128),
    "b": _Variant(16, 768, 12, 12, 14, 256, 256),
    "l": _Variant(16, 1024, 24, 16, 14, 256, 256),
    "h": _Variant(14, 1280, 32, 16, 16, 256, 256),
}


@dataclass
class SimpleClickConfig:
    """Full architecture of a SimpleClick model; ``None`` fields take the variant's preset."""

    variant: str = "xtiny"
    img_size: tuple[int, int] = (448, 448)
    patch_size: tuple[int, int] | None = None
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float = 4.0
    window_size: int | None = None
    global_attn_indexes: tuple[int, ...] | None = None
    use_rel_pos: bool = False
    drop_path_rate: float = 0.0
    neck_dims: tuple[int, int, int, int] | None = None
    head_dim: int | None = None
    head_dropout: float = 0.1
    prompt_channels: int = 3
    grad_checkpointing: bool = False
    #: ``"vitdet"`` (finecut's ViTDet pyramid, LayerNorm) or ``"simpleclick"`` (the official ``SimpleFPN``, GroupNorm).
    neck: str = "vitdet"
    #: The official head's ``upsample`` option: ``"x1"``, ``"x2"`` or ``"x4"``.
    head_upsample: str = "x1"
    #: ``align_corners`` of the final upsampling of the logits to the input (the official model uses True).
    align_corners: bool = False

    def __post_init__(self) -> None:
        if self.variant not in SIMPLECLICK_VARIANTS:
            raise FinecutError(
                f"unknown SimpleClick variant {self.variant!r}; known: {', '.join(SIMPLECLICK_VARIANTS)}"
            )
        preset = SIMPLECLICK_VARIANTS[self.variant]
        self.img_size = to_2tuple(self.img_size)
        self.patch_size = to_2tuple(self.patch_size if self.patch_size is not None else preset.patch_size)
        for name in ("embed_dim", "depth", "num_heads", "window_size", "head_dim"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(preset, name))
        if self.neck_dims is None:
            self.neck_dims = (preset.neck_dim,) * 4
        elif isinstance(self.neck_dims, int):
            self.neck_dims = (int(self.neck_dims),) * 4
        self.neck_dims = tuple(int(d) for d in self.neck_dims)  # type: ignore[assignment]
        if len(self.neck_dims) != 4 or min(self.neck_dims) < 1:
            raise FinecutError(f"neck_dims must be 4 positive ints, got {self.neck_dims}")
        if self.prompt_channels < 1:
            raise FinecutError(f"prompt_channels must be >= 1, got {self.prompt_channels}")
        if self.embed_dim < 4:  # type: ignore[operator]
            raise FinecutError(f"embed_dim must be >= 4 (the 1/4 branch halves it twice), got {self.embed_dim}")
        if self.global_attn_indexes is not None:
            self.global_attn_indexes = tuple(int(i) for i in self.global_attn_indexes)
        if self.neck not in ("vitdet", "simpleclick"):
            raise FinecutError(f"SimpleClick neck must be 'vitdet' or 'simpleclick', got {self.neck!r}")
        if self.head_upsample not in HEAD_UPSAMPLE:
            raise FinecutError(f"SimpleClick head_upsample must be one of {list(HEAD_UPSAMPLE)}, "
                               f"got {self.head_upsample!r}")

    def vit_config(self) -> ViTConfig:
        return ViTConfig(
            img_size=self.img_size,
            patch_size=self.patch_size,  # type: ignore[arg-type]
            in_chans=3,
            embed_dim=int(self.embed_dim),  # type: ignore[arg-type]
            depth=int(self.depth),  # type: ignore[arg-type]
            num_heads=int(self.num_heads),  # type: ignore[arg-type]
            mlp_ratio=self.mlp_ratio,
            window_size=int(self.window_size),  # type: ignore[arg-type]
            global_attn_indexes=self.global_attn_indexes,
            use_rel_pos=self.use_rel_pos,
            drop_path_rate=self.drop_path_rate,
            grad_checkpointing=self.grad_checkpointing,
        )


def _gn_conv(cin: int, cout: int, kernel: int = 1, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride=stride), nn.GroupNorm(1, cout)]


class SimpleClickFPN(nn.Module):
    """The official SimpleClick pyramid (``SimpleFPN``): from one stride-``p`` map, strides p/4 (two 2x transposed
    convs), p/2 (one), p (1x1 conv) and 2p (a 2x2 stride-2 conv), each ending in a 1x1 conv to ``out_dims[i]``,
    GroupNorm(1) and GELU. Intermediate widths follow the official rule (e.g. ``max(2 * out_dims[0], in_dim // 2)``);
    submodule names (``down_4``, ``down_8``, ``down_16``, ``down_32``) match the released checkpoints."""

    def __init__(self, in_dim: int, out_dims: tuple[int, int, int, int]) -> None:
        super().__init__()
        o4, o8, o16, o32 = out_dims
        c4 = max(2 * o4, in_dim // 2)
        c8 = max(o8, in_dim // 2)
        c32 = max(o32, 2 * in_dim)
        self.down_4 = nn.Sequential(
            nn.ConvTranspose2d(in_dim, c4, 2, stride=2), nn.GroupNorm(1, c4), nn.GELU(),
            nn.ConvTranspose2d(c4, c4 // 2, 2, stride=2), nn.GroupNorm(1, c4 // 2),
            *_gn_conv(c4 // 2, o4), nn.GELU(),
        )
        self.down_8 = nn.Sequential(
            nn.ConvTranspose2d(in_dim, c8, 2, stride=2), nn.GroupNorm(1, c8), *_gn_conv(c8, o8), nn.GELU()
        )
        self.down_16 = nn.Sequential(*_gn_conv(in_dim, o16), nn.GELU())
        self.down_32 = nn.Sequential(*_gn_conv(in_dim, c32, 2, 2), *_gn_conv(c32, o32), nn.GELU())
        self.out_channels = list(out_dims)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.down_4(x), self.down_8(x), self.down_16(x), self.down_32(x)]


class SimpleClick(nn.Module):
    """SimpleClick interactive segmentation model.

    ``forward(image (B,3,H,W) ImageNet-normalised, prompt_maps (B,P,H,W)) -> {"logits": (B,1,H,W),
    "features": (B,C,H',W')}`` with ``P == prompt_channels`` (``[previous_mask, positive, negative, (tolerant)]``)
    and ``features`` the fused head map at 1/4 of the (patch-padded) input. Any H, W work: inputs are zero-padded to
    a multiple of the patch size and the output cropped back.
    """

    def __init__(self, config: SimpleClickConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        cfg = config if config is not None else SimpleClickConfig(**kwargs)
        self.config = cfg
        self.prompt_channels = cfg.prompt_channels
        vit_cfg = cfg.vit_config()
        self.patch_size = vit_cfg.patch_size
        self.backbone = VisionTransformer(vit_cfg)
        self.prompt_embed = PatchEmbed(vit_cfg.patch_size, cfg.prompt_channels, vit_cfg.embed_dim)
        w = self.prompt_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.prompt_embed.proj.bias)
        if cfg.neck == "simpleclick":
            self.neck: nn.Module = SimpleClickFPN(vit_cfg.embed_dim, cfg.neck_dims)  # type: ignore[arg-type]
        else:  # ViTDet's pyramid, with SimpleClick's key layout, LayerNorm and initialisation
            self.neck = SimpleFeaturePyramid(vit_cfg.embed_dim, cfg.neck_dims,  # type: ignore[arg-type]
                                             keys="split", norm="fused", init="xavier_fill")
        head_dim = int(cfg.head_dim)  # type: ignore[arg-type]
        self.head = SimpleClickHead(self.neck.out_channels, head_dim, cfg.head_dropout, upsample=cfg.head_upsample)
        #: Channels and stride (w.r.t. the patch-padded input) of ``forward(...)["features"]``.
        self.feature_channels = head_dim
        self.feature_stride = 4 // HEAD_UPSAMPLE[cfg.head_upsample]

    @property
    def input_spec(self) -> InputSpec:
        """The prompt maps are the first ``prompt_channels`` of ``[previous_mask, positive, negative, tolerant]``."""
        return InputSpec(leading_layout(self.prompt_channels))

    @property
    def grad_checkpointing(self) -> bool:
        return self.backbone.grad_checkpointing

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute transformer blocks in the backward pass (saves activation memory for the L/H variants)."""
        self.backbone.grad_checkpointing = bool(enabled)
        self.config.grad_checkpointing = bool(enabled)

    def arch_config(self) -> dict[str, Any]:
        """The JSON-serialisable ``{"arch": "simpleclick", ...}`` that rebuilds this architecture."""
        out: dict[str, Any] = {"arch": "simpleclick"}
        for key, value in asdict(self.config).items():
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def forward(self, image: torch.Tensor, prompt_maps: torch.Tensor) -> dict[str, torch.Tensor]:
        if image.ndim != 4 or image.shape[1] != 3:
            raise FinecutError(f"SimpleClick expects an image of shape (B, 3, H, W), got {tuple(image.shape)}")
        if prompt_maps.ndim != 4 or prompt_maps.shape[1] != self.prompt_channels:
            raise FinecutError(
                f"SimpleClick expects prompt maps of shape (B, {self.prompt_channels}, H, W), "
                f"got {tuple(prompt_maps.shape)}"
            )
        if prompt_maps.shape[0] != image.shape[0] or prompt_maps.shape[-2:] != image.shape[-2:]:
            raise FinecutError(
                f"prompt maps {tuple(prompt_maps.shape)} do not match the image {tuple(image.shape)} in batch/size"
            )
        h, w = image.shape[-2:]
        ph, pw = self.patch_size
        pad_h, pad_w = (-h) % ph, (-w) % pw
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h))
            prompt_maps = F.pad(prompt_maps, (0, pad_w, 0, pad_h))
        prompt_tokens = self.prompt_embed(prompt_maps.to(image.dtype))
        feats = self.backbone(image, prompt_tokens)
        logits, features = self.head(self.neck(feats))
        logits = F.interpolate(logits, size=(h + pad_h, w + pad_w), mode="bilinear",
                               align_corners=self.config.align_corners)
        return {"logits": logits[:, :, :h, :w], "features": features}

    def load_pretrained(self, path: str | os.PathLike[str]) -> LoadReport:
        """Load weights from a local file: an MAE / timm ViT checkpoint (backbone only), an official SimpleClick
        checkpoint (backbone, prompt embedding and, when the widths match, head), or a finecut state dict.
        Position embeddings are resized to ``img_size``; extra prompt channels start at zero. Never downloads."""
        state = read_state_dict(path)
        target = self.state_dict()
        prefix = "backbone." if any(k.startswith("backbone.") for k in state) else ""
        backbone_keys = ("patch_embed.", "pos_embed", "blocks.")
        backbone_state = {
            k[len(prefix) :]: v
            for k, v in state.items()
            if k.startswith(prefix) and k[len(prefix) :].startswith(backbone_keys)
        }
        mapped: dict[str, torch.Tensor] = {}
        consumed: set[str] = set()
        for key, value in convert_mae_state_dict(backbone_state, self.backbone).items():
            mapped[f"backbone.{key}"] = value
            consumed.add(prefix + key)
        for key, value in state.items():
            if key in consumed or (key.startswith(prefix) and key[len(prefix) :] in backbone_state):
                continue
            name = key.replace("patch_embed_coords.", "prompt_embed.")
            if name == "prompt_embed.proj.weight" and name in target and value.shape != target[name].shape:
                value = _adapt_in_channels(value, target[name])
            if name in target and target[name].shape == value.shape:
                mapped[name] = value
                consumed.add(key)
        if not any(k.startswith("backbone.blocks.") for k in mapped):
            raise FinecutError(f"{path}: no transformer block weights match SimpleClick-{self.config.variant}")
        report = load_matching(self, mapped, source=path)
        report.unexpected = sorted(set(state) - consumed)
        return report


def _adapt_in_channels(weight: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Fit a conv weight with another number of input channels: copy the shared ones, zero the others."""
    if weight.shape[0] != like.shape[0] or weight.shape[2:] != like.shape[2:]:
        return weight
    out = torch.zeros_like(like)
    n = min(weight.shape[1], like.shape[1])
    out[:, :n] = weight[:, :n]
    return out


def build_simpleclick(
    variant: str = "xtiny",
    pretrained: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> SimpleClick:
    """Registry builder: ``{"arch": "simpleclick", "variant": "b", "img_size": 448, "prompt_channels": 3, ...}``.

    ``overrides`` are :class:`SimpleClickConfig` fields. ``pretrained`` (a local MAE or SimpleClick weights file) is
    loaded after construction; it is not part of the architecture config.
    """
    known = set(SimpleClickConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise FinecutError(f"unknown SimpleClick option(s) {unknown}; known: {', '.join(sorted(known))}")
    model = SimpleClick(SimpleClickConfig(variant=variant, **overrides))
    if pretrained is not None:
        model.load_pretrained(pretrained)
    return model


__all__ = [
    "SIMPLECLICK_VARIANTS",
    "SimpleClick",
    "SimpleClickConfig",
    "SimpleClickFPN",
    "SimpleFeaturePyramid",
    "build_simpleclick",
]
