"""Paged attention over ragged rows: decode rows, prefill chunks and verify blocks in one launch.

Reference: ``sparkserve.attention.torch_backend.TorchBackend.forward`` (semantics in
``attention/base.py``). Sequence b owns query rows ``query_start_loc[b] : query_start_loc[b+1]`` at
positions ``seq_lens[b] - q_len .. seq_lens[b] - 1``; each attends causally to its keys at positions
<= its own, read through the block table: position p lives at slot
``block_tables[b, p // block_size] * block_size + p % block_size``. Grouped-query attention: query
head h reads kv head ``h // (Hq // Hkv)``.

One program per (sequence, kv head, tile of BLOCK_M (row, query head) pairs): the query heads that
share a kv head are packed into one tile, so each K/V tile is read once for the whole group and a
decode row fills GROUP lanes instead of one. Keys stream in tiles of BLOCK_N with an online softmax
in fp32. The K/V of the step are written to the cache before the launch (the backend
does it with ``kv_store``). The launch shape depends only on the tensors' shapes and ``max_query_len``,
so a fixed-shape batch can be captured in a CUDA graph.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from sparkserve_triton import check_device, interpreting

BLOCK_N = 32  # keys per inner step


@triton.jit
def attend_tile(q, k, v, visible, m_i, l_i, acc, scale, PRECISION: tl.constexpr):
    """One online-softmax step: q [M, D], k/v [N, D], visible [M, N] -> updated (max, sum, acc [M, D])."""
    k = k.to(q.dtype)
    v = v.to(q.dtype)
    if PRECISION == "ieee":  # fp32 products (fp32 inputs, or the interpreter, whose bf16 dot is wrong)
        s = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision="ieee") * scale
    else:
        s = tl.dot(q, tl.trans(k)) * scale  # [M, N] fp32
    s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that saw no key yet stay empty
    p = tl.exp(s - m_safe[:, None])
    alpha = tl.exp(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    if PRECISION == "ieee":
        pv = tl.dot(p.to(q.dtype).to(tl.float32), v.to(tl.float32), input_precision="ieee")
    else:
        pv = tl.dot(p.to(q.dtype), v)
    acc = acc * alpha[:, None] + pv
    return m_new, l_i, acc


@triton.jit
def attend_paged(q, q_pos, k_cache_ptr, v_cache_ptr, table_ptr, kv_head, start, end, block_size,
                 stride_slot, stride_head, m_i, l_i, acc, scale, window,
                 HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    """Keys at positions [start, end) of one sequence's paged cache, visible when <= q_pos (and, with
    window > 0, when q_pos - p < window)."""
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    for tile_start in range(start, end, BLOCK_N):
        pos = tile_start + tl.arange(0, BLOCK_N)  # [N]
        pos_ok = pos < end
        block = tl.load(table_ptr + pos // block_size, mask=pos_ok, other=0).to(tl.int64)
        slot = block * block_size + pos % block_size
        offs = slot[:, None] * stride_slot + kv_head * stride_head + d[None, :]
        k = tl.load(k_cache_ptr + offs, mask=pos_ok[:, None] & d_ok[None, :], other=0.0)
        v = tl.load(v_cache_ptr + offs, mask=pos_ok[:, None] & d_ok[None, :], other=0.0)
        visible = pos_ok[None, :] & (pos[None, :] <= q_pos[:, None])
        if window > 0:
            visible = visible & (q_pos[:, None] - pos[None, :] < window)
        m_i, l_i, acc = attend_tile(q, k, v, visible, m_i, l_i, acc, scale, PRECISION)
    return m_i, l_i, acc


@triton.jit
def _paged_attention_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, out_ptr, block_tables_ptr, seq_lens_ptr, query_start_ptr, scale,
    stride_qt, stride_qh, stride_ot, stride_oh, stride_slot, stride_head, stride_table, block_size,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    tile = tl.program_id(2)
    q_start = tl.load(query_start_ptr + seq)
    q_len = tl.load(query_start_ptr + seq + 1) - q_start
    if tile * BLOCK_M < q_len * GROUP:
        seq_len = tl.load(seq_lens_ptr + seq)
        m = tile * BLOCK_M + tl.arange(0, BLOCK_M)  # [M] (row, head of the kv group) pairs
        rows = m // GROUP  # row of this sequence
        heads = kv_head * GROUP + m % GROUP  # query head
        row_ok = rows < q_len
        q_pos = seq_len - q_len + rows  # [M] absolute positions
        d = tl.arange(0, BLOCK_D)
        io_mask = row_ok[:, None] & (d[None, :] < HEAD_DIM)
        token = (q_start + rows).to(tl.int64)
        q_offs = token[:, None] * stride_qt + heads[:, None] * stride_qh + d[None, :]
        q = tl.load(q_ptr + q_offs, mask=io_mask, other=0.0)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        last_row = (tile * BLOCK_M + BLOCK_M - 1) // GROUP
        kv_end = tl.minimum(seq_len, seq_len - q_len + last_row + 1)  # past the tile's last row
        m_i, l_i, acc = attend_paged(q, q_pos, k_cache_ptr, v_cache_ptr, block_tables_ptr + seq * stride_table,
                                     kv_head, 0, kv_end, block_size, stride_slot, stride_head, m_i, l_i, acc,
                                     scale, 0, HEAD_DIM, BLOCK_N, BLOCK_D, PRECISION)
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(out_ptr + token[:, None] * stride_ot + heads[:, None] * stride_oh + d[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=io_mask)


def block_rows(num_rows: int) -> int:
    """Query rows x heads per program: 16 (decode-sized work; tl.dot needs >= 16), else 64."""
    return 16 if num_rows <= 16 else 64


def precision_for(dtype: torch.dtype) -> str:
    """"ieee": fp32 products (fp32 inputs: not TF32; and always in the interpreter, whose bf16/fp16 dot
    is wrong in Triton 3.9); "native": the tensor cores on the inputs' dtype."""
    return "ieee" if dtype == torch.float32 or interpreting() else "native"


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                    seq_lens: torch.Tensor, query_start_loc: torch.Tensor, max_query_len: int,
                    scale: float) -> torch.Tensor:
    """q [T, Hq, D]; caches [num_blocks, block_size, Hkv, D] (already holding this step's K/V);
    block_tables [B, W] int32; seq_lens [B] int32; query_start_loc [B + 1] int32; max_query_len: the
    longest row count of any sequence (host int, sizes the grid) -> [T, Hq, D] in q's dtype."""
    check_device(q, k_cache, v_cache, block_tables)
    q = q if q.stride(2) == 1 else q.contiguous()
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    out = torch.empty_like(q)
    num_seqs = seq_lens.shape[0]
    if num_tokens == 0 or num_seqs == 0:
        return out
    assert k_cache.stride(3) == 1 and k_cache.stride() == v_cache.stride()
    assert k_cache.stride(0) == k_cache.shape[1] * k_cache.stride(1)  # slots are evenly spaced
    group = num_heads // num_kv_heads
    block_m = block_rows(max(max_query_len, 1) * group)
    grid = (num_seqs, num_kv_heads, triton.cdiv(max(max_query_len, 1) * group, block_m))
    _paged_attention_kernel[grid](
        q, k_cache, v_cache, out, block_tables, seq_lens, query_start_loc, scale,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1), k_cache.stride(1), k_cache.stride(2),
        block_tables.stride(0), k_cache.shape[1],
        GROUP=group, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=BLOCK_N,
        BLOCK_D=triton.next_power_of_2(head_dim), PRECISION=precision_for(q.dtype))
    return out
