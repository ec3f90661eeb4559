"""The Triton K/V store against ``index_copy_``; negative slots (CUDA-graph padding rows) write nothing."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from sparkserve_triton.kv_store import store_kv  # noqa: E402


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_store_matches_index_copy_and_skips_negative_slots(device, cache_dtype):
    g = torch.Generator().manual_seed(0)
    caches = [torch.randn(6, 4, 2, 8, generator=g).to(device, cache_dtype) for _ in range(2)]
    qkv = torch.randn(5, 3 * 2 * 8, generator=g).to(device)  # k/v as strided views of a fused output
    k, v = qkv[:, 16:32].view(5, 2, 8), qkv[:, 32:].view(5, 2, 8)
    slots = torch.tensor([3, -1, 17, 0, -1], device=device)
    expected = [c.clone() for c in caches]
    keep = slots >= 0
    for cache, x in zip(expected, (k, v)):
        cache.view(-1, 2, 8).index_copy_(0, slots[keep], x[keep].to(cache_dtype))
    store_kv(k, v, *caches, slots)
    assert all(torch.equal(a, b) for a, b in zip(caches, expected))
