"""NTClick's two networks: ECP (Explicit Coarse Perception) and HRR (High Resolution Refine).

**ECP** (``arch="ntclick_ecp"``) — a plain ViT (:class:`finecut.models.vit.VisionTransformer`) at reduced resolution;
the prompt maps are patch-embedded and added to the image patch embedding (SimpleClick's scheme); the decoder passes
the last feature map through four conv groups (ViTDet's simple feature pyramid: strides 4, 8, 16, 32 with different
widths), upsamples them to stride 4, concatenates, and an MLP (1×1 convs) predicts the 3-class FBU map.
``forward(image, prompt_maps) -> {"logits": (B, 3, H, W), "features": (B, C, H/16, W/16)}`` with ``image``
ImageNet-normalised RGB and ``prompt_maps`` ``[previous_mask, positive, negative, tolerant]`` (``prompt_channels=4``,
the default, as the other interactive models) or ``[positive, negative, tolerant]`` (``prompt_channels=3``, the
paper's 3-channel disk map). Logit channels follow :data:`finecut.fbu.FBU_CLASSES` (background, foreground,
uncertain). Inputs of any size work (padded to a multiple of 32 inside, position embedding resized).

**HRR** (``arch="ntclick_hrr"``) — a plain ViT with patch 16 whose blocks use neighborhood attention (window
``kernel_size``) and grid attention (interval ``grid_interval`` = 8) (``block_pattern``: ``"alternate"`` — even blocks
neighborhood, odd blocks grid; ``"both"`` — each block has a neighborhood and a grid attention sub-layer; or a single
kind for every block, ``"global"`` being the memory baseline). Image and FBU map are patch-embedded separately and
summed; a depthwise 3×3 conv adds position information (no absolute embedding: HRR runs at dynamic resolution). The
decoder extracts low-level RGB features at strides 8, 4, 2 and 1 with four conv groups, and four times upsamples the
running map ×2 (stride 16 -> 1) and fuses it with the low-level map of that size; a final conv group predicts the mask
logit. ``forward(image, fbu) -> {"logits": (B, 1, H, W), "features": (B, C, h, w)}`` with ``image`` ImageNet-normalised
RGB at full resolution and ``fbu`` the (B, 3, H, W) FBU probabilities or one-hot map in
:data:`~finecut.fbu.FBU_CLASSES` order. Inside, an image whose long side exceeds
``max_side`` (4096) is downsampled to it (aspect kept) and the logits upsampled back; the working image is padded
(never resized) to a multiple of ``patch_size × grid_interval`` (128) and the logits cropped back. With autograd off
(``torch.no_grad`` / ``torch.inference_mode``) the full-resolution decoder stage runs in horizontal stripes with a
halo, which gives the same result with a fraction of the memory; ``forward(..., region=mask)`` goes further and runs
the two finest decoder stages (strides 2 and 1, about half the HRR's time at 2048²) only on the 128-pixel tiles that
hold a pixel of ``region`` (the uncertain pixels the caller will read), each run of adjacent tiles with a halo wider
than those stages' receptive field, so the logits inside ``region`` are the full pass's and the others are
:attr:`NTClickHRR.SKIPPED_LOGIT`. With ``click_channels=3`` (a departure: the paper's HRR sees no clicks, so on a thin
structure whose uncertain region already covers the missed part a later click cannot change its answer) the HRR also
takes ``clicks``, the [positive, negative, tolerant] disk maps at full resolution, patch-embedded and summed with the
other two (zero-initialised: a click-blind HRR's weights start it unchanged).

**Both** (``arch="ntclick"``) — :class:`NTClickNet`, a container with ``.ecp`` and ``.hrr`` children, so one checkpoint
(``{"arch": "ntclick", "ecp": {...}, "hrr": {...}}``) holds the whole model (the ``ecp`` part may name another ECP
architecture, :data:`ECP_ARCHS`: ``{"arch": "ntclick_ecp_effnet", ...}``, :mod:`finecut.models.ntclick_ecp_effnet`); the inference engine is
:class:`finecut.pipelines.ntclick.NTClickEngine` (checkpoint ``"engine": "ntclick"``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from finecut.errors import FinecutError
from finecut.model_inputs import InputSpec, trailing_layout
from finecut.models.attention import TokenAttention2d
from finecut.models.heads import MLPHead
from finecut.models.layers import SimpleFeaturePyramid
from finecut.models.ntclick_ecp_effnet import build_ntclick_ecp_effnet
from finecut.models.vit import Mlp, PatchEmbed, ViTConfig, VisionTransformer

BLOCK_PATTERNS = ("alternate", "both", "neighborhood", "grid", "global")


def _config_from_dict(cls: type, values: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise FinecutError(f"unknown {cls.__name__} option(s) {unknown}; known: {', '.join(sorted(known))}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**converted)


def _config_dict(arch: str, config: Any) -> dict[str, Any]:
    return {"arch": arch, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}}


def _check_nchw(tensor: torch.Tensor, channels: int, what: str) -> None:
    if tensor.ndim != 4 or tensor.shape[1] != channels:
        raise FinecutError(f"{what} must have shape (B, {channels}, H, W), got {tuple(tensor.shape)}")


def _pad_to_multiple(x: torch.Tensor, multiple: int, value: float = 0.0) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    return F.pad(x, (0, pw, 0, ph), value=value) if ph or pw else x


# ---------------------------------------------------------------------------------------------------------------- ECP


@dataclass(frozen=True)
class ECPConfig:
    """Architecture of the ECP network (defaults: a ViT-Tiny-width backbone at 448², CPU-trainable)."""

    img_size: int = 448
    patch_size: int = 16
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    window_size: int = 0  # 0: every block global (cheap at 448² = 28² tokens)
    prompt_channels: int = 4
    pyramid_channels: tuple[int, int, int, int] = (48, 96, 192, 384)  # strides 4, 8, 16, 32
    head_channels: int = 96
    num_classes: int = 3
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.prompt_channels not in (3, 4):
            raise FinecutError(
                f"ECP prompt_channels must be 3 ([positive, negative, tolerant]) or 4 "
                f"([previous_mask, positive, negative, tolerant]), got {self.prompt_channels}"
            )
        if len(self.pyramid_channels) != 4:
            raise FinecutError(f"ECP pyramid_channels needs 4 widths, got {self.pyramid_channels}")
        if self.embed_dim % 4:
            raise FinecutError(f"ECP embed_dim must be divisible by 4, got {self.embed_dim}")
        if self.img_size % self.patch_size:
            raise FinecutError(f"ECP img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def input_multiple(self) -> int:
        """Input sides that are multiples of this (two patches: the pyramid's stride-32 level) need no padding.

        Other sides are zero-padded inside :meth:`NTClickECP.forward`; the ECP never sees such padding in training
        (square ``img_size`` views), and it can change the prediction far from the pad (see the NTClick pipeline).
        """
        return 2 * self.patch_size


class NTClickECP(nn.Module):
    """Explicit Coarse Perception: image + prompt maps -> 3-class FBU logits (see the module docstring)."""

    def __init__(self, config: ECPConfig | None = None) -> None:
        super().__init__()
        cfg = config or ECPConfig()
        self.config = cfg
        self.backbone = VisionTransformer(ViTConfig(
            img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth,
            num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, window_size=cfg.window_size,
            drop_path_rate=cfg.drop_path_rate,
        ))
        self.prompt_embed = PatchEmbed(cfg.patch_size, cfg.prompt_channels, cfg.embed_dim)
        # ViTDet's pyramid, with the ECP's key layout, LayerNorm and initialisation
        self.pyramid = SimpleFeaturePyramid(cfg.embed_dim, cfg.pyramid_channels, keys="grouped", norm="explicit",
                                            init="default")
        self.head = MLPHead(cfg.pyramid_channels, cfg.head_channels, cfg.num_classes)

    @property
    def input_spec(self) -> InputSpec:
        """The prompt maps are the last ``prompt_channels`` of ``[previous_mask, positive, negative, tolerant]``:
        all four, or the paper's ``[positive, negative, tolerant]``."""
        return InputSpec(trailing_layout(self.config.prompt_channels))

    def arch_config(self) -> dict[str, Any]:
        """The ``{"arch": "ntclick_ecp", ...}`` dict that rebuilds this model through the registry."""
        return _config_dict("ntclick_ecp", self.config)

    def forward(self, image: torch.Tensor, prompt_maps: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.config
        _check_nchw(image, 3, "ECP image")
        _check_nchw(prompt_maps, cfg.prompt_channels, "ECP prompt maps")
        if prompt_maps.shape[-2:] != image.shape[-2:] or prompt_maps.shape[0] != image.shape[0]:
            raise FinecutError(
                f"ECP prompt maps {tuple(prompt_maps.shape)} do not match the image {tuple(image.shape)}"
            )
        height, width = image.shape[-2:]
        multiple = cfg.input_multiple
        image_p = _pad_to_multiple(image, multiple)
        prompts_p = _pad_to_multiple(prompt_maps.to(image.dtype), multiple)
        features = self.backbone(image_p, extra_tokens=self.prompt_embed(prompts_p))
        logits = self.head(self.pyramid(features))[0]
        logits = F.interpolate(logits, size=image_p.shape[-2:], mode="bilinear", align_corners=False)
        return {"logits": logits[:, :, :height, :width], "features": features}


def build_ntclick_ecp(**config: Any) -> NTClickECP:
    return NTClickECP(_config_from_dict(ECPConfig, config))


# ---------------------------------------------------------------------------------------------------------------- HRR


@dataclass(frozen=True)
class HRRConfig:
    """Architecture of the HRR network (defaults: small enough to train on a CPU, 4096² inference within 24 GiB).

    ``low_channels`` are the widths of the low-level RGB groups at strides (1, 2, 4, 8); ``fuse_channels`` the widths
    of the four fusion stages at strides (8, 4, 2, 1). ``stripe_rows`` (0 = automatic) sets the stripe height of the
    striped full-resolution stage used when autograd is off; ``stripe_inference=False`` disables striping.
    ``grad_checkpointing`` recomputes each backbone block in the backward pass (less training memory).
    ``click_channels`` > 0 (a departure from the paper, whose HRR sees no clicks) adds a click input: that many
    full-resolution click-disk maps ([positive, negative, tolerant]) patch-embedded beside the FBU map, zero-initialised
    so that a click-blind HRR's weights start it unchanged.
    """

    patch_size: int = 16
    embed_dim: int = 128
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    kernel_size: int = 7
    grid_interval: int = 8
    block_pattern: str = "alternate"
    rel_pos_bias: bool = True
    fused_attention: bool = True
    low_channels: tuple[int, int, int, int] = (8, 16, 32, 48)
    fuse_channels: tuple[int, int, int, int] = (64, 32, 16, 8)
    max_side: int = 4096
    stripe_inference: bool = True
    stripe_rows: int = 0
    grad_checkpointing: bool = False
    click_channels: int = 0

    def __post_init__(self) -> None:
        if self.click_channels not in (0, 3):
            raise FinecutError(f"HRR click_channels must be 0 (no click input) or 3 ([positive, negative, tolerant]), "
                               f"got {self.click_channels}")
        if self.patch_size != 16:
            raise FinecutError(f"HRR's decoder has four x2 stages, so patch_size must be 16, got {self.patch_size}")
        if self.block_pattern not in BLOCK_PATTERNS:
            raise FinecutError(f"unknown HRR block_pattern {self.block_pattern!r}; use one of {BLOCK_PATTERNS}")
        if len(self.low_channels) != 4 or len(self.fuse_channels) != 4:
            raise FinecutError("HRR low_channels and fuse_channels need 4 widths each")
        if self.embed_dim % self.num_heads:
            raise FinecutError(f"HRR embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.max_side < self.pad_multiple:
            raise FinecutError(f"HRR max_side must be at least {self.pad_multiple}, got {self.max_side}")

    @property
    def pad_multiple(self) -> int:
        """Input sides are padded to a multiple of this (patch size × grid interval = 128)."""
        return self.patch_size * self.grid_interval

    def block_kinds(self, index: int) -> tuple[str, ...]:
        if self.block_pattern == "alternate":
            return ("neighborhood",) if index % 2 == 0 else ("grid",)
        if self.block_pattern == "both":
            return ("neighborhood", "grid")
        return (self.block_pattern,)


def working_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """Size HRR runs at: unchanged up to ``max_side``, else the long side becomes ``max_side`` (aspect kept)."""
    long_side = max(height, width)
    if long_side <= max_side:
        return height, width
    scale = max_side / long_side
    return (max_side if height == long_side else max(1, round(height * scale)),
            max_side if width == long_side else max(1, round(width * scale)))


def padded_size(height: int, width: int, multiple: int = 128) -> tuple[int, int]:
    """``(height, width)`` rounded up to multiples of ``multiple`` (1000×800 -> 1024×896 for 128)."""
    return math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple


class HRRBlock(nn.Module):
    """Pre-norm transformer block with one or more attention sub-layers (neighborhood / grid / global) and an MLP."""

    def __init__(self, dim: int, num_heads: int, kinds: tuple[str, ...], cfg: HRRConfig) -> None:
        super().__init__()
        self.kinds = kinds
        self.norms = nn.ModuleList(nn.LayerNorm(dim, eps=1e-6) for _ in kinds)
        self.attns = nn.ModuleList(
            TokenAttention2d(dim, num_heads, kind=kind, kernel_size=cfg.kernel_size, grid_interval=cfg.grid_interval,
                             rel_pos_bias=cfg.rel_pos_bias, fused=cfg.fused_attention)
            for kind in kinds
        )
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm, attn in zip(self.norms, self.attns):
            x = x + attn(norm(x))
        return x + self.mlp(self.norm_mlp(x))


def _low_level_group(stride: int, cout: int) -> nn.Sequential:
    """RGB -> features at ``stride``: a stride-``s`` patchify conv (3×3 conv at stride 1), ReLU, 3×3 conv, ReLU."""
    first = nn.Conv2d(3, cout, 3, padding=1) if stride == 1 else nn.Conv2d(3, cout, stride, stride)
    return nn.Sequential(first, nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))


class FuseStage(nn.Module):
    """Upsample ×2 and fuse with a low-level map: ``relu(conv3x3(cat(up2(conv1x1(x)), skip)))``.

    The 1×1 projection is applied before the bilinear upsampling (the two commute exactly), so the upsampled map has
    only ``cout`` channels.
    """

    def __init__(self, cin: int, skip_channels: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 1)
        self.fuse = nn.Sequential(nn.Conv2d(cout + skip_channels, cout, 3, padding=1), nn.ReLU(inplace=True))

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.proj(x), scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.upsample(x), skip], dim=1))


class NTClickHRR(nn.Module):
    """High Resolution Refine: full-resolution RGB + FBU map -> mask logits (see the module docstring)."""

    #: Rows of context on each side of a stripe of the full-resolution stage (receptive field is 4 rows).
    STRIPE_HALO = 6
    #: Target number of float elements held by one stripe's largest intermediate maps.
    STRIPE_ELEMENTS = 1 << 25
    #: Side (full-resolution pixels) of the square tiles of the region-restricted decoder; a multiple of 4 that
    #: divides the padding unit (128), so tiles never straddle the padded border.
    TILE = 128
    #: Full-resolution halo around each run of tiles: more than the reach of a run's cut edge into the stride-2 and
    #: stride-1 stages and the head (7 pixels: 8 already gives the full pass's logits bit for bit), and a multiple of
    #: 4 so the stride-4 and stride-2 grids stay aligned.
    TILE_HALO = 12
    #: Logit of the pixels the region-restricted decoder skips (sigmoid ≈ 1e-13): outside ``region``, never read.
    SKIPPED_LOGIT = -30.0

    def __init__(self, config: HRRConfig | None = None) -> None:
        super().__init__()
        cfg = config or HRRConfig()
        self.config = cfg
        dim = cfg.embed_dim
        self.patch_embed = nn.Conv2d(3, dim, cfg.patch_size, cfg.patch_size)
        self.fbu_embed = nn.Conv2d(3, dim, cfg.patch_size, cfg.patch_size)
        self.click_embed = (nn.Conv2d(cfg.click_channels, dim, cfg.patch_size, cfg.patch_size)
                            if cfg.click_channels else None)
        self.pos_conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.blocks = nn.ModuleList(HRRBlock(dim, cfg.num_heads, cfg.block_kinds(i), cfg) for i in range(cfg.depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        low1, low2, low4, low8 = cfg.low_channels
        f8, f4, f2, f1 = cfg.fuse_channels
        # low-level groups at strides 1, 2, 4, 8 and fusion stages at strides 8, 4, 2, 1
        self.low = nn.ModuleList(_low_level_group(s, c) for s, c in zip((1, 2, 4, 8), cfg.low_channels))
        self.stages = nn.ModuleList([
            FuseStage(dim, low8, f8), FuseStage(f8, low4, f4), FuseStage(f4, low2, f2), FuseStage(f2, low1, f1),
        ])
        self.head = nn.Sequential(nn.Conv2d(f1, f1, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(f1, 1, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ViT-style init for the blocks; He (fan-in, ReLU) init for the convolutional decoder.

        PyTorch's default conv init halves the signal at every conv + ReLU, so through the eight layers between the
        backbone and the output the backbone's gradient (the only path by which the FBU map reaches the mask) came out
        orders of magnitude smaller than the head's and the HRR learned next to nothing; He init keeps the signal's scale.
        """
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for part in (self.low, self.stages, self.head):
            for module in part.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.head[-1].weight, std=0.01)
        nn.init.zeros_(self.head[-1].bias)
        if self.click_embed is not None:  # starts as the click-blind HRR
            nn.init.zeros_(self.click_embed.weight)
            nn.init.zeros_(self.click_embed.bias)

    def arch_config(self) -> dict[str, Any]:
        """The ``{"arch": "ntclick_hrr", ...}`` dict that rebuilds this model through the registry."""
        return _config_dict("ntclick_hrr", self.config)

    # -- backbone ----------------------------------------------------------------------------------------------------

    def encode(self, image: torch.Tensor, fbu: torch.Tensor, clicks: torch.Tensor | None = None) -> torch.Tensor:
        """Padded image + FBU map (+ click maps, with ``click_channels``) -> backbone features (B, C, H/16, W/16)."""
        x = self.patch_embed(image) + self.fbu_embed(fbu)
        if self.click_embed is not None:  # no click maps: all-zero maps, whose embedding is the bias
            x = x + (self.click_embed(clicks) if clicks is not None else self.click_embed.bias[None, :, None, None])
        x = x + self.pos_conv(x)
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            if self.config.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.norm(x).permute(0, 3, 1, 2).contiguous()

    # -- decoder -----------------------------------------------------------------------------------------------------

    def decode(self, features: torch.Tensor, image: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
        """Backbone features + padded image -> logits (B, 1, H, W); with ``region`` ((B, H, W) bool, autograd off)
        the two finest stages run only on ``region``'s tiles (:meth:`_fine_stages_on_region`)."""
        # channels-last makes the thin full-resolution convolutions about twice as fast on CPU (oneDNN)
        image = image.contiguous(memory_format=torch.channels_last)
        x = features.contiguous(memory_format=torch.channels_last)
        sparse = region is not None and not torch.is_grad_enabled()
        for stage, low in zip(self.stages[:2 if sparse else 3], (self.low[3], self.low[2], self.low[1])):
            x = stage(x, low(image))
        if sparse:
            return self._fine_stages_on_region(x, image, region)
        if self.config.stripe_inference and not torch.is_grad_enabled():
            return self._final_stage_striped(x, image)
        return self.head(self.stages[3](x, self.low[0](image)))

    def tile_runs(self, region: torch.Tensor) -> list[tuple[int, int, int, int, int]]:
        """``(batch, y0, y1, x0, x1)`` full-resolution boxes: in each row of :attr:`TILE`-sized tiles, the runs of
        adjacent tiles holding a pixel of ``region`` ((B, H, W) bool; H and W multiples of :attr:`TILE`)."""
        batch, height, width = region.shape
        t = self.TILE
        occupied = region.reshape(batch, height // t, t, width // t, t).any(dim=4).any(dim=2).tolist()
        runs = []
        for b, rows in enumerate(occupied):
            for i, row in enumerate(rows):
                start = 0
                for filled, group in itertools.groupby(row):
                    end = start + len(list(group))
                    if filled:
                        runs.append((b, i * t, (i + 1) * t, start * t, end * t))
                    start = end
        return runs

    def _fine_stages_on_region(self, x4: torch.Tensor, image: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """The stride-2 and stride-1 stages + head on each run of :meth:`tile_runs` grown by :attr:`TILE_HALO`
        (clipped to the image, where zero padding is the full pass's own), cropped back: inside the runs the full
        pass's logits, elsewhere :attr:`SKIPPED_LOGIT`."""
        height, width = image.shape[-2:]
        out = image.new_full((image.shape[0], 1, height, width), self.SKIPPED_LOGIT)
        halo = self.TILE_HALO
        for b, y0, y1, x0, x1 in self.tile_runs(region):
            ay, by = max(0, y0 - halo), min(height, y1 + halo)
            ax, bx = max(0, x0 - halo), min(width, x1 + halo)
            patch = image[b:b + 1, :, ay:by, ax:bx]
            x2 = self.stages[2](x4[b:b + 1, :, ay // 4:by // 4, ax // 4:bx // 4], self.low[1](patch))
            logits = self.head(self.stages[3](x2, self.low[0](patch)))
            out[b:b + 1, :, y0:y1, x0:x1] = logits[:, :, y0 - ay:y1 - ay, x0 - ax:x1 - ax]
        return out

    def _stripe_rows(self, width: int) -> int:
        if self.config.stripe_rows > 0:
            return self.config.stripe_rows
        f1 = self.config.fuse_channels[3]
        per_row = width * (3 * f1 + 2 * self.config.low_channels[0] + 3)
        return max(16, self.STRIPE_ELEMENTS // max(per_row, 1))

    def _final_stage_striped(self, x2: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The stride-1 stage + head, computed stripe by stripe with a halo (same result, bounded memory)."""
        stage, low, head = self.stages[3], self.low[0], self.head
        batch, _, height, width = image.shape
        coarse_h = x2.shape[-2]
        rows = self._stripe_rows(width)
        halo = self.STRIPE_HALO
        out = image.new_empty(batch, 1, height, width)
        for r0 in range(0, height, rows):
            r1 = min(height, r0 + rows)
            a, b = max(0, r0 - halo), min(height, r1 + halo)
            c0, c1 = max(0, a // 2 - 2), min(coarse_h, b // 2 + 2)
            up = stage.upsample(x2[:, :, c0:c1])[:, :, a - 2 * c0:b - 2 * c0]
            y = stage.fuse(torch.cat([up, low(image[:, :, a:b])], dim=1))
            del up
            out[:, :, r0:r1] = head(y)[:, :, r0 - a:r1 - a]
        return out

    # -- full model --------------------------------------------------------------------------------------------------

    def forward(self, image: torch.Tensor, fbu: torch.Tensor, region: torch.Tensor | None = None,
                clicks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``region`` (optional, (B, H, W) bool): the pixels whose logits the caller needs; with autograd off the
        finest stages then skip the tiles without any (their logits are :attr:`SKIPPED_LOGIT`). ``clicks``
        ((B, click_channels, H, W) disk maps [positive, negative, tolerant]) only for an HRR with ``click_channels``;
        None there means no clicks."""
        cfg = self.config
        _check_nchw(image, 3, "HRR image")
        _check_nchw(fbu, 3, "HRR FBU map")
        if fbu.shape[0] != image.shape[0] or fbu.shape[-2:] != image.shape[-2:]:
            raise FinecutError(f"HRR FBU map {tuple(fbu.shape)} does not match the image {tuple(image.shape)}")
        if clicks is not None:
            if not cfg.click_channels:
                raise FinecutError("this HRR has no click input (click_channels 0): pass clicks=None")
            _check_nchw(clicks, cfg.click_channels, "HRR click maps")
            if clicks.shape[0] != image.shape[0] or clicks.shape[-2:] != image.shape[-2:]:
                raise FinecutError(f"HRR click maps {tuple(clicks.shape)} do not match the image {tuple(image.shape)}")
            clicks = clicks.to(image.dtype)
        if region is not None and tuple(region.shape) != (image.shape[0], *image.shape[-2:]):
            raise FinecutError(f"HRR region {tuple(region.shape)} does not match the image {tuple(image.shape)}: "
                               "it must be (B, H, W)")
        height, width = image.shape[-2:]
        work_h, work_w = working_size(height, width, cfg.max_side)
        resized = (work_h, work_w) != (height, width)
        if resized:
            image = F.interpolate(image, size=(work_h, work_w), mode="bilinear", align_corners=False, antialias=True)
            fbu = F.interpolate(fbu.to(image.dtype), size=(work_h, work_w), mode="bilinear", align_corners=False,
                                antialias=True)
            if clicks is not None:  # a disk's area-weighted trace, as the FBU map's
                clicks = F.interpolate(clicks, size=(work_h, work_w), mode="bilinear", align_corners=False,
                                       antialias=True)
            if region is not None:  # every working pixel the upsampled logits of a region pixel draw on
                shrunk = F.adaptive_max_pool2d(region[:, None].float(), (work_h, work_w))
                region = F.max_pool2d(shrunk, 3, 1, 1)[:, 0] > 0
        pad_h, pad_w = padded_size(work_h, work_w, cfg.pad_multiple)
        if (pad_h, pad_w) != (work_h, work_w):
            image = F.pad(image, (0, pad_w - work_w, 0, pad_h - work_h))
            fbu = F.pad(fbu.to(image.dtype), (0, pad_w - work_w, 0, pad_h - work_h))
            # padding counts as background
            fbu[:, 0, work_h:, :] = 1.0
            fbu[:, 0, :, work_w:] = 1.0
            if region is not None:
                region = F.pad(region.to(torch.uint8), (0, pad_w - work_w, 0, pad_h - work_h)).bool()
            if clicks is not None:
                clicks = F.pad(clicks, (0, pad_w - work_w, 0, pad_h - work_h))
        features = self.encode(image, fbu.to(image.dtype), clicks)
        del fbu, clicks
        logits = self.decode(features, image, region)[:, :, :work_h, :work_w]
        if resized:
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return {"logits": logits, "features": features}


def build_ntclick_hrr(**config: Any) -> NTClickHRR:
    return NTClickHRR(_config_from_dict(HRRConfig, config))


# ------------------------------------------------------------------------------------------------------- ECP + HRR


#: The architectures an NTClick ECP can have: the paper's ViT, and the default model's EfficientNet segmentor
#: (:mod:`finecut.models.ntclick_ecp_effnet`, a departure from the paper).
ECP_ARCHS: tuple[str, ...] = ("ntclick_ecp", "ntclick_ecp_effnet")


def _sub_config(values: dict[str, Any] | None, arch: str) -> dict[str, Any]:
    cfg = dict(values or {})
    found = cfg.pop("arch", arch)
    if found != arch:
        raise FinecutError(f"ntclick model config: expected a {arch!r} sub-config, got arch {found!r}")
    return cfg


def is_ecp(module: Any) -> bool:
    """Whether ``module`` is an NTClick ECP of any architecture in :data:`ECP_ARCHS`."""
    arch_config = getattr(module, "arch_config", None)
    return isinstance(module, nn.Module) and callable(arch_config) and arch_config().get("arch") in ECP_ARCHS


def _ecp_sub_config(ecp: nn.Module) -> dict[str, Any]:
    """The ECP's part of an ``ntclick`` config: without ``arch`` for the ViT (the stored layout of the first
    checkpoints), with it for another architecture."""
    cfg = dict(ecp.arch_config())
    if cfg.get("arch") == "ntclick_ecp":
        del cfg["arch"]
    return cfg


def build_ecp(values: dict[str, Any] | None) -> nn.Module:
    """An ECP from its part of an ``ntclick`` config (``arch`` one of :data:`ECP_ARCHS`, the ViT when absent)."""
    cfg = dict(values or {})
    arch = cfg.get("arch", "ntclick_ecp")
    if arch not in ECP_ARCHS:
        raise FinecutError(f"ntclick model config: the ecp sub-config's arch must be one of {ECP_ARCHS}, got {arch!r}")
    builder = build_ntclick_ecp if arch == "ntclick_ecp" else build_ntclick_ecp_effnet
    return builder(**_sub_config(cfg, arch))


class NTClickNet(nn.Module):
    """NTClick's two networks in one checkpoint (``{"arch": "ntclick", "ecp": {...}, "hrr": {...}}``)."""

    def __init__(self, ecp: nn.Module, hrr: NTClickHRR) -> None:
        super().__init__()
        self.ecp = ecp
        self.hrr = hrr

    @property
    def prompt_channels(self) -> int:
        return self.ecp.config.prompt_channels

    @property
    def input_spec(self) -> InputSpec:
        """The ECP's inputs (the HRR takes the same normalised image and the FBU map)."""
        return self.ecp.input_spec

    def arch_config(self) -> dict[str, Any]:
        """The ``{"arch": "ntclick", "ecp": {...}, "hrr": {...}}`` dict that rebuilds this model."""
        return {"arch": "ntclick", "ecp": _ecp_sub_config(self.ecp),
                "hrr": _sub_config(self.hrr.arch_config(), "ntclick_hrr")}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise FinecutError("NTClickNet is a container: call its .ecp and .hrr networks (or use the ntclick engine)")


def build_ntclick(ecp: dict[str, Any] | None = None, hrr: dict[str, Any] | None = None) -> NTClickNet:
    return NTClickNet(build_ecp(ecp),
                      build_ntclick_hrr(**_sub_config(hrr, "ntclick_hrr")))
