"""Masked-autoencoder (MAE, He et al. 2022) pretraining of SimpleClick's plain ViT.

:class:`MaskedAutoencoderViT` holds the encoder under the module names of :class:`~finecut.models.vit.VisionTransformer`
(``patch_embed.proj``, ``pos_embed``, ``blocks.N.*``), i.e. MAE / timm names and SimpleClick's ``backbone.*`` names
without the prefix, so a checkpoint's encoder loads into ``simpleclick`` with
:meth:`finecut.models.simpleclick.SimpleClick.load_pretrained` (the training config's ``init_backbone_checkpoint``).
Everything else lives under names the backbone does not have: ``encoder_norm``, ``mask_token``, ``decoder_*``.

Per sample, ``mask_ratio`` of the patch tokens are hidden (a random permutation drawn from the generator passed to
:meth:`~MaskedAutoencoderViT.forward`, so a seed gives the same masks); the encoder sees only the visible tokens with
their position embeddings. Window attention needs the whole token grid, so — as in the MAE pretraining of ViTDet
backbones — every encoder block runs global attention over the visible tokens (the weights are the same either way;
relative position tables need a grid and are refused). A light decoder (``decoder_dim`` wide, ``decoder_depth``
global blocks) sees the encoded tokens plus a shared mask token at every hidden position and predicts each patch's
pixels; the loss is the mean squared error on the hidden patches only, against per-patch normalised pixels
(``norm_pix_loss``).

Registered as arch ``mae_vit``: ``{"arch": "mae_vit", "variant": "xtiny", "img_size": 224, "mask_ratio": 0.75,
"decoder_dim": 128, "decoder_depth": 2}`` (other SimpleClick encoder fields may override the variant's preset).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn

from finecut.errors import FinecutError
from finecut.models.simpleclick import SimpleClickConfig
from finecut.models.vit import Block, VisionTransformer, init_mae_layers, resize_pos_embed

#: The SimpleClick encoder fields an ``mae_vit`` config may set (the rest of SimpleClick's config is its head).
ENCODER_FIELDS = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "window_size",
                  "global_attn_indexes", "drop_path_rate")


@dataclass
class MAEConfig:
    variant: str = "xtiny"
    img_size: int | tuple[int, int] = 224
    mask_ratio: float = 0.75
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise FinecutError(f"mae_vit mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.decoder_dim < 1 or self.decoder_depth < 1 or self.decoder_heads < 1:
            raise FinecutError("mae_vit decoder_dim, decoder_depth and decoder_heads must be >= 1")


def global_block(block: Block, x: torch.Tensor) -> torch.Tensor:
    """One encoder block with global attention over a token sequence ``(B, N, C)`` (whatever its window size)."""
    h = block.attn(block.norm1(x).unsqueeze(1)).squeeze(1)  # a (B, 1, N, C) "grid": one global attention
    x = x + block.drop_path(h)
    return x + block.drop_path(block.mlp(block.norm2(x)))


class MaskedAutoencoderViT(nn.Module):
    """MAE around finecut's plain ViT encoder. ``forward(images, generator=None, mask_ratio=None)`` returns
    ``{"loss", "pred" (B, N, p*p*3), "mask" (B, N) 1 = hidden, "target"}``; ``images`` ImageNet-normalised, sides
    multiples of the patch size."""

    def __init__(self, config: MAEConfig, encoder_overrides: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder_overrides = dict(encoder_overrides or {})
        sc = SimpleClickConfig(variant=config.variant, img_size=config.img_size, **self.encoder_overrides)
        vit_cfg = sc.vit_config()
        if vit_cfg.use_rel_pos:
            raise FinecutError("mae_vit: relative position tables need the full token grid; use_rel_pos is refused")
        self.vit_config = vit_cfg
        vit = VisionTransformer(vit_cfg)
        self.patch_size = vit_cfg.patch_size
        dim = vit_cfg.embed_dim
        # the encoder, under the VisionTransformer's own names (SimpleClick's ``backbone.*`` without the prefix)
        self.patch_embed = vit.patch_embed
        self.pos_embed = vit.pos_embed
        self.blocks = vit.blocks
        self.encoder_norm = nn.LayerNorm(dim, eps=1e-6)
        d = config.decoder_dim
        grid = vit_cfg.grid_size
        self.decoder_embed = nn.Linear(dim, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, grid[0], grid[1], d))
        self.decoder_blocks = nn.ModuleList(Block(d, config.decoder_heads, window_size=0, grid_size=grid)
                                            for _ in range(config.decoder_depth))
        self.decoder_norm = nn.LayerNorm(d, eps=1e-6)
        self.decoder_pred = nn.Linear(d, self.patch_size[0] * self.patch_size[1] * 3)
        self._init_decoder()

    def _init_decoder(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos_embed, std=0.02)
        init_mae_layers([self.decoder_embed, self.decoder_pred, self.encoder_norm, self.decoder_norm,
                         *self.decoder_blocks.modules()])

    def arch_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"arch": "mae_vit"}
        for key, value in {**asdict(self.config), **self.encoder_overrides}.items():
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    # ------------------------------------------------------------------ pieces
    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, N, p*p*3)``, patches in row-major grid order, pixels (row, col, channel)."""
        b, c, h, w = images.shape
        ph, pw = self.patch_size
        if h % ph or w % pw:
            raise FinecutError(f"mae_vit: image sides {h}x{w} are not multiples of the patch size {ph}x{pw}")
        x = images.reshape(b, c, h // ph, ph, w // pw, pw)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // ph) * (w // pw), ph * pw * c)

    def random_masking(self, batch: int, tokens: int, mask_ratio: float, device: torch.device,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per sample, a random ``tokens * (1 - mask_ratio)`` kept. Returns ``(ids_keep (B, K), mask (B, N) 1 =
        hidden, ids_restore (B, N))``."""
        keep = max(1, round(tokens * (1.0 - mask_ratio)))
        noise = torch.rand(batch, tokens, generator=generator).to(device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        mask = torch.ones(batch, tokens, device=device)
        mask[:, :keep] = 0
        return ids_keep, torch.gather(mask, 1, ids_restore), ids_restore

    def encode(self, images: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """The encoder on the kept tokens only: ``(B, K, C)`` (before ``encoder_norm``)."""
        x = self.patch_embed(images)  # (B, h, w, C)
        x = x + resize_pos_embed(self.pos_embed, (x.shape[1], x.shape[2]))
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)
        x = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, c))
        for block in self.blocks:
            x = global_block(block, x)
        return x

    def decode(self, latent: torch.Tensor, ids_restore: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = self.decoder_embed(self.encoder_norm(latent))
        b, k, d = x.shape
        n = ids_restore.shape[1]
        x = torch.cat([x, self.mask_token.expand(b, n - k, d)], dim=1)
        x = torch.gather(x, 1, ids_restore.unsqueeze(-1).expand(-1, -1, d))  # back to grid order
        x = x.reshape(b, grid[0], grid[1], d) + resize_pos_embed(self.decoder_pos_embed, grid)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x)).reshape(b, n, -1)

    def target(self, images: torch.Tensor) -> torch.Tensor:
        target = self.patchify(images)
        if self.config.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        return target

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None,
                mask_ratio: float | None = None) -> dict[str, torch.Tensor]:
        ratio = self.config.mask_ratio if mask_ratio is None else float(mask_ratio)
        b, _, h, w = images.shape
        grid = (h // self.patch_size[0], w // self.patch_size[1])
        target = self.target(images)
        ids_keep, mask, ids_restore = self.random_masking(b, grid[0] * grid[1], ratio, images.device, generator)
        pred = self.decode(self.encode(images, ids_keep), ids_restore, grid)
        per_patch = ((pred - target) ** 2).mean(dim=-1)
        loss = (per_patch * mask).sum() / mask.sum()
        return {"loss": loss, "pred": pred, "mask": mask, "target": target}


def build_mae_vit(variant: str = "xtiny", img_size: int | list[int] = 224, mask_ratio: float = 0.75,
                  decoder_dim: int = 128, decoder_depth: int = 2, decoder_heads: int = 4, norm_pix_loss: bool = True,
                  **encoder: Any) -> MaskedAutoencoderViT:
    """Registry builder of ``mae_vit``; ``encoder`` may set SimpleClick encoder fields (:data:`ENCODER_FIELDS`)."""
    unknown = sorted(set(encoder) - set(ENCODER_FIELDS))
    if unknown:
        raise FinecutError(f"unknown mae_vit option(s) {unknown}; encoder fields: {', '.join(ENCODER_FIELDS)}")
    if isinstance(img_size, list):
        img_size = tuple(img_size)  # type: ignore[assignment]
    for key in ("patch_size", "global_attn_indexes"):
        if isinstance(encoder.get(key), list):
            encoder[key] = tuple(encoder[key])
    config = MAEConfig(variant, img_size, mask_ratio, decoder_dim, decoder_depth, decoder_heads, norm_pix_loss)
    return MaskedAutoencoderViT(config, encoder)


__all__ = ["MAEConfig", "MaskedAutoencoderViT", "build_mae_vit", "global_block"]
