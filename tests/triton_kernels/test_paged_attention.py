"""The Triton paged attention kernels against the torch backend (target rows and drafting)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from sparkserve.attention import torch_draft  # noqa: E402
from sparkserve.attention.base import DraftBatch, DraftMask, PagedBatch  # noqa: E402
from sparkserve.attention.torch_backend import TorchBackend  # noqa: E402
from sparkserve_triton.draft_attention import draft_attention  # noqa: E402
from sparkserve_triton.paged_attention import paged_attention  # noqa: E402

BLOCK_SIZE = 4


def _world(seed, num_blocks=40, num_kv_heads=2, head_dim=16, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    shape = (num_blocks, BLOCK_SIZE, num_kv_heads, head_dim)
    k_cache = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    v_cache = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    return g, k_cache, v_cache


def _tables(g, seq_lens, num_blocks):
    """Disjoint shuffled block tables with one spare block each (tables may be longer than needed)."""
    perm = torch.randperm(num_blocks - 1, generator=g) + 1
    tables, used = [], 0
    for n in seq_lens:
        need = -(-n // BLOCK_SIZE) + 1
        tables.append(perm[used:used + need].tolist())
        used += need
    return tables


def _paged_batch(query_lens, seq_lens, g, num_blocks):
    tables = _tables(g, seq_lens, num_blocks)
    slots = [tables[b][p // BLOCK_SIZE] * BLOCK_SIZE + p % BLOCK_SIZE
             for b, (ql, sl) in enumerate(zip(query_lens, seq_lens)) for p in range(sl - ql, sl)]
    return PagedBatch(list(query_lens), list(seq_lens), tables, BLOCK_SIZE, slots)


@pytest.mark.parametrize("dtype,num_heads,tol", [(torch.float32, 4, 2e-5), (torch.float32, 6, 2e-5),
                                                 (torch.bfloat16, 2, 3e-2)])
def test_mixed_rows_match_torch_backend(device, dtype, num_heads, tol):
    # decode rows, a prefill chunk of 23 rows (with 3 heads per kv head: two tiles of 64 (row, head) pairs, a
    # row split between them), verify blocks, a fresh prefill; GQA 4:2 and 6:2, MHA in bf16
    query_lens, seq_lens = [1, 23, 8, 1, 5, 3], [9, 36, 13, 1, 5, 21]
    g, k_cache, v_cache = _world(0, dtype=dtype, device=device)
    batch = _paged_batch(query_lens, seq_lens, g, k_cache.shape[0])
    num_tokens, scale = sum(query_lens), 0.3
    q = torch.randn(num_tokens, num_heads, 16, generator=g).to(device=device, dtype=dtype)
    k = torch.randn(num_tokens, 2, 16, generator=g).to(device=device, dtype=dtype)
    v = torch.randn(num_tokens, 2, 16, generator=g).to(device=device, dtype=dtype)
    ref_backend = TorchBackend()
    kc_ref, vc_ref = k_cache.clone(), v_cache.clone()
    expected = ref_backend.forward(q, k, v, kc_ref, vc_ref, ref_backend.build_metadata(batch, device), scale)

    k_cache.view(-1, 2, 16)[torch.tensor(batch.slot_mapping, device=device)] = k  # the backend's write
    v_cache.view(-1, 2, 16)[torch.tensor(batch.slot_mapping, device=device)] = v
    width = max(len(t) for t in batch.block_tables)
    tables = torch.tensor([t + [0] * (width - len(t)) for t in batch.block_tables], dtype=torch.int32, device=device)
    starts = torch.tensor([0, *torch.tensor(query_lens).cumsum(0).tolist()], dtype=torch.int32, device=device)
    out = paged_attention(q, k_cache, v_cache, tables, torch.tensor(seq_lens, dtype=torch.int32, device=device),
                          starts, max(query_lens), scale)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), expected.float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("mask", [DraftMask(), DraftMask(causal=True), DraftMask(causal=True, window=5),
                                  DraftMask(window=3)])
def test_draft_rows_match_torch_draft(device, mask):
    context_lens, num_fresh, num_query = [0, 7, 13, 2], 6, 4
    g, k_cache, v_cache = _world(1, device=device)
    tables = _tables(g, context_lens, k_cache.shape[0])
    batch = DraftBatch(context_lens, tables, BLOCK_SIZE, max_fresh=8)
    num_req, scale = len(context_lens), 0.25
    q = torch.randn(num_req, num_query, 4, 16, generator=g).to(device)
    k = torch.randn(num_req, num_fresh, 2, 16, generator=g).to(device)
    v = torch.randn(num_req, num_fresh, 2, 16, generator=g).to(device)
    meta = torch_draft.build_draft_metadata(batch, device)
    expected = torch_draft.forward_draft(q, k, v, k_cache, v_cache, meta, scale, mask)
    need = -(-max(context_lens) // BLOCK_SIZE)
    table_t = torch.tensor([t[:need] + [0] * (need - len(t[:need])) for t in tables], dtype=torch.int32, device=device)
    out = draft_attention(q, k, v, k_cache, v_cache, table_t, torch.tensor(context_lens, dtype=torch.int32,
                                                                           device=device), scale, mask.causal,
                          mask.window)
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=2e-5)
