"""Attention over 2-D token grids: global, neighborhood (NA) and grid attention, as functions and modules.

Shapes: the functional forms take per-head queries/keys/values ``(B, heads, H, W, d)`` laid out on the token grid
and return ``(B, heads, H, W, d)``; the modules take and return channels-last token grids ``(B, H, W, C)``.

- **Neighborhood attention** (NATTEN semantics, dilation 1): the query at ``(i, j)`` attends to the ``k × k`` keys
  of rows ``s(i) .. s(i) + k - 1`` and columns ``s(j) .. s(j) + k - 1`` where ``s(i) = clamp(i - k // 2, 0, L - k)``:
  windows are centred and shift inward at the borders, so every token has exactly ``k × k`` neighbours. The optional
  relative position bias ``rpb`` has shape ``(heads, 2k - 1, 2k - 1)`` and adds ``rpb[h, i' - i + k - 1,
  j' - j + k - 1]`` for key ``(i', j')``. A side shorter than ``k`` uses a window of the whole side. The plain-PyTorch
  path attends tile by tile (``(k+1)²`` queries against the ``(2k)²`` keys holding all their windows, the rest
  masked) in chunks of tile rows: memory ``O(N·k²)`` at most per chunk, never ``O(N²)``; autograd works on any
  device. ``natten`` is used only when installed, the tensors are on CUDA and the grid is at least ``k`` wide.
- **Grid attention** with interval ``K``: the tokens with equal ``(i mod K, j mod K)`` form one of ``K²`` groups that
  attend among themselves (a dilated global attention spanning the whole image); done with reshape/permute only.
  Its cost is ``(hw)² / K²`` instead of ``(hw)²``.
- **Global attention**: every token to every token; ``fused=True`` uses
  :func:`torch.nn.functional.scaled_dot_product_attention` (memory ``O(N)`` on CPU and CUDA), ``fused=False`` the
  explicit ``softmax(q kᵀ) v`` of a standard ViT (memory ``O(N²)``), kept for the memory comparison.
"""

from __future__ import annotations

import importlib
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from finecut.errors import FinecutError

#: Rough upper bound on the logits held at once by the plain-PyTorch NA path (one chunk of tile rows).
NA_CHUNK_ELEMENTS = 1 << 23

AttentionKind = Literal["neighborhood", "grid", "global"]


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.ndim != 5:
        raise FinecutError(f"attention expects (B, heads, H, W, d) tensors, got query shape {tuple(q.shape)}")
    if k.shape != q.shape or v.shape != q.shape:
        raise FinecutError(
            f"query, key and value shapes differ: {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )


def _check_kernel_size(kernel_size: int) -> int:
    size = int(kernel_size)
    if size < 1 or size % 2 == 0:
        raise FinecutError(f"neighborhood kernel size must be a positive odd number, got {kernel_size}")
    return size


def neighborhood_window_starts(length: int, kernel_size: int, device: torch.device | None = None) -> torch.Tensor:
    """First key index of each query's window along one axis: ``clamp(i - k // 2, 0, max(L - k, 0))``."""
    idx = torch.arange(length, device=device)
    return (idx - kernel_size // 2).clamp(min=0, max=max(length - kernel_size, 0))


def neighborhood_indices(length: int, kernel_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Key indices (L, min(k, L)) of every query's window along one axis."""
    size = min(kernel_size, length)
    starts = neighborhood_window_starts(length, kernel_size, device)
    return starts[:, None] + torch.arange(size, device=device)[None, :]


def _tile_axis(length: int, kernel_size: int, tile: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Per-axis tiling of NA: query indices (nT·T, clamped), key-region indices (nT, R), validity and bias offsets.

    Tile ``t`` holds queries ``t·T .. t·T + T - 1``; its key region is ``R = min(L, T + k - 1)`` consecutive keys from
    ``clamp(s(t·T), 0, L - R)``, which contains every window of the tile. ``valid[t, q, r]`` says whether region key
    ``r`` is in query ``q``'s window; ``rel[t, q, r]`` is the bias-table index ``key - query + k - 1`` (clamped).
    """
    n_tiles = -(-length // tile)
    queries = torch.arange(n_tiles * tile, device=device).clamp(max=length - 1)
    starts = neighborhood_window_starts(length, kernel_size, device)[queries].view(n_tiles, tile)
    region = min(length, tile + kernel_size - 1)
    first = starts[:, 0].clamp(max=length - region)
    keys = first[:, None] + torch.arange(region, device=device)[None, :]  # (nT, R)
    window = min(kernel_size, length)
    valid = (keys[:, None, :] >= starts[:, :, None]) & (keys[:, None, :] < starts[:, :, None] + window)
    rel = (keys[:, None, :] - queries.view(n_tiles, tile)[:, :, None] + kernel_size - 1).clamp(0, 2 * kernel_size - 2)
    return queries, keys, valid, rel


def neighborhood_attention_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: int,
    rpb: torch.Tensor | None = None,
    scale: float | None = None,
    chunk_elements: int = NA_CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Plain-PyTorch 2-D neighborhood attention; ``(B, heads, H, W, d)`` in and out (see the module docstring).

    Queries are cut into ``T × T`` tiles (``T = k + 1``); each tile attends densely (batched matmul) to the
    ``(T + k - 1)²`` keys that contain all its windows, with keys outside a query's window masked out, so the result
    equals neighborhood attention exactly. Tile rows are processed in chunks whose logits hold at most about
    ``chunk_elements`` elements, so memory stays linear in the number of tokens; autograd works throughout.
    """
    _check_qkv(q, k, v)
    ks = _check_kernel_size(kernel_size)
    batch, heads, height, width, dim = q.shape
    if rpb is not None and tuple(rpb.shape) != (heads, 2 * ks - 1, 2 * ks - 1):
        raise FinecutError(
            f"relative position bias must have shape {(heads, 2 * ks - 1, 2 * ks - 1)}, got {tuple(rpb.shape)}"
        )
    scale = dim**-0.5 if scale is None else float(scale)
    device = q.device
    tile = ks + 1
    q_rows, key_rows, valid_rows, rel_rows = _tile_axis(height, ks, tile, device)
    q_cols, key_cols, valid_cols, rel_cols = _tile_axis(width, ks, tile, device)
    tiles_h, tiles_w = key_rows.shape[0], key_cols.shape[0]
    region_h, region_w = key_rows.shape[1], key_cols.shape[1]
    per_tile_row = batch * heads * tiles_w * tile * tile * region_h * region_w
    chunk = max(1, min(tiles_h, int(chunk_elements) // max(per_tile_row, 1)))
    q = q * scale
    # Additive bias per (tile, query, region key): rpb where the key is in the window, -inf elsewhere. A table with
    # one extra "outside" slot turns mask + bias into a single gather. Interior tile rows share one pattern, so such
    # a chunk gathers the bias of one tile row (broadcast over the chunk) and later chunks reuse it.
    inner = rpb.to(q.dtype) if rpb is not None else q.new_zeros(1, 2 * ks - 1, 2 * ks - 1)
    table = F.pad(inner, (0, 1, 0, 1), value=float("-inf"))  # (heads or 1, 2k, 2k); slot 2k-1 = outside
    slot_rows = torch.where(valid_rows, rel_rows, 2 * ks - 1)  # (nTh, T, Rh)
    slot_cols = torch.where(valid_cols, rel_cols, 2 * ks - 1)  # (nTw, T, Rw)
    col_q = q_cols.view(tiles_w, tile)[None, :, None, :]
    col_k = key_cols[None, :, None, :]
    outputs = []
    cached_slots: torch.Tensor | None = None
    bias = table
    for t0 in range(0, tiles_h, chunk):
        t1 = min(tiles_h, t0 + chunk)
        ct = t1 - t0
        # gathered tiles: queries (B, heads, ct, nTw, T*T, d), keys/values (B, heads, ct, nTw, Rh*Rw, d)
        q_t = q[:, :, q_rows[t0 * tile:t1 * tile].view(ct, tile)[:, None, :, None], col_q].flatten(4, 5)
        row_k = key_rows[t0:t1, None, :, None]
        k_t = k[:, :, row_k, col_k].flatten(4, 5)
        logits = torch.matmul(q_t, k_t.transpose(-1, -2))  # (B, heads, ct, nTw, T*T, Rh*Rw)
        del q_t, k_t
        slots = slot_rows[t0:t1]
        if bool((slots == slots[:1]).all()):  # all tile rows of the chunk share one pattern: broadcast one row
            slots = slots[:1]
        if cached_slots is None or cached_slots.shape != slots.shape or not torch.equal(cached_slots, slots):
            rows_in = slots.shape[0]
            bias = table[:, slots[:, None, :, None, :, None], slot_cols[None, :, None, :, None, :]]
            bias = bias.reshape(table.shape[0], rows_in, tiles_w, tile * tile, region_h * region_w)
            cached_slots = slots
        attn = logits.add_(bias).softmax(dim=-1)
        del logits
        v_t = v[:, :, row_k, col_k].flatten(4, 5)
        out = torch.matmul(attn, v_t)  # (B, heads, ct, nTw, T*T, d)
        del attn, v_t
        out = out.view(batch, heads, ct, tiles_w, tile, tile, dim).permute(0, 1, 2, 4, 3, 5, 6)
        outputs.append(out.reshape(batch, heads, ct * tile, tiles_w * tile, dim))
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
    return out[:, :, :height, :width]


def natten_available(tensor: torch.Tensor | None = None) -> bool:
    """True when ``natten`` imports and (if given) ``tensor`` is on CUDA."""
    if tensor is not None and not tensor.is_cuda:
        return False
    try:
        importlib.import_module("natten")
    except ImportError:
        return False
    return True


def neighborhood_attention_natten(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: int,
    rpb: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Neighborhood attention through ``natten`` (CUDA); same layout and semantics as the plain-PyTorch path.

    Uses the unfused ``na2d_qk``/``na2d_av`` pair when it exists (it supports ``rpb``), else the fused ``na2d``
    (newer natten, heads-last layout; without ``rpb``). Raises :class:`ImportError` when natten is missing.
    """
    _check_qkv(q, k, v)
    ks = _check_kernel_size(kernel_size)
    functional = importlib.import_module("natten.functional")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if hasattr(functional, "na2d_qk") and hasattr(functional, "na2d_av"):
        logits = functional.na2d_qk(q.contiguous() * scale, k.contiguous(), ks, rpb=rpb)
        return functional.na2d_av(logits.softmax(dim=-1), v.contiguous(), ks)
    if rpb is not None:
        raise ImportError("this natten version has no relative-position-bias support")
    out = functional.na2d(
        q.permute(0, 2, 3, 1, 4).contiguous(),
        k.permute(0, 2, 3, 1, 4).contiguous(),
        v.permute(0, 2, 3, 1, 4).contiguous(),
        kernel_size=ks,
        scale=scale,
    )
    return out.permute(0, 3, 1, 2, 4)


def neighborhood_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: int,
    rpb: torch.Tensor | None = None,
    scale: float | None = None,
    use_natten: bool | None = None,
) -> torch.Tensor:
    """2-D neighborhood attention, ``(B, heads, H, W, d)`` in and out.

    ``use_natten``: ``None`` (default) uses natten when it is installed, the tensors are on CUDA and both grid sides
    are at least ``kernel_size``; ``False`` always uses plain PyTorch; ``True`` requires natten.
    """
    ks = _check_kernel_size(kernel_size)
    fits = q.ndim == 5 and min(q.shape[2], q.shape[3]) >= ks
    if use_natten is True:
        if not fits:
            raise FinecutError(f"natten needs a token grid of at least {ks}x{ks}, got {tuple(q.shape[2:4])}")
        return neighborhood_attention_natten(q, k, v, ks, rpb=rpb, scale=scale)
    if use_natten is None and fits and natten_available(q):
        try:
            return neighborhood_attention_natten(q, k, v, ks, rpb=rpb, scale=scale)
        except ImportError:  # a natten build without what this call needs (e.g. rpb): fall back to PyTorch
            pass
    return neighborhood_attention_torch(q, k, v, ks, rpb=rpb, scale=scale)


def neighborhood_mask(height: int, width: int, kernel_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Bool (N, N) mask (N = H·W, row-major) of key tokens inside each query's neighborhood; for tests/reference."""
    ks = _check_kernel_size(kernel_size)
    rows = neighborhood_indices(height, ks, device)
    cols = neighborhood_indices(width, ks, device)
    row_ok = torch.zeros(height, height, dtype=torch.bool, device=device)
    row_ok.scatter_(1, rows, True)
    col_ok = torch.zeros(width, width, dtype=torch.bool, device=device)
    col_ok.scatter_(1, cols, True)
    return (row_ok[:, None, :, None] & col_ok[None, :, None, :]).reshape(height * width, height * width)


def relative_position_bias_dense(rpb: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Expand an NA bias table ``(heads, 2k-1, 2k-1)`` to a dense ``(heads, N, N)`` bias (zero-clamped offsets)."""
    ks = (rpb.shape[-1] + 1) // 2
    dev = rpb.device
    dr = torch.arange(height, device=dev)[None, :] - torch.arange(height, device=dev)[:, None] + ks - 1
    dc = torch.arange(width, device=dev)[None, :] - torch.arange(width, device=dev)[:, None] + ks - 1
    dr = dr.clamp(0, 2 * ks - 2)
    dc = dc.clamp(0, 2 * ks - 2)
    bias = rpb[:, dr[:, None, :, None], dc[None, :, None, :]]  # (heads, H, W, H, W)
    return bias.reshape(rpb.shape[0], height * width, height * width)


def masked_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Brute-force attention over the flattened grid with a bool (N, N) mask and optional (heads, N, N) bias."""
    _check_qkv(q, k, v)
    batch, heads, height, width, dim = q.shape
    scale = dim**-0.5 if scale is None else float(scale)
    qf, kf, vf = (t.reshape(batch, heads, height * width, dim) for t in (q, k, v))
    logits = (qf * scale) @ kf.transpose(-2, -1)
    if bias is not None:
        logits = logits + bias
    logits = logits.masked_fill(~mask, float("-inf"))
    out = logits.softmax(dim=-1) @ vf
    return out.reshape(batch, heads, height, width, dim)


def grid_partition(x: torch.Tensor, interval: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B·K², H/K, W/K, C)``; group ``(r, s)`` holds the tokens with ``i % K == r, j % K == s``.

    Row-major group order: group ``g`` of image ``b`` is ``b·K² + r·K + s``.
    """
    batch, height, width, channels = x.shape
    if height % interval or width % interval:
        raise FinecutError(
            f"grid attention needs a token grid divisible by the interval {interval}, got {height}x{width}"
        )
    x = x.reshape(batch, height // interval, interval, width // interval, interval, channels)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, K, K, H/K, W/K, C)
    return x.reshape(batch * interval * interval, height // interval, width // interval, channels)


def grid_unpartition(groups: torch.Tensor, interval: int, batch: int) -> torch.Tensor:
    """Inverse of :func:`grid_partition`."""
    _, gh, gw, channels = groups.shape
    x = groups.reshape(batch, interval, interval, gh, gw, channels).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(batch, gh * interval, gw * interval, channels)


def global_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None, fused: bool = True
) -> torch.Tensor:
    """Attention of every token to every token, ``(B, heads, H, W, d)`` in and out."""
    _check_qkv(q, k, v)
    batch, heads, height, width, dim = q.shape
    qf, kf, vf = (t.reshape(batch, heads, height * width, dim) for t in (q, k, v))
    if fused:
        out = F.scaled_dot_product_attention(qf, kf, vf, scale=scale)
    else:
        scale = dim**-0.5 if scale is None else float(scale)
        out = ((qf * scale) @ kf.transpose(-2, -1)).softmax(dim=-1) @ vf
    return out.reshape(batch, heads, height, width, dim)


def grid_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    interval: int,
    scale: float | None = None,
    fused: bool = True,
) -> torch.Tensor:
    """Grid attention with interval ``K``, ``(B, heads, H, W, d)`` in and out (H, W divisible by K)."""
    _check_qkv(q, k, v)
    batch, heads, height, width, dim = q.shape

    def split(t: torch.Tensor) -> torch.Tensor:  # (B, heads, H, W, d) -> (B·K², heads, H/K, W/K, d)
        g = grid_partition(t.permute(0, 2, 3, 1, 4).reshape(batch, height, width, heads * dim), interval)
        return g.reshape(g.shape[0], g.shape[1], g.shape[2], heads, dim).permute(0, 3, 1, 2, 4)

    out = global_attention(split(q), split(k), split(v), scale=scale, fused=fused)
    out = out.permute(0, 2, 3, 1, 4).reshape(out.shape[0], height // interval, width // interval, heads * dim)
    out = grid_unpartition(out, interval, batch)
    return out.reshape(batch, height, width, heads, dim).permute(0, 3, 1, 2, 4)


def grid_mask(height: int, width: int, interval: int, device: torch.device | None = None) -> torch.Tensor:
    """Bool (N, N) mask of tokens in the same grid group (equal ``(i mod K, j mod K)``); for tests/reference."""
    ii = torch.arange(height, device=device)[:, None].expand(height, width).reshape(-1) % interval
    jj = torch.arange(width, device=device)[None, :].expand(height, width).reshape(-1) % interval
    return (ii[:, None] == ii[None, :]) & (jj[:, None] == jj[None, :])


class TokenAttention2d(nn.Module):
    """Multi-head self-attention on a channels-last token grid ``(B, H, W, C)`` of one of three kinds.

    ``kind="neighborhood"`` (window ``kernel_size``, optional relative position bias), ``"grid"`` (interval
    ``grid_interval``) or ``"global"``. ``fused`` picks SDPA vs. explicit softmax for grid/global attention.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kind: AttentionKind = "global",
        kernel_size: int = 7,
        grid_interval: int = 8,
        rel_pos_bias: bool = True,
        fused: bool = True,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise FinecutError(f"embedding dim {dim} is not divisible by the number of heads {num_heads}")
        if kind not in ("neighborhood", "grid", "global"):
            raise FinecutError(f"unknown attention kind {kind!r}: use neighborhood, grid or global")
        self.dim = dim
        self.num_heads = num_heads
        self.kind = kind
        self.kernel_size = _check_kernel_size(kernel_size) if kind == "neighborhood" else int(kernel_size)
        self.grid_interval = int(grid_interval)
        self.fused = fused
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if kind == "neighborhood" and rel_pos_bias:
            self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
            nn.init.trunc_normal_(self.rpb, std=0.02)
        else:
            self.register_parameter("rpb", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        if self.kind == "grid":  # the projections are per token, so partition first: groups become batch items
            x = grid_partition(x, self.grid_interval)
        groups, height, width, channels = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(groups, height, width, 3, heads, channels // heads)
        q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)  # each (B or B·K², heads, H, W, d)
        del qkv
        if self.kind == "neighborhood":
            out = neighborhood_attention(q, k, v, self.kernel_size, rpb=self.rpb)
        else:
            out = global_attention(q, k, v, fused=self.fused)
        del q, k, v
        out = self.proj(out.permute(0, 2, 3, 1, 4).reshape(groups, height, width, channels))
        return grid_unpartition(out, self.grid_interval, batch) if self.kind == "grid" else out

    def extra_repr(self) -> str:
        extra = {"neighborhood": f"kernel_size={self.kernel_size}", "grid": f"interval={self.grid_interval}"}
        detail = extra.get(self.kind, f"fused={self.fused}")
        return f"kind={self.kind}, dim={self.dim}, heads={self.num_heads}, {detail}"
