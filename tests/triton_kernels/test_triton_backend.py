"""The triton attention backend through the AttentionBackend protocol, against the torch backend, and
the registry's answers for triton/flashinfer off a GPU."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from sparkserve.attention.base import DraftBatch, DraftMask, PagedBatch  # noqa: E402
from sparkserve.attention.registry import get_backend  # noqa: E402
from sparkserve.attention.torch_backend import TorchBackend  # noqa: E402

BS = 4


def _step(query_lens, seq_lens, tables):
    slots = [tables[b][p // BS] * BS + p % BS for b, (ql, sl) in enumerate(zip(query_lens, seq_lens))
             for p in range(sl - ql, sl)]
    return PagedBatch(query_lens, seq_lens, tables, BS, slots)


def test_backend_matches_torch_over_two_steps_and_drafting(device):
    backend, ref = get_backend("triton", device), TorchBackend()
    assert backend.name == "triton"
    g = torch.Generator().manual_seed(3)
    caches = [torch.zeros(24, BS, 2, 8).to(device) for _ in range(2)]
    ref_caches = [c.clone() for c in caches]
    tables = [[3, 7, 1], [2, 9, 4, 5], [11]]
    # step 1: two prefills and a 1-token prompt; step 2: a decode row, a verify block, a decode row
    for query_lens, seq_lens in (([6, 9, 1], [6, 9, 1]), ([1, 5, 1], [7, 14, 2])):
        batch = _step(query_lens, seq_lens, tables)
        n = sum(query_lens)
        q, k, v = (torch.randn(n, h, 8, generator=g).to(device) for h in (4, 2, 2))
        out = backend.forward(q, k, v, *caches, backend.build_metadata(batch, device), 0.35)
        expected = ref.forward(q, k, v, *ref_caches, ref.build_metadata(batch, device), 0.35)
        torch.testing.assert_close(out, expected, atol=2e-5, rtol=2e-5)
        assert all(torch.equal(a, b) for a, b in zip(caches, ref_caches))
    draft = DraftBatch([7, 13, 0], tables, BS, max_fresh=4)
    q, k, v = (torch.randn(3, f, h, 8, generator=g).to(device) for f, h in ((3, 4), (4, 2), (4, 2)))
    for mask in (DraftMask(), DraftMask(causal=True, window=6)):
        out = backend.forward_draft(q, k, v, *caches, backend.build_draft_metadata(draft, device), 0.35, mask)
        expected = ref.forward_draft(q, k, v, *ref_caches, ref.build_draft_metadata(draft, device), 0.35, mask)
        torch.testing.assert_close(out, expected, atol=2e-5, rtol=2e-5)
    assert all(torch.equal(a, b) for a, b in zip(caches, ref_caches))  # drafting wrote nothing


def test_registry_refuses_gpu_backends_on_cpu(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    for name in ("triton", "flashinfer"):
        with pytest.raises(ValueError, match="needs a CUDA device"):
            get_backend(name, "cpu")
