"""GPU only: the triton and flashinfer backends at Qwen3-8B attention shapes (32 query heads, 8 kv heads,
head size 128, bf16, 16-token blocks) against the torch backend, for a mixed step and an all-decode
step (FlashInfer's two plans), and triton's drafting."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from sparkserve.attention.base import DraftBatch, DraftMask, PagedBatch
from sparkserve.attention.registry import get_backend
from sparkserve.attention.torch_backend import TorchBackend

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

BS, HQ, HKV, D = 16, 32, 8, 128


def _batch(query_lens, seq_lens, g):
    perm = (torch.randperm(400, generator=g) + 1).tolist()
    tables, used = [], 0
    for n in seq_lens:
        need = -(-n // BS)
        tables.append(perm[used:used + need])
        used += need
    slots = [tables[b][p // BS] * BS + p % BS for b, (ql, sl) in enumerate(zip(query_lens, seq_lens))
             for p in range(sl - ql, sl)]
    return PagedBatch(query_lens, seq_lens, tables, BS, slots)


@pytest.mark.parametrize("name", ["triton", "flashinfer"])
@pytest.mark.parametrize("query_lens,seq_lens", [([1, 8, 300, 1, 5], [700, 260, 300, 17, 1029]),
                                                 ([1] * 6, [1, 16, 17, 500, 1024, 3000])])
def test_backend_matches_torch_at_qwen3_shapes(name, query_lens, seq_lens):
    if name == "flashinfer" and importlib.util.find_spec("flashinfer") is None:
        pytest.skip("flashinfer not installed")
    backend, ref = get_backend(name, "cuda"), TorchBackend()
    g = torch.Generator().manual_seed(0)
    batch = _batch(query_lens, seq_lens, g)
    shape = (401, BS, HKV, D)
    k_cache = torch.randn(shape, generator=g).to("cuda", torch.bfloat16)
    v_cache = torch.randn(shape, generator=g).to("cuda", torch.bfloat16)
    n = sum(query_lens)
    q, k, v = (torch.randn(n, h, D, generator=g).to("cuda", torch.bfloat16) for h in (HQ, HKV, HKV))
    kc, vc = k_cache.clone(), v_cache.clone()
    expected = ref.forward(q, k, v, kc, vc, ref.build_metadata(batch, "cuda"), D ** -0.5)
    meta = backend.build_metadata(batch, "cuda")
    for _ in range(2):  # the second layer reuses the step's plan
        out = backend.forward(q, k, v, k_cache, v_cache, meta, D ** -0.5)
        torch.testing.assert_close(out.float(), expected.float(), atol=2e-2, rtol=2e-2)
    assert torch.equal(k_cache, kc) and torch.equal(v_cache, vc)


def test_triton_drafting_matches_torch_at_qwen3_shapes():
    backend, ref = get_backend("triton", "cuda"), TorchBackend()
    g = torch.Generator().manual_seed(1)
    context_lens = [0, 37, 900, 16]
    batch = _batch([1] * 4, [max(n, 1) for n in context_lens], g)
    draft = DraftBatch(context_lens, batch.block_tables, BS, max_fresh=8)
    k_cache = torch.randn(401, BS, HKV, D, generator=g).to("cuda", torch.bfloat16)
    v_cache = torch.randn(401, BS, HKV, D, generator=g).to("cuda", torch.bfloat16)
    q = torch.randn(4, 7, HQ, D, generator=g).to("cuda", torch.bfloat16)
    k, v = (torch.randn(4, 8, HKV, D, generator=g).to("cuda", torch.bfloat16) for _ in range(2))
    for mask in (DraftMask(), DraftMask(causal=True), DraftMask(causal=True, window=64)):
        out = backend.forward_draft(q, k, v, k_cache, v_cache, backend.build_draft_metadata(draft, "cuda"),
                                    D ** -0.5, mask)
        expected = ref.forward_draft(q, k, v, k_cache, v_cache, ref.build_draft_metadata(draft, "cuda"),
                                     D ** -0.5, mask)
        torch.testing.assert_close(out.float(), expected.float(), atol=2e-2, rtol=2e-2)
