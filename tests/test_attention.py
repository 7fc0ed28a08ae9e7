"""Neighborhood, grid and global attention against brute-force masked attention (forward and backward)."""

from __future__ import annotations

import pytest
import torch

from finecut.errors import FinecutError
from finecut.models.attention import (
    TokenAttention2d,
    global_attention,
    grid_attention,
    grid_mask,
    grid_partition,
    grid_unpartition,
    masked_attention_reference,
    natten_available,
    neighborhood_attention,
    neighborhood_attention_natten,
    neighborhood_attention_torch,
    neighborhood_indices,
    neighborhood_mask,
    neighborhood_window_starts,
    relative_position_bias_dense,
)


def _qkv(shape: tuple[int, ...], dtype: torch.dtype = torch.float64, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=dtype).requires_grad_(True) for _ in range(3)]


def test_window_starts_follow_natten_clamping() -> None:
    # length 10, kernel 5: centred windows, shifted inward at both borders
    assert neighborhood_window_starts(10, 5).tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 5, 5]
    idx = neighborhood_indices(10, 5)
    assert idx.shape == (10, 5)
    assert idx[0].tolist() == [0, 1, 2, 3, 4] and idx[9].tolist() == [5, 6, 7, 8, 9]
    assert idx[4].tolist() == [2, 3, 4, 5, 6]
    # a side shorter than the kernel: the whole side
    assert neighborhood_indices(3, 5).tolist() == [[0, 1, 2]] * 3


def test_neighborhood_mask_has_k_squared_neighbours_everywhere() -> None:
    mask = neighborhood_mask(9, 11, 5)
    assert mask.shape == (99, 99)
    assert torch.all(mask.sum(dim=1) == 25)
    # corner token (0, 0) sees exactly rows 0..4, cols 0..4
    corner = mask[0].reshape(9, 11)
    assert corner[:5, :5].all() and corner.sum() == 25
    # centre token (4, 5) sees rows 2..6, cols 3..7
    centre = mask[4 * 11 + 5].reshape(9, 11)
    assert centre[2:7, 3:8].all() and centre.sum() == 25


@pytest.mark.parametrize(
    ("height", "width", "kernel"),
    [(5, 7, 3), (9, 6, 5), (8, 12, 7), (13, 10, 7), (17, 9, 5), (4, 10, 7), (3, 3, 5)],
)
@pytest.mark.parametrize("with_rpb", [False, True])
def test_neighborhood_attention_matches_brute_force(height: int, width: int, kernel: int, with_rpb: bool) -> None:
    q, k, v = _qkv((2, 3, height, width, 4))
    rpb = None
    if with_rpb:
        rpb = torch.randn(3, 2 * kernel - 1, 2 * kernel - 1, dtype=torch.float64, requires_grad=True)
    out = neighborhood_attention_torch(q, k, v, kernel, rpb=rpb)
    bias = relative_position_bias_dense(rpb, height, width) if rpb is not None else None
    ref = masked_attention_reference(q, k, v, neighborhood_mask(height, width, kernel), bias=bias)
    assert out.shape == (2, 3, height, width, 4)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    grad = torch.randn_like(out)
    inputs = [q, k, v] + ([rpb] if rpb is not None else [])
    got = torch.autograd.grad(out, inputs, grad)
    want = torch.autograd.grad(ref, inputs, grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_neighborhood_attention_chunking_does_not_change_the_result() -> None:
    q, k, v = _qkv((1, 2, 30, 19, 8), dtype=torch.float32)
    rpb = torch.randn(2, 13, 13)
    whole = neighborhood_attention_torch(q, k, v, 7, rpb=rpb, chunk_elements=1 << 30)
    tiny = neighborhood_attention_torch(q, k, v, 7, rpb=rpb, chunk_elements=1)  # one tile row per chunk
    torch.testing.assert_close(whole, tiny, rtol=1e-5, atol=1e-6)


def test_relative_position_bias_uses_natten_indexing() -> None:
    # a bias that only rewards the key one row below the query: attention concentrates there (or at the border)
    q = torch.zeros(1, 1, 6, 6, 2)
    k = torch.zeros(1, 1, 6, 6, 2)
    v = torch.arange(36, dtype=torch.float32).reshape(1, 1, 6, 6, 1).expand(1, 1, 6, 6, 2).contiguous()
    rpb = torch.full((1, 5, 5), -1e4)
    rpb[0, 2 + 1, 2 + 0] = 0.0  # offset (di, dj) = (+1, 0) at index (di + k - 1, dj + k - 1)
    out = neighborhood_attention_torch(q, k, v, 3, rpb=rpb)
    expected = torch.arange(36, dtype=torch.float32).reshape(6, 6) + 6  # value of the token below
    torch.testing.assert_close(out[0, 0, :5, :, 0], expected[:5], rtol=0, atol=1e-3)


def test_neighborhood_attention_rejects_bad_arguments() -> None:
    q, k, v = _qkv((1, 1, 6, 6, 2))
    with pytest.raises(FinecutError, match="odd"):
        neighborhood_attention_torch(q, k, v, 4)
    with pytest.raises(FinecutError, match="relative position bias"):
        neighborhood_attention_torch(q, k, v, 3, rpb=torch.zeros(1, 3, 3, dtype=torch.float64))
    with pytest.raises(FinecutError, match="shapes differ"):
        neighborhood_attention_torch(q, k[:, :, :5], v, 3)


def test_dispatch_uses_torch_path_on_cpu() -> None:
    q, k, v = _qkv((1, 2, 8, 8, 4))
    assert not natten_available(q)
    torch.testing.assert_close(neighborhood_attention(q, k, v, 5), neighborhood_attention_torch(q, k, v, 5))


@pytest.mark.skipif(not torch.cuda.is_available() or not natten_available(), reason="needs natten and CUDA")
@pytest.mark.parametrize("with_rpb", [False, True])
def test_natten_matches_torch_path_on_cuda(with_rpb: bool) -> None:
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 4, 20, 27, 32, generator=gen).cuda() for _ in range(3))
    rpb = torch.randn(4, 13, 13, generator=gen).cuda() if with_rpb else None
    try:
        fast = neighborhood_attention_natten(q, k, v, 7, rpb=rpb)
    except ImportError as exc:  # natten version without rpb support
        pytest.skip(str(exc))
    slow = neighborhood_attention_torch(q, k, v, 7, rpb=rpb)
    torch.testing.assert_close(fast.float(), slow, rtol=1e-3, atol=1e-3)


def test_grid_partition_groups_tokens_by_position_modulo_interval() -> None:
    x = torch.arange(8 * 12, dtype=torch.float32).reshape(1, 8, 12, 1)
    groups = grid_partition(x, 4)
    assert groups.shape == (16, 2, 3, 1)
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(12), indexing="ij")
    for g in range(16):
        r, s = divmod(g, 4)
        members = groups[g, :, :, 0].flatten().long()
        assert torch.all(rows.flatten()[members] % 4 == r)
        assert torch.all(cols.flatten()[members] % 4 == s)
    assert torch.equal(grid_unpartition(groups, 4, 1), x)
    with pytest.raises(FinecutError, match="divisible"):
        grid_partition(torch.zeros(1, 6, 8, 1), 4)


@pytest.mark.parametrize("fused", [True, False])
def test_grid_attention_matches_brute_force(fused: bool) -> None:
    q, k, v = _qkv((2, 2, 8, 12, 4))
    out = grid_attention(q, k, v, 4, fused=fused)
    ref = masked_attention_reference(q, k, v, grid_mask(8, 12, 4))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    grad = torch.randn_like(out)
    for g, w in zip(torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_grid_attention_keeps_groups_apart() -> None:
    # changing a key/value outside a query's group must not change that query's output
    q, k, v = (t.detach() for t in _qkv((1, 1, 8, 8, 4)))
    base = grid_attention(q, k, v, 4)
    k2, v2 = k.clone(), v.clone()
    k2[..., 1, 2, :] += 5.0  # token (1, 2): group (1, 2)
    v2[..., 1, 2, :] -= 3.0
    changed = grid_attention(q, k2, v2, 4)
    same_group = grid_mask(8, 8, 4)[1 * 8 + 2].reshape(8, 8)
    diff = (changed - base).abs().amax(dim=(0, 1, 4))
    assert torch.all(diff[~same_group] == 0)
    assert torch.all(diff[same_group] > 0)


@pytest.mark.parametrize("fused", [True, False])
def test_global_attention_matches_reference(fused: bool) -> None:
    q, k, v = _qkv((1, 2, 5, 6, 4))
    ref = masked_attention_reference(q, k, v, torch.ones(30, 30, dtype=torch.bool))
    torch.testing.assert_close(global_attention(q, k, v, fused=fused), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["neighborhood", "grid", "global"])
def test_token_attention_module_shapes_and_backward(kind: str) -> None:
    torch.manual_seed(0)
    module = TokenAttention2d(32, 4, kind=kind, kernel_size=5, grid_interval=4)
    x = torch.randn(2, 8, 12, 32, requires_grad=True)
    out = module(x)
    assert out.shape == x.shape
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in module.parameters())
    assert (module.rpb is not None) == (kind == "neighborhood")


def test_grid_module_equals_masked_attention_with_same_projections() -> None:
    torch.manual_seed(1)
    module = TokenAttention2d(16, 2, kind="grid", grid_interval=4).double()
    x = torch.randn(1, 8, 8, 16, dtype=torch.float64)
    qkv = module.qkv(x).reshape(1, 8, 8, 3, 2, 8).permute(3, 0, 4, 1, 2, 5)
    ref = masked_attention_reference(qkv[0], qkv[1], qkv[2], grid_mask(8, 8, 4))
    ref = module.proj(ref.permute(0, 2, 3, 1, 4).reshape(1, 8, 8, 16))
    torch.testing.assert_close(module(x), ref, rtol=1e-10, atol=1e-12)


def test_token_attention_rejects_bad_configs() -> None:
    with pytest.raises(FinecutError, match="divisible"):
        TokenAttention2d(30, 4)
    with pytest.raises(FinecutError, match="unknown attention kind"):
        TokenAttention2d(32, 4, kind="window")  # type: ignore[arg-type]
