"""FlashInfer's index arrays (qo_indptr, kv_indptr, kv_indices, kv_last_page_len) for mixed
prefill/verify/decode steps, checked without flashinfer: attention computed from the plan alone, as
FlashInfer defines it (pages in CSR order, causal aligned bottom-right), equals the torch backend's.
The backend's constructor, plan() and run() arguments bind to the wrappers' signatures: a snapshot of
flashinfer-python 0.3.1.post1 (the gpu extra's pin) always, the installed package's where it imports
(import needs no GPU; its kernels are JIT-built on first use)."""
from __future__ import annotations

import importlib.util
import inspect

import pytest
import torch

from sparkserve.attention.base import PagedBatch
from sparkserve.attention.flashinfer_backend import (
    plan_call,
    plan_paged,
    wrapper_kwargs,
)
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


# flashinfer-python 0.3.1.post1's wrapper signatures (read from the installed sdist): names before "|" have
# no default, "*args" is variadic, the names after it keyword-only
_PINNED = "0.3.1.post1"
_SNAPSHOT = {
    ("BatchPrefillWithPagedKVCacheWrapper", "__init__"):
        "self float_workspace_buffer | kv_layout use_cuda_graph qo_indptr_buf paged_kv_indptr_buf "
        "paged_kv_indices_buf paged_kv_last_page_len_buf custom_mask_buf mask_indptr_buf backend jit_args jit_kwargs",
    ("BatchPrefillWithPagedKVCacheWrapper", "plan"):
        "self qo_indptr paged_kv_indptr paged_kv_indices paged_kv_last_page_len num_qo_heads num_kv_heads "
        "head_dim_qk page_size | head_dim_vo custom_mask packed_custom_mask causal pos_encoding_mode "
        "use_fp16_qk_reduction sm_scale window_left logits_soft_cap rope_scale rope_theta q_data_type kv_data_type "
        "non_blocking prefix_len_ptr token_pos_in_items_ptr token_pos_in_items_len max_item_len_ptr seq_lens "
        "seq_lens_q block_tables max_token_per_sequence max_sequence_kv",
    ("BatchPrefillWithPagedKVCacheWrapper", "run"):
        "self q paged_kv_cache | *args q_scale k_scale v_scale out lse return_lse enable_pdl window_left sinks",
    ("BatchDecodeWithPagedKVCacheWrapper", "__init__"):
        "self float_workspace_buffer | kv_layout use_cuda_graph use_tensor_cores paged_kv_indptr_buffer "
        "paged_kv_indices_buffer paged_kv_last_page_len_buffer backend jit_args",
    ("BatchDecodeWithPagedKVCacheWrapper", "plan"):
        "self indptr indices last_page_len num_qo_heads num_kv_heads head_dim page_size | pos_encoding_mode "
        "window_left logits_soft_cap q_data_type kv_data_type data_type sm_scale rope_scale rope_theta non_blocking "
        "block_tables seq_lens",
    ("BatchDecodeWithPagedKVCacheWrapper", "run"):
        "self q paged_kv_cache | *args q_scale k_scale v_scale out lse return_lse enable_pdl window_left sinks "
        "q_len_per_req",
}


def _from_snapshot(spec: str) -> inspect.Signature:
    required, optional = (part.split() for part in spec.split("|"))
    P = inspect.Parameter
    params = [P(n, P.POSITIONAL_OR_KEYWORD) for n in required]
    kind = P.POSITIONAL_OR_KEYWORD
    for n in optional:
        if n == "*args":
            params.append(P("args", P.VAR_POSITIONAL))
            kind = P.KEYWORD_ONLY
        else:
            params.append(P(n, kind, default=None))
    return inspect.Signature(params)


def _to_snapshot(sig: inspect.Signature) -> str:
    P = inspect.Parameter
    names = [("*" + p.name if p.kind == P.VAR_POSITIONAL else p.name, p.default is P.empty and
              p.kind != P.VAR_POSITIONAL) for p in sig.parameters.values()]
    return " ".join(n for n, req in names if req) + " | " + " ".join(n for n, req in names if not req)


def _our_calls():
    """(class, method) -> (args, kwargs) exactly as FlashInferBackend passes them, for a mixed and a decode step."""
    mixed = plan_paged(PagedBatch([1, 8], [9, 20], [[1, 2, 3], [4, 5, 6, 7, 8]], BS, list(range(9))))
    decode = plan_paged(PagedBatch([1, 1], [9, 20], [[1, 2, 3], [4, 5, 6, 7, 8]], BS, [0, 1]))
    assert not mixed.all_decode and decode.all_decode
    q, cache = torch.zeros(9, 4, 8), torch.zeros(9, BS, 2, 8)
    prefill_kwargs, decode_kwargs = wrapper_kwargs()
    return {
        ("BatchPrefillWithPagedKVCacheWrapper", "__init__"): ((torch.empty(8, dtype=torch.uint8),), prefill_kwargs),
        ("BatchPrefillWithPagedKVCacheWrapper", "plan"): plan_call(mixed, 4, 2, 8, q.dtype, cache.dtype, 0.3),
        ("BatchPrefillWithPagedKVCacheWrapper", "run"): ((q, (cache, cache)), {}),
        ("BatchDecodeWithPagedKVCacheWrapper", "__init__"): ((torch.empty(8, dtype=torch.uint8),), decode_kwargs),
        ("BatchDecodeWithPagedKVCacheWrapper", "plan"): plan_call(decode, 4, 2, 8, q.dtype, cache.dtype, 0.3),
        ("BatchDecodeWithPagedKVCacheWrapper", "run"): ((q[:2], (cache, cache)), {}),
    }


def test_plan_call_binds_to_pinned_flashinfer_signatures():
    for (cls, method), (args, kwargs) in _our_calls().items():
        bound = _from_snapshot(_SNAPSHOT[cls, method]).bind(None, *args, **kwargs).arguments
        if method == "plan":
            assert bound["num_qo_heads"] == 4 and bound["num_kv_heads"] == 2 and bound["page_size"] == BS
            assert bound["sm_scale"] == 0.3 and bound["q_data_type"] is bound["kv_data_type"] is torch.float32
            assert bound.get("causal", False) == (cls.startswith("BatchPrefill"))
            assert all(a.dtype == torch.int32 for a in args if isinstance(a, torch.Tensor))  # FlashInfer's idtype
        if method == "__init__":
            assert bound["kv_layout"] == "NHD"


@pytest.mark.skipif(importlib.util.find_spec("flashinfer") is None, reason="flashinfer not installed")
def test_plan_call_binds_to_installed_flashinfer():
    import flashinfer

    for (cls, method), (args, kwargs) in _our_calls().items():
        sig = inspect.signature(getattr(getattr(flashinfer, cls), method))
        sig.bind(None, *args, **kwargs)
        if flashinfer.__version__ == _PINNED:  # the snapshot above is that version's
            assert _to_snapshot(sig) == _SNAPSHOT[cls, method], (cls, method)
