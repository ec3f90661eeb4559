"""FlashInfer's index arrays (qo_indptr, kv_indptr, kv_indices, kv_last_page_len) for mixed
prefill/verify/decode steps, checked without flashinfer: attention computed from the plan alone, as
FlashInfer defines it (pages in CSR order, causal aligned bottom-right), equals the torch backend's."""
from __future__ import annotations

import pytest
import torch

from sparkserve.attention.base import PagedBatch
from sparkserve.attention.flashinfer_backend import plan_paged
from sparkserve.attention.torch_backend import TorchBackend

BS = 4


def _attention_from_plan(plan, q, k_cache, v_cache, scale):
    """What FlashInfer's paged prefill (causal) / decode compute from these arrays, in plain torch."""
    out = torch.empty_like(q)
    group = q.shape[1] // k_cache.shape[2]
    for b in range(plan.qo_indptr.shape[0] - 1):
        q0, q1 = plan.qo_indptr[b].item(), plan.qo_indptr[b + 1].item()
        pages = plan.kv_indices[plan.kv_indptr[b]:plan.kv_indptr[b + 1]]
        kv_len = (len(pages) - 1) * plan.page_size + plan.kv_last_page_len[b].item()
        keys = k_cache[pages].flatten(0, 1)[:kv_len].repeat_interleave(group, dim=1)  # [kv_len, Hq, D]
        values = v_cache[pages].flatten(0, 1)[:kv_len].repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q[q0:q1], keys) * scale
        q_len = q1 - q0
        visible = torch.arange(kv_len)[None] <= (kv_len - q_len + torch.arange(q_len))[:, None]
        probs = scores.masked_fill(~visible, float("-inf")).softmax(-1)
        out[q0:q1] = torch.einsum("hqk,khd->qhd", probs, values)
    return out


@pytest.mark.parametrize("query_lens,seq_lens", [
    ([1, 8, 13, 1, 3], [9, 20, 13, 4, 8]),  # decode, verify block, prefill, decode at a page edge, chunk
    ([1, 1, 1], [1, 5, 8]),  # all decode: the decode kernel's plan
])
def test_plan_reproduces_paged_attention(query_lens, seq_lens):
    g = torch.Generator().manual_seed(0)
    perm = (torch.randperm(40, generator=g) + 1).tolist()
    tables, used = [], 0
    for n in seq_lens:
        need = -(-n // BS) + 1  # one spare block: the plan must take only the pages in use
        tables.append(perm[used:used + need])
        used += need
    slots = [tables[b][p // BS] * BS + p % BS for b, (ql, sl) in enumerate(zip(query_lens, seq_lens))
             for p in range(sl - ql, sl)]
    batch = PagedBatch(query_lens, seq_lens, tables, BS, slots)
    plan = plan_paged(batch)
    assert plan.all_decode == all(n == 1 for n in query_lens)
    assert plan.qo_indptr.tolist() == [0, *torch.tensor(query_lens).cumsum(0).tolist()]
    assert all(1 <= n <= BS for n in plan.kv_last_page_len.tolist())
    assert plan.kv_indptr[-1].item() == plan.kv_indices.shape[0] == sum(-(-n // BS) for n in seq_lens)
    assert all(t.dtype == torch.int32 for t in (plan.qo_indptr, plan.kv_indptr, plan.kv_indices, plan.kv_last_page_len))

    k_cache, v_cache = torch.randn(41, BS, 2, 8, generator=g), torch.randn(41, BS, 2, 8, generator=g)
    n = sum(query_lens)
    q, k, v = (torch.randn(n, h, 8, generator=g) for h in (4, 2, 2))
    ref = TorchBackend()
    expected = ref.forward(q, k, v, k_cache, v_cache, ref.build_metadata(batch, "cpu"), 0.3)  # writes k/v
    torch.testing.assert_close(_attention_from_plan(plan, q, k_cache, v_cache, 0.3), expected, atol=1e-5, rtol=1e-5)


def test_plan_rejects_short_tables():
    with pytest.raises(ValueError, match="cannot hold"):
        plan_paged(PagedBatch([1], [9], [[1, 2]], BS, [0]))
