"""The native CPU paged attention (``attention/cpu_backend.py``, ``csrc/attention.cpp``) against the
torch backend: mixed decode / prefill-chunk / verify rows in one step, block boundaries, GQA,
head dims, fp32 / bf16 / fp16 caches, empty and 1-token rows, scattered block tables; the drafting
variant against ``torch_draft``; the cache writes; threads; the registry's choice.

A failed build fails these tests; only ``SPARKSERVE_NATIVE=0`` skips them.
"""
import pytest
import torch

from sparkserve import native
from sparkserve.attention import registry
from sparkserve.attention.base import DraftBatch, DraftMask, PagedBatch
from sparkserve.attention.torch_backend import TorchBackend
from tests.attention.test_draft_attention import PATTERNS, random_case

if not native.enabled_by_env():
    pytest.skip("SPARKSERVE_NATIVE=0: native kernels off", allow_module_level=True)
native.require()

from sparkserve.attention.cpu_backend import CpuNativeBackend

# (new rows, kv length after the step) per sequence: decodes at and around block boundaries (block
# size 16), a first token, an empty row, a prefill chunk ending mid-block, a whole prompt, verify blocks
MIXED = [(1, 17), (1, 16), (1, 1), (0, 5), (7, 40), (8, 8), (8, 33), (1, 100), (23, 23), (1, 32)]
TOL = {torch.float32: {"atol": 2e-5, "rtol": 1e-5}, torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2},
       torch.float16: {"atol": 2e-3, "rtol": 2e-3}}


def paged_step(rows, block_size, heads, head_dim, dtype, cache_dtype=None, seed=0):
    """A random step: caches full of garbage, each sequence's table drawn from a shuffled pool
    (never contiguous, with a spare block), its new tokens' slots at its last positions."""
    hq, hkv = heads
    gen = torch.Generator().manual_seed(seed)
    num_blocks = sum(-(-n // block_size) + 1 for _, n in rows) + 2
    pool = (torch.randperm(num_blocks - 1, generator=gen) + 1).tolist()
    tables = [[pool.pop() for _ in range(-(-n // block_size) + 1)] for _, n in rows]
    slots = [t[p // block_size] * block_size + p % block_size
             for (q, n), t in zip(rows, tables) for p in range(n - q, n)]
    batch = PagedBatch([q for q, _ in rows], [n for _, n in rows], tables, block_size, slots)
    shape = (num_blocks, block_size, hkv, head_dim)
    caches = [torch.randn(shape, generator=gen).to(cache_dtype or dtype) for _ in range(2)]
    t = len(slots)
    q = torch.randn(t, hq, head_dim, generator=gen).to(dtype)
    k, v = (torch.randn(t, hkv, head_dim, generator=gen).to(dtype) for _ in range(2))
    return batch, q, k, v, caches


def run(backend, batch, q, k, v, caches, scale=0.3):
    kc, vc = (c.clone() for c in caches)
    out = backend.forward(q, k, v, kc, vc, backend.build_metadata(batch, torch.device("cpu")), scale)
    return out, kc, vc


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("head_dim", [32, 64, 128])
@pytest.mark.parametrize("heads", [(4, 4), (8, 2)], ids=["mha", "gqa4"])
def test_mixed_step_matches_torch(heads, head_dim, dtype):
    batch, q, k, v, caches = paged_step(MIXED, 16, heads, head_dim, dtype)
    out, kc, vc = run(CpuNativeBackend(), batch, q, k, v, caches)
    # the reference in fp32 on the same (rounded) values: the native kernel accumulates in fp32 too
    want, kc_ref, vc_ref = run(TorchBackend(), batch, q.float(), k.float(), v.float(), [c.float() for c in caches])
    assert out.dtype == dtype and out.shape == q.shape
    torch.testing.assert_close(out.float(), want, **TOL[dtype])
    assert torch.equal(kc.float(), kc_ref) and torch.equal(vc.float(), vc_ref)  # same slots written, nothing else
    if dtype != torch.float32:  # and no worse than the torch backend run in that dtype
        ref_low = run(TorchBackend(), batch, q, k, v, caches)[0].float()
        assert (out.float() - want).abs().max() <= 1.5 * (ref_low - want).abs().max() + 1e-6


def test_kv_head_groups_wider_than_a_job():
    """80 q heads on one kv head: a job (one query row's group at least) outgrows the usual 64 rows."""
    batch, q, k, v, caches = paged_step([(1, 20), (3, 9)], 16, (80, 1), 32, torch.float32, seed=8)
    torch.testing.assert_close(run(CpuNativeBackend(), batch, q, k, v, caches)[0],
                               run(TorchBackend(), batch, q, k, v, caches)[0], **TOL[torch.float32])


@pytest.mark.parametrize("block_size", [1, 4, 64])
def test_block_sizes(block_size):
    batch, q, k, v, caches = paged_step(MIXED, block_size, (8, 2), 32, torch.float32, seed=1)
    out = run(CpuNativeBackend(), batch, q, k, v, caches)[0]
    torch.testing.assert_close(out, run(TorchBackend(), batch, q, k, v, caches)[0], **TOL[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_head_dim_without_a_vector_kernel(dtype):
    """head_dim 24: the portable loops (the vector kernels are built for head_dim 32, 64 and 128)."""
    batch, q, k, v, caches = paged_step(MIXED, 16, (8, 2), 24, dtype, seed=7)
    want = run(TorchBackend(), batch, q.float(), k.float(), v.float(), [c.float() for c in caches])[0]
    torch.testing.assert_close(run(CpuNativeBackend(), batch, q, k, v, caches)[0].float(), want, **TOL[dtype])


def test_fp16_and_fp32_over_bf16_cache():
    batch, q, k, v, caches = paged_step(MIXED, 16, (8, 2), 64, torch.float16, seed=2)
    want = run(TorchBackend(), batch, q.float(), k.float(), v.float(), [c.float() for c in caches])[0]
    torch.testing.assert_close(run(CpuNativeBackend(), batch, q, k, v, caches)[0].float(), want, **TOL[torch.float16])
    batch, q, k, v, caches = paged_step(MIXED, 16, (8, 2), 64, torch.float32, torch.bfloat16, seed=3)
    out, kc, vc = run(CpuNativeBackend(), batch, q, k, v, caches)
    want, kc_ref, vc_ref = run(TorchBackend(), batch, q, k, v, caches)
    torch.testing.assert_close(out, want, **TOL[torch.float32])  # both read the same bf16 keys as fp32
    assert torch.equal(kc, kc_ref) and torch.equal(vc, vc_ref)


def test_strided_qkv_from_a_fused_projection():
    """q/k/v as the decoder hands them: views into one [T, (Hq + 2 Hkv) D] projection output."""
    batch, q, k, v, caches = paged_step(MIXED, 16, (8, 2), 32, torch.float32, seed=4)
    qkv = torch.cat([q.flatten(1), k.flatten(1), v.flatten(1)], 1)
    qs, ks, vs = (x.view(len(q), -1, 32) for x in qkv.split([256, 64, 64], 1))
    assert not qs.is_contiguous()
    torch.testing.assert_close(run(CpuNativeBackend(), batch, qs, ks, vs, caches)[0],
                               run(TorchBackend(), batch, q, k, v, caches)[0], **TOL[torch.float32])


def test_threads_split_work_without_changing_results():
    """A step big enough to run on every intra-op thread gives the bits one thread gives."""
    rows = [(1, 300 + 37 * i) for i in range(16)] + [(8, 500), (64, 200)]
    batch, q, k, v, caches = paged_step(rows, 16, (8, 2), 32, torch.float32, seed=5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run(CpuNativeBackend(), batch, q, k, v, caches)[0]
        torch.set_num_threads(2)
        two = run(CpuNativeBackend(), batch, q, k, v, caches)[0]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    torch.testing.assert_close(one, run(TorchBackend(), batch, q, k, v, caches)[0], **TOL[torch.float32])


def test_short_table_is_an_error_not_a_wild_read():
    batch, q, k, v, caches = paged_step([(1, 20)], 16, (4, 4), 32, torch.float32)
    batch.block_tables[0] = batch.block_tables[0][:1]
    with pytest.raises(RuntimeError, match="20 cached positions need 2 blocks, its table has 1"):
        run(CpuNativeBackend(), batch, q, k, v, caches)


# -- drafting ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("block_size", [1, 16])
@pytest.mark.parametrize("pattern", PATTERNS, ids=str)
def test_forward_draft_matches_torch(pattern, block_size, dtype):
    lengths = [9, 0, 17, 1, 16, 40]  # a request with no context, one ending on a block boundary
    for num_query, num_fresh in [(5, 5), (1, 4), (2, 6)]:
        q, k, v, caches, tables = random_case(lengths, block_size, (8, 2), num_query, num_fresh, seed=num_fresh)
        q, k, v, caches = q.to(dtype), k.to(dtype), v.to(dtype), [c.to(dtype) for c in caches]
        before = [c.clone() for c in caches]
        draft = DraftBatch(lengths, tables, block_size, max_fresh=num_fresh)
        native_backend, torch_backend = CpuNativeBackend(), TorchBackend()
        out = native_backend.forward_draft(q, k, v, *caches, native_backend.build_draft_metadata(draft, "cpu"), 0.4,
                                           pattern)
        want = torch_backend.forward_draft(q.float(), k.float(), v.float(), *[c.float() for c in caches],
                                           torch_backend.build_draft_metadata(draft, "cpu"), 0.4, pattern)
        assert out.dtype == dtype and out.shape == q.shape
        torch.testing.assert_close(out.float(), want, **TOL[dtype])
        assert all(torch.equal(c, b) for c, b in zip(caches, before))  # fresh K/V are never written


def test_draft_chain_shares_one_metadata_and_checks_max_fresh():
    lengths = [6, 2, 11]
    q, k, v, (kc, vc), tables = random_case(lengths, 4, (8, 2), num_query=1, num_fresh=4, seed=1)
    backend, ref = CpuNativeBackend(), TorchBackend()
    draft = DraftBatch(lengths, tables, 4, max_fresh=4)
    meta, ref_meta = backend.build_draft_metadata(draft, "cpu"), ref.build_draft_metadata(draft, "cpu")
    for num_fresh in range(1, 5):
        args = (q, k[:, :num_fresh], v[:, :num_fresh], kc, vc)
        torch.testing.assert_close(backend.forward_draft(*args, meta, 0.5, DraftMask(causal=True)),
                                   ref.forward_draft(*args, ref_meta, 0.5, DraftMask(causal=True)))
    with pytest.raises(ValueError, match="5 fresh rows exceed the metadata's max_fresh 4"):
        backend.forward_draft(q, torch.cat([k, k[:, :1]], 1), torch.cat([v, v[:, :1]], 1), kc, vc, meta, 0.5,
                              DraftMask())
    with pytest.raises(ValueError, match="draft request 1: 1 blocks of 4 cannot hold its 5 context positions"):
        backend.build_draft_metadata(DraftBatch([2, 5], [[1], [2]], 4, 1), "cpu")


@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                    (torch.float32, torch.bfloat16)], ids=str)
def test_write_kv_matches_torch(dtypes):
    src_dtype, cache_dtype = dtypes
    gen = torch.Generator().manual_seed(6)
    caches = [torch.zeros(5, 4, 2, 32, dtype=cache_dtype) for _ in range(2)]
    k, v = (torch.randn(6, 2, 32, generator=gen).to(src_dtype) for _ in range(2))
    slots = torch.tensor([3, 19, 4, 0, 12, 7])
    mine, ref = [c.clone() for c in caches], [c.clone() for c in caches]
    CpuNativeBackend().write_kv(k, v, *mine, slots)
    TorchBackend().write_kv(k, v, *ref, slots)
    assert all(torch.equal(a, b) for a, b in zip(mine, ref))
    CpuNativeBackend().write_kv(k, v, *mine, torch.tensor([-1, -1, -1, -1, -1, 2]))  # negative slots: skipped
    assert torch.equal(mine[0].view(-1, 2, 32)[2], k[5].to(cache_dtype))
    assert torch.equal(mine[0].view(-1, 2, 32)[[3, 19, 4, 0, 12, 7]], ref[0].view(-1, 2, 32)[[3, 19, 4, 0, 12, 7]])


# -- the registry -----------------------------------------------------------------------------------
def test_auto_picks_native_on_cpu_and_honours_the_override(monkeypatch):
    monkeypatch.delenv("SPARKSERVE_ATTENTION_BACKEND", raising=False)
    assert registry.get_backend("auto", "cpu").name == "cpu"
    assert registry.resolve("auto", "cuda", importable=lambda module: False) == "torch"  # nothing GPU imports
    monkeypatch.setenv("SPARKSERVE_ATTENTION_BACKEND", "torch")
    assert registry.get_backend("auto", "cpu").name == "torch"
    assert registry.get_backend("cpu").name == "cpu"  # an explicit name is not overridden
    monkeypatch.setattr(registry, "_native_available", lambda: False)
    monkeypatch.delenv("SPARKSERVE_ATTENTION_BACKEND")
    assert registry.get_backend("auto", "cpu").name == "torch"
    with pytest.raises(ValueError, match="attention backend 'cpu' is not available here"):
        registry.get_backend("cpu")
