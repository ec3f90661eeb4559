"""Write a step's new K/V into the paged cache, skipping rows whose slot is negative.

Reference: ``TorchBackend.write_kv`` (``index_copy_`` at ``slot_mapping``) for slots >= 0; a row with slot
< 0 writes nothing (padding rows of a CUDA-graph batch, ``sparkserve/runner/cuda_graphs.py``, as the
native CPU backend already does). One program per row copies its Hkv x D values for k and v (cast to the
cache's dtype by torch first, so the bits equal ``index_copy_``'s). No host sync, fixed launch shape: safe to capture in a CUDA graph.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from sparkserve_triton import check_device


@triton.jit
def _store_kv_kernel(k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_ptr, stride_k, stride_v, stride_slot, row_size,
                     BLOCK: tl.constexpr):
    row = tl.program_id(0)
    slot = tl.load(slot_ptr + row)
    if slot >= 0:
        offs = tl.arange(0, BLOCK)
        mask = offs < row_size
        dst = slot.to(tl.int64) * stride_slot + offs
        k = tl.load(k_ptr + row.to(tl.int64) * stride_k + offs, mask=mask)
        v = tl.load(v_ptr + row.to(tl.int64) * stride_v + offs, mask=mask)
        tl.store(k_cache_ptr + dst, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
        tl.store(v_cache_ptr + dst, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x [T, H, D] with each row's H x D values contiguous (a view of a fused qkv output qualifies)."""
    return x if x.stride(2) == 1 and x.stride(1) == x.shape[2] else x.contiguous()


def store_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """k/v [T, Hkv, D] -> caches [num_blocks, block_size, Hkv, D] at slot_mapping [T] (int64; < 0: skip)."""
    check_device(k, v, k_cache, v_cache, slot_mapping)
    num_rows = k.shape[0]
    if num_rows == 0:
        return
    assert k_cache.is_contiguous() and v_cache.is_contiguous() and k_cache.shape == v_cache.shape
    k, v = _rows(k.to(k_cache.dtype)), _rows(v.to(v_cache.dtype))  # torch's rounding (the interpreter truncates)
    row_size = k.shape[1] * k.shape[2]
    _store_kv_kernel[(num_rows,)](k, v, k_cache, v_cache, slot_mapping, k.stride(0), v.stride(0), k_cache.stride(1),
                                  row_size, BLOCK=triton.next_power_of_2(row_size))
