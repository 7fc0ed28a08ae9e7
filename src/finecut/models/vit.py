"""Plain (non-hierarchical) Vision Transformer blocks, ViTDet style, for SimpleClick.

Tokens are kept channels-last as ``(B, H, W, C)`` grids so that a block can switch between non-overlapping window
attention (tokens padded to a multiple of the window, padded keys masked out) and global attention. Attention runs
through :func:`torch.nn.functional.scaled_dot_product_attention`; the optional decomposed relative position bias of
ViTDet is passed to it as an additive mask. The absolute position embedding is stored for the ``img_size`` grid and
resized (bicubic) to whatever grid the input produces, so any input size works.

Submodule names follow MAE / timm (``patch_embed.proj``, ``blocks.N.attn.qkv``, ``blocks.N.mlp.fc1``, ...), so MAE
pretrained weights load with :func:`load_mae_weights`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from finecut.errors import FinecutError


def to_2tuple(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    items = tuple(int(v) for v in value)
    if len(items) != 2:
        raise FinecutError(f"expected an int or a pair of ints, got {value!r}")
    return items  # type: ignore[return-value]


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample with probability ``drop_prob`` while training."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: a conv with kernel = stride = ``patch_size``. Output ``(B, h, w, C)``."""

    def __init__(self, patch_size: int | Sequence[int] = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.patch_size = to_2tuple(patch_size)
        self.in_chans = in_chans
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a ``(1, h, w, C)`` absolute position embedding to ``(1, *grid, C)`` (bicubic, as ViTDet / MAE)."""
    if tuple(pos_embed.shape[1:3]) == tuple(grid):
        return pos_embed
    resized = F.interpolate(
        pos_embed.permute(0, 3, 1, 2).float(), size=grid, mode="bicubic", align_corners=False
    ).to(pos_embed.dtype)
    return resized.permute(0, 2, 3, 1)


def pos_embed_from_tokens(tokens: torch.Tensor, has_cls_token: bool | None = None) -> torch.Tensor:
    """Turn an MAE/timm ``(1, [1 +] N, C)`` position embedding with a square grid into a ``(1, s, s, C)`` grid."""
    n = tokens.shape[1]
    side = math.isqrt(n)
    if has_cls_token is None:
        has_cls_token = side * side != n
    if has_cls_token:
        tokens = tokens[:, 1:]
        n -= 1
        side = math.isqrt(n)
    if side * side != n:
        raise FinecutError(f"position embedding with {n} tokens is not a square grid")
    return tokens.reshape(1, side, side, tokens.shape[-1])


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``(B, H, W, C)`` -> ``(B * nW, window, window, C)`` after zero-padding H and W up to multiples of ``window``."""
    b, h, w, c = x.shape
    pad_h = (window - h % window) % window
    pad_w = (window - w % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`, dropping the padding."""
    hp, wp = padded_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.view(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w, :].contiguous()
    return x


def _window_key_mask(
    hw: tuple[int, int], window: int, batch: int, device: torch.device
) -> torch.Tensor | None:
    """Boolean ``(B * nW, 1, 1, window**2)`` mask of the real (not padded) keys of each window; None if no padding."""
    h, w = hw
    if h % window == 0 and w % window == 0:
        return None
    valid = torch.ones(1, h, w, 1, dtype=torch.bool, device=device)
    windows, _ = window_partition(valid, window)  # (nW, ws, ws, 1), padding reads False
    mask = windows.reshape(windows.shape[0], 1, 1, window * window)
    return mask.repeat(batch, 1, 1, 1)


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative positional embeddings for all (query, key) offsets along one axis, interpolated if needed."""
    max_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_dist:
        rel_pos = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_dist, mode="linear"
        ).reshape(-1, max_dist).permute(1, 0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.long()]


def decomposed_rel_pos_bias(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, hw: tuple[int, int]
) -> torch.Tensor:
    """ViTDet's decomposed relative position bias ``(B, heads, N, N)`` for queries ``q`` ``(B, heads, N, d)``."""
    h, w = hw
    rh = get_rel_pos(h, h, rel_pos_h)  # (h, h, d)
    rw = get_rel_pos(w, w, rel_pos_w)  # (w, w, d)
    b, heads, _, d = q.shape
    r_q = q.reshape(b, heads, h, w, d)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rh.to(q.dtype))
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rw.to(q.dtype))
    bias = rel_h[..., :, None] + rel_w[..., None, :]  # (b, n, h, w, kh, kw)
    return bias.reshape(b, heads, h * w, h * w)


class Attention(nn.Module):
    """Multi-head self-attention over a ``(B, H, W, C)`` token grid, with optional decomposed relative positions.

    ``rel_pos_size`` is the (H, W) the relative tables are sized for (the window, or the whole grid for global
    blocks); other sizes are handled by interpolation.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        rel_pos_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise FinecutError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if rel_pos_size is None:
                raise FinecutError("use_rel_pos needs rel_pos_size (the token grid or window size)")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_pos_size[0] - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_pos_size[1] - 1, self.head_dim))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, h, w, c = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, d)
        attn_mask: torch.Tensor | None = key_mask
        if self.use_rel_pos:
            bias = decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w))
            if key_mask is not None:
                bias = bias.masked_fill(~key_mask, float("-inf"))
            attn_mask = bias
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = out.transpose(1, 2).reshape(b, h, w, c)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm transformer block; ``window_size > 0`` restricts attention to non-overlapping windows."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        window_size: int = 0,
        use_rel_pos: bool = False,
        grid_size: tuple[int, int] = (14, 14),
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(
            dim,
            num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            rel_pos_size=(window_size, window_size) if window_size > 0 else grid_size,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        hw = (x.shape[1], x.shape[2])
        # A grid that fits in one window is the same as global attention (unless relative positions are window-sized).
        single_window = max(hw) <= self.window_size and not self.attn.use_rel_pos
        if self.window_size > 0 and not single_window:
            mask = _window_key_mask(hw, self.window_size, x.shape[0], x.device)
            x, padded = window_partition(x, self.window_size)
            x = self.attn(x, mask)
            x = window_unpartition(x, self.window_size, padded, hw)
        else:
            x = self.attn(x)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


def linear_rates(max_rate: float, count: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to ``max_rate`` over ``count`` blocks (plain Python, so that
    models can be built on the ``meta`` device)."""
    if count <= 1:
        return [0.0] * count
    return [max_rate * i / (count - 1) for i in range(count)]


def quarter_global_indexes(depth: int) -> tuple[int, ...]:
    """SimpleClick/ViTDet layout: the last block of each quarter of the depth uses global attention."""
    if depth < 4:
        return (depth - 1,)
    step = depth // 4
    return tuple(sorted({min(step * (i + 1), depth) - 1 for i in range(4)} | {depth - 1}))


@dataclass
class ViTConfig:
    """Architecture of a plain ViT backbone. ``window_size = 0`` makes every block global."""

    img_size: tuple[int, int] = (448, 448)
    patch_size: tuple[int, int] = (16, 16)
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] | None = None
    use_rel_pos: bool = False
    drop_path_rate: float = 0.0
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        self.img_size = to_2tuple(self.img_size)
        self.patch_size = to_2tuple(self.patch_size)
        for name in ("embed_dim", "depth", "num_heads"):
            if int(getattr(self, name)) < 1:
                raise FinecutError(f"ViT {name} must be >= 1, got {getattr(self, name)}")
        if min(self.grid_size) < 1:
            raise FinecutError(f"ViT img_size {self.img_size} is smaller than the patch size {self.patch_size}")
        if self.window_size < 0:
            raise FinecutError(f"ViT window_size must be >= 0, got {self.window_size}")
        if self.global_attn_indexes is None:
            self.global_attn_indexes = quarter_global_indexes(self.depth)
        self.global_attn_indexes = tuple(int(i) for i in self.global_attn_indexes)
        bad = [i for i in self.global_attn_indexes if not 0 <= i < self.depth]
        if bad:
            raise FinecutError(f"global_attn_indexes {bad} out of range for depth {self.depth}")

    @property
    def grid_size(self) -> tuple[int, int]:
        return (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])


def init_mae_layers(modules: Iterable[nn.Module]) -> None:
    """MAE's initialisation of ``modules``: xavier-uniform linears with zero biases, unit LayerNorms."""
    for module in modules:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class VisionTransformer(nn.Module):
    """Plain ViT encoder: patch embedding (+ optional additive tokens) + abs. position embedding + blocks.

    ``forward(image, extra_tokens=None) -> (B, C, H/p, W/p)``: ``extra_tokens`` (``(B, h, w, C)``, e.g. SimpleClick's
    prompt embedding) is added to the patch tokens before the position embedding. H and W must be multiples of the
    patch size (the caller pads).
    """

    def __init__(self, config: ViTConfig | None = None, **kwargs: object) -> None:
        super().__init__()
        cfg = config if config is not None else ViTConfig(**kwargs)  # type: ignore[arg-type]
        self.config = cfg
        self.embed_dim = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.grad_checkpointing = cfg.grad_checkpointing
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        grid = cfg.grid_size
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0], grid[1], cfg.embed_dim))
        dpr = linear_rates(cfg.drop_path_rate, cfg.depth)
        global_indexes = set(cfg.global_attn_indexes or ())
        self.blocks = nn.ModuleList(
            Block(
                cfg.embed_dim,
                cfg.num_heads,
                mlp_ratio=cfg.mlp_ratio,
                qkv_bias=cfg.qkv_bias,
                drop_path=dpr[i],
                window_size=0 if i in global_indexes else cfg.window_size,
                use_rel_pos=cfg.use_rel_pos,
                grid_size=grid,
            )
            for i in range(cfg.depth)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MAE initialisation: xavier-uniform linears and patch projection, truncated-normal position embedding."""
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if self.patch_embed.proj.bias is not None:
            nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        init_mae_layers(self.blocks.modules())

    def forward(self, image: torch.Tensor, extra_tokens: torch.Tensor | None = None) -> torch.Tensor:
        x = self.patch_embed(image)
        if extra_tokens is not None:
            if extra_tokens.shape != x.shape:
                raise FinecutError(
                    f"extra tokens of shape {tuple(extra_tokens.shape)} do not match patch tokens {tuple(x.shape)}"
                )
            x = x + extra_tokens
        x = x + resize_pos_embed(self.pos_embed, (x.shape[1], x.shape[2]))
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x.permute(0, 3, 1, 2)

    def no_weight_decay(self) -> set[str]:
        names = {"pos_embed"}
        names |= {n for n, _ in self.named_parameters() if "rel_pos" in n}
        return names


def convert_mae_state_dict(state: dict[str, torch.Tensor], model: VisionTransformer) -> dict[str, torch.Tensor]:
    """Map an MAE / timm ViT state dict onto :class:`VisionTransformer` names and shapes.

    Drops the cls token, the final norm and the classifier, turns the token position embedding into a grid resized to
    the model's ``img_size`` grid, and keeps only keys whose shapes match.
    """
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "pos_embed":
            grid = pos_embed_from_tokens(value) if value.ndim == 3 else value
            value = resize_pos_embed(grid, tuple(model.pos_embed.shape[1:3]))
        if key in target and tuple(target[key].shape) == tuple(value.shape):
            out[key] = value
        elif "rel_pos" in key and key in target:
            rel = F.interpolate(
                value.reshape(1, value.shape[0], -1).permute(0, 2, 1), size=target[key].shape[0], mode="linear"
            )
            out[key] = rel.reshape(-1, target[key].shape[0]).permute(1, 0)
    return out
