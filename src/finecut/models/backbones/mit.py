"""SegFormer's Mix Transformer (MiT) encoder with the segmentor backbone interface.

Four stages of overlapping patch embeddings (7x7/4, then 3x3/2) and efficient self-attention (keys/values reduced by
a strided conv of ratio ``sr``) with Mix-FFN (a depthwise 3x3 conv inside the MLP). For click fusion the stem is the
first overlapping patch embedding (stride 4, ``embed_dims[0]`` channels, LayerNorm applied); the body is everything
after it. Names follow the official code (``patch_embed1.proj``, ``block1.0.attn.kv``, ``norm1`` ...), so official
ImageNet weights (``mit_b0.pth`` ...) load with :meth:`MixVisionTransformer.load_pretrained`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from finecut.errors import FinecutError
from finecut.models.vit import DropPath, linear_rates

if TYPE_CHECKING:
    from finecut.models.pretrained import LoadReport


@dataclass(frozen=True)
class MiTConfig:
    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_ratio: float = 4.0


#: Official MiT variants (SegFormer, Table 6).
MIT_VARIANTS: dict[str, MiTConfig] = {
    "b0": MiTConfig((32, 64, 160, 256), (2, 2, 2, 2)),
    "b1": MiTConfig((64, 128, 320, 512), (2, 2, 2, 2)),
    "b2": MiTConfig((64, 128, 320, 512), (3, 4, 6, 3)),
    "b3": MiTConfig((64, 128, 320, 512), (3, 4, 18, 3)),
    "b4": MiTConfig((64, 128, 320, 512), (3, 8, 27, 3)),
    "b5": MiTConfig((64, 128, 320, 512), (3, 6, 40, 3)),
}


class EfficientAttention(nn.Module):
    """Multi-head attention whose keys/values come from a ``sr``-times spatially reduced map (SegFormer)."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        d = c // self.num_heads
        q = self.q(x).reshape(b, n, self.num_heads, d).transpose(1, 2)
        if self.sr_ratio > 1:
            reduced = x.transpose(1, 2).reshape(b, c, h, w)
            if h < self.sr_ratio or w < self.sr_ratio:  # tiny inputs: pad so the reduction keeps one token
                reduced = F.pad(reduced, (0, max(0, self.sr_ratio - w), 0, max(0, self.sr_ratio - h)))
            reduced = self.norm(self.sr(reduced).flatten(2).transpose(1, 2))
        else:
            reduced = x
        kv = self.kv(reduced).reshape(b, -1, 2, self.num_heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class DWConv(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class MiTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EfficientAttention(dim, num_heads, sr_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embedding: conv (kernel ``patch``, stride ``stride``, padding ``patch // 2``) + LayerNorm."""

    def __init__(self, patch: int, stride: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch, stride, patch // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Cin, H, W) -> (B, C, H', W')`` with the LayerNorm applied over channels."""
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class MixVisionTransformer(nn.Module):
    """MiT-B0...B5 encoder: ``forward_stem`` (stride 4) + ``forward_body`` -> 4 maps at strides 4, 8, 16, 32.

    ``side_in_chans > 0`` adds ClickSEG's side branch (``patch_embed_side1``, a second 7x7/4 overlapping patch
    embedding of the prompt maps), whose output :meth:`embed_side` gives and ``forward_body(x, side=...)`` adds to
    the stage-1 output before stage 2 (the stage-1 map returned is the one without it, as in ClickSEG).
    ``pretrained`` is an optional local path of official weights, loaded at construction (no download).
    """

    def __init__(
        self,
        variant: str = "b0",
        in_chans: int = 3,
        drop_path_rate: float = 0.1,
        side_in_chans: int = 0,
        pretrained: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        if variant not in MIT_VARIANTS:
            raise FinecutError(f"unknown MiT variant {variant!r}; known: {', '.join(MIT_VARIANTS)}")
        cfg = MIT_VARIANTS[variant]
        self.variant = variant
        self.config = cfg
        self.stem_channels = cfg.embed_dims[0]
        self.stem_stride = 4
        self.out_channels = list(cfg.embed_dims)
        self.out_strides = [4, 8, 16, 32]
        dims = cfg.embed_dims
        self.patch_embed1 = OverlapPatchEmbed(7, 4, in_chans, dims[0])
        self.patch_embed2 = OverlapPatchEmbed(3, 2, dims[0], dims[1])
        self.patch_embed3 = OverlapPatchEmbed(3, 2, dims[1], dims[2])
        self.patch_embed4 = OverlapPatchEmbed(3, 2, dims[2], dims[3])
        self.side_in_chans = int(side_in_chans)
        if self.side_in_chans > 0:
            self.patch_embed_side1 = OverlapPatchEmbed(7, 4, self.side_in_chans, dims[0])
        dpr = linear_rates(drop_path_rate, sum(cfg.depths))
        start = 0
        for stage in range(4):
            blocks = nn.ModuleList(
                MiTBlock(dims[stage], cfg.num_heads[stage], cfg.mlp_ratio, cfg.sr_ratios[stage], dpr[start + i])
                for i in range(cfg.depths[stage])
            )
            start += cfg.depths[stage]
            self.add_module(f"block{stage + 1}", blocks)
            self.add_module(f"norm{stage + 1}", nn.LayerNorm(dims[stage], eps=1e-6))
        self.apply(_init_weights)
        if pretrained is not None:
            self.load_pretrained(pretrained)

    def forward_stem(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.patch_embed1(rgb)

    def embed_side(self, maps: torch.Tensor) -> torch.Tensor:
        """The side branch's stride-4 embedding of the prompt maps (needs ``side_in_chans``)."""
        if self.side_in_chans <= 0:
            raise FinecutError("this MiT was built without a side branch (side_in_chans=0)")
        return self.patch_embed_side1(maps)

    def forward_body(self, x: torch.Tensor, side: torch.Tensor | None = None) -> list[torch.Tensor]:
        outs = []
        for stage in range(1, 5):
            if stage > 1:
                x = getattr(self, f"patch_embed{stage}")(x)
            b, c, h, w = x.shape
            tokens = x.flatten(2).transpose(1, 2)
            for block in getattr(self, f"block{stage}"):
                tokens = block(tokens, h, w)
            tokens = getattr(self, f"norm{stage}")(tokens)
            x = tokens.transpose(1, 2).reshape(b, c, h, w)
            outs.append(x)
            if stage == 1 and side is not None:
                x = x + side
        return outs

    def forward(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_body(self.forward_stem(rgb))

    def load_pretrained(self, path: str | os.PathLike[str]) -> LoadReport:
        """Load official MiT weights (ImageNet ``mit_bX.pth``, or a SegFormer/ClickSEG checkpoint whose backbone keys
        carry a prefix such as ``backbone.``) from a local file; the classifier and decoder keys are ignored."""
        from finecut.models.pretrained import load_matching, read_state_dict, strip_prefix

        state = strip_prefix(read_state_dict(path), "patch_embed1.proj.weight")
        return load_matching(self, state, source=path, min_fraction=0.9)


def _init_weights(m: nn.Module) -> None:
    """Official MiT init: truncated normal (std 0.02) linears, He-normal (fan-out) convs, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
