"""Drafting attention: R requests' fresh block rows over their cached context plus the block.

Reference: ``sparkserve.attention.torch_draft.forward_draft`` (semantics: ``attention/base.py``
``AttentionBackend.forward_draft`` and ``DraftMask``). Request r's context is positions
``0 .. context_lens[r] - 1`` in the paged cache (read, never written); its F fresh rows sit at
positions ``context_lens[r] + j`` and come straight from ``k``/``v``; query i is fresh row F - Q + i.
Context keys are always visible (within ``window``); fresh keys as the mask says (``causal``: j <= the
query's fresh row; ``window``: |position difference| < window, one-sided when causal).

One program per (request, kv head, tile of BLOCK_M (query, head of the group) pairs): the paged context
with the target kernel's helper, then one tile of fresh keys, in one online softmax.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from sparkserve_triton import check_device
from sparkserve_triton.paged_attention import BLOCK_N, attend_paged, attend_tile, block_rows, precision_for


@triton.jit
def _draft_attention_kernel(
    q_ptr, k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, out_ptr, block_tables_ptr, context_lens_ptr, scale,
    num_query, num_fresh, causal, window,
    stride_qr, stride_qi, stride_qh, stride_kr, stride_kf, stride_kh, stride_vr, stride_vf, stride_vh,
    stride_or, stride_oi, stride_oh, stride_slot, stride_head, stride_table, block_size,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_F: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):
    req = tl.program_id(0)
    kv_head = tl.program_id(1)
    tile = tl.program_id(2)
    ctx_len = tl.load(context_lens_ptr + req)
    m = tile * BLOCK_M + tl.arange(0, BLOCK_M)  # [M] (query, head of the kv group) pairs
    rows = m // GROUP  # query index
    heads = kv_head * GROUP + m % GROUP
    row_ok = rows < num_query
    q_fresh = num_fresh - num_query + rows  # [M] fresh row of each query
    q_pos = ctx_len + q_fresh
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    io_mask = row_ok[:, None] & d_ok[None, :]
    q = tl.load(q_ptr + req * stride_qr + rows[:, None] * stride_qi + heads[:, None] * stride_qh + d[None, :],
                mask=io_mask, other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    start = 0
    if window > 0:  # no query of the tile sees a context key older than this
        start = tl.maximum(ctx_len + num_fresh - num_query + tile * BLOCK_M // GROUP - window + 1, 0)
        start = start // BLOCK_N * BLOCK_N
    m_i, l_i, acc = attend_paged(q, q_pos, k_cache_ptr, v_cache_ptr, block_tables_ptr + req * stride_table, kv_head,
                                 start, ctx_len, block_size, stride_slot, stride_head, m_i, l_i, acc, scale, window,
                                 HEAD_DIM, BLOCK_N, BLOCK_D, PRECISION)
    j = tl.arange(0, BLOCK_F)  # fresh keys
    j_ok = j < num_fresh
    kv_mask = j_ok[:, None] & d_ok[None, :]
    k = tl.load(k_ptr + req * stride_kr + j[:, None] * stride_kf + kv_head * stride_kh + d[None, :], mask=kv_mask,
                other=0.0)
    v = tl.load(v_ptr + req * stride_vr + j[:, None] * stride_vf + kv_head * stride_vh + d[None, :], mask=kv_mask,
                other=0.0)
    diff = q_fresh[:, None] - j[None, :]  # [M, F] query position - key position
    visible = j_ok[None, :] & ((causal == 0) | (diff >= 0))
    if window > 0:
        visible = visible & (diff < window) & ((causal != 0) | (-diff < window))
    m_i, l_i, acc = attend_tile(q, k, v, visible, m_i, l_i, acc, scale, PRECISION)
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(out_ptr + req * stride_or + rows[:, None] * stride_oi + heads[:, None] * stride_oh + d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=io_mask)


def draft_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    block_tables: torch.Tensor, context_lens: torch.Tensor, scale: float, causal: bool,
                    window: int | None) -> torch.Tensor:
    """q [R, Q, Hq, D]; fresh k/v [R, F, Hkv, D] (Q <= F); caches [num_blocks, block_size, Hkv, D];
    block_tables [R, W] int32 covering each context; context_lens [R] int32 -> [R, Q, Hq, D] in q's dtype."""
    check_device(q, k, v, k_cache, block_tables)
    q, k, v = (t if t.stride(3) == 1 else t.contiguous() for t in (q, k, v))
    num_req, num_query, num_heads, head_dim = q.shape
    num_fresh, num_kv_heads = k.shape[1], k.shape[2]
    if num_query > num_fresh:
        raise ValueError(f"{num_query} queries but only {num_fresh} fresh rows")
    out = torch.empty_like(q)
    if num_req == 0 or num_query == 0:
        return out
    assert k_cache.stride(3) == 1
    assert k_cache.stride() == v_cache.stride() and k_cache.stride(0) == k_cache.shape[1] * k_cache.stride(1)
    if block_tables.shape[1] == 0:  # no request has context: any valid pointer will do, nothing is read
        block_tables = torch.zeros(num_req, 1, dtype=torch.int32, device=block_tables.device)
    group = num_heads // num_kv_heads
    block_m = block_rows(num_query * group)
    grid = (num_req, num_kv_heads, triton.cdiv(num_query * group, block_m))
    _draft_attention_kernel[grid](
        q, k, v, k_cache, v_cache, out, block_tables, context_lens, scale, num_query, num_fresh, int(causal),
        int(window or 0), *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
        k_cache.stride(1), k_cache.stride(2), block_tables.stride(0), k_cache.shape[1],
        GROUP=group, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=BLOCK_N,
        BLOCK_F=max(16, triton.next_power_of_2(num_fresh)), BLOCK_D=triton.next_power_of_2(head_dim),
        PRECISION=precision_for(q.dtype))
    return out
