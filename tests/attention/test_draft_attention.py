"""Drafting attention through the backend (``build_draft_metadata`` / ``forward_draft`` / ``write_kv``)
against the drafters' former dense path: each request's context gathered into a padded rectangle,
one boolean mask over [context; fresh] keys, masked SDPA."""
import importlib.util

import pytest
import torch

from sparkserve import native
from sparkserve.attention.base import DraftAttentionContext, DraftBatch, DraftMask
from sparkserve.attention.registry import available_backends, get_backend

D = 8


# -- the reference: the drafters' padded-rectangle math before the backend path ----------------------
def context_slots(tables: list[list[int]], lengths: list[int], block_size: int):
    """Slots of positions 0..lengths[r]-1, padded: (slots [R, L] (padding -> 0), valid [R, L])."""
    max_len = max(max(lengths), 1)
    table = torch.zeros(len(tables), -(-max_len // block_size), dtype=torch.long)
    for r, (t, length) in enumerate(zip(tables, lengths)):
        need = -(-length // block_size)
        table[r, :need] = torch.tensor(t[:need], dtype=torch.long)
    pos = torch.arange(max_len)
    slots = table[:, pos // block_size] * block_size + pos % block_size
    valid = pos[None, :] < torch.tensor(lengths)[:, None]
    return torch.where(valid, slots, torch.zeros_like(slots)), valid


def context_block_mask(ctx_valid, q_pos, k_pos, num_ctx: int, causal: bool, window: int | None):
    num_q = q_pos.shape[1]
    visible = torch.ones(q_pos.shape[0], num_q, k_pos.shape[1], dtype=torch.bool)
    visible[:, :, :num_ctx] &= ctx_valid[:, None, :]
    diff = q_pos[:, :, None] - k_pos[:, None, :]
    if causal:
        visible[:, :, num_ctx:] &= diff[:, :, num_ctx:] >= 0
    if window is not None:
        visible &= diff < window
        if not causal:
            visible &= -diff < window
    return visible[:, None]


def reference(q, k, v, k_cache, v_cache, tables, lengths, block_size, scale, mask: DraftMask):
    slots, valid = context_slots(tables, lengths, block_size)
    num_q, num_f = q.shape[1], k.shape[1]
    starts = torch.tensor(lengths)[:, None]
    q_pos = starts + torch.arange(num_f - num_q, num_f)[None]
    k_pos = torch.cat([torch.arange(slots.shape[1]).expand(len(lengths), -1), starts + torch.arange(num_f)], 1)
    m = context_block_mask(valid, q_pos, k_pos, slots.shape[1], mask.causal, mask.window)
    keys = torch.cat([k_cache.view(-1, *k_cache.shape[2:])[slots], k], 1)
    values = torch.cat([v_cache.view(-1, *v_cache.shape[2:])[slots], v], 1)
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2), attn_mask=m, scale=scale,
        enable_gqa=k.shape[2] != q.shape[2])
    return out.transpose(1, 2)
# ---------------------------------------------------------------------------------------------------


def scattered_tables(lengths, block_size, num_blocks, gen, spare_blocks=1):
    """Each request gets enough blocks (plus spares) from a shuffled pool; block 0 stays unused."""
    free = (torch.randperm(num_blocks - 1, generator=gen) + 1).tolist()
    return [[free.pop() for _ in range(-(-n // block_size) + spare_blocks)] for n in lengths]


def random_case(lengths, block_size, heads, num_query, num_fresh, seed=0):
    hq, hkv = heads
    gen = torch.Generator().manual_seed(seed)
    num_blocks = sum(-(-n // block_size) + 1 for n in lengths) + 2
    cache = [torch.randn(num_blocks, block_size, hkv, D, generator=gen) for _ in range(2)]  # garbage everywhere
    tables = scattered_tables(lengths, block_size, num_blocks, gen)
    r = len(lengths)
    q = torch.randn(r, num_query, hq, D, generator=gen)
    k, v = (torch.randn(r, num_fresh, hkv, D, generator=gen) for _ in range(2))
    return q, k, v, cache, tables


PATTERNS = [DraftMask(), DraftMask(causal=True), DraftMask(causal=True, window=3), DraftMask(window=3)]


@pytest.mark.parametrize("block_size", [1, 4, 16])
@pytest.mark.parametrize("heads", [(4, 4), (8, 2)])
@pytest.mark.parametrize("pattern", PATTERNS, ids=str)
def test_forward_draft_matches_dense_reference(block_size, heads, pattern):
    lengths = [9, 0, 17, 1, 4]  # mixed, including a request with no context
    q, k, v, (kc, vc), tables = random_case(lengths, block_size, heads, num_query=5, num_fresh=5)
    backend = get_backend("torch")
    before = kc.clone(), vc.clone()
    meta = backend.build_draft_metadata(DraftBatch(lengths, tables, block_size, k.shape[1]), torch.device("cpu"))
    out = backend.forward_draft(q, k, v, kc, vc, meta, 0.3, pattern)
    want = reference(q, k, v, kc, vc, tables, lengths, block_size, 0.3, pattern)
    assert out.shape == q.shape
    torch.testing.assert_close(out, want, atol=1e-6, rtol=1e-5)
    assert torch.equal(kc, before[0]) and torch.equal(vc, before[1])  # fresh K/V are never written


@pytest.mark.parametrize("pattern", [DraftMask(causal=True), DraftMask(), DraftMask(causal=True, window=2)], ids=str)
def test_chain_steps_share_one_metadata(pattern):
    """Eagle3's shape: one query row per request over a growing fresh chain (Q=1 <= F), one metadata
    for every step, alternating between two layers' caches (each read as its own context)."""
    lengths = [6, 2, 11]
    q, k, v, (kc, vc), tables = random_case(lengths, 4, (8, 2), num_query=1, num_fresh=4, seed=1)
    kc2, vc2 = kc.flip(0).clone(), vc.flip(0).clone()
    backend = get_backend("torch")
    meta = backend.build_draft_metadata(DraftBatch(lengths, tables, 4, max_fresh=4), "cpu")
    ctx = DraftAttentionContext(backend, meta, [(kc, vc), (kc2, vc2)], 0.5)
    for num_fresh in range(1, 5):
        for layer, (kl, vl) in enumerate(ctx.kv_caches):
            for _ in range(2):  # the same cache twice in a row reuses its gathered context
                out = ctx.forward(layer, q, k[:, :num_fresh], v[:, :num_fresh], pattern)
                want = reference(q, k[:, :num_fresh], v[:, :num_fresh], kl, vl, tables, lengths, 4, 0.5, pattern)
                torch.testing.assert_close(out, want, atol=1e-6, rtol=1e-5)
    assert len(meta.masks) == 4  # one mask per (Q, F, pattern), shared by both layers
    with pytest.raises(ValueError, match="5 fresh rows exceed the metadata's max_fresh 4"):
        ctx.forward(0, q, torch.cat([k, k[:, :1]], 1), torch.cat([v, v[:, :1]], 1), pattern)


def test_causal_query_block_inside_longer_fresh_rows():
    """Q < F with a causal mask: query i sits at fresh row F-Q+i and sees fresh rows up to it."""
    lengths = [3, 8]
    q, k, v, (kc, vc), tables = random_case(lengths, 4, (4, 2), num_query=2, num_fresh=5, seed=2)
    backend = get_backend("torch")
    meta = backend.build_draft_metadata(DraftBatch(lengths, tables, 4, k.shape[1]), "cpu")
    pattern = DraftMask(causal=True)
    out = backend.forward_draft(q, k, v, kc, vc, meta, 0.4, pattern)
    torch.testing.assert_close(out, reference(q, k, v, kc, vc, tables, lengths, 4, 0.4, pattern),
                               atol=1e-6, rtol=1e-5)
    visible = meta.mask(2, 5, pattern)[0, 0, :, -5:]  # fresh part of request 0
    assert visible.tolist() == [[True] * 4 + [False], [True] * 5]


def test_write_kv_then_read_back_as_context():
    """``write_kv`` stores rows at their slots; a later draft forward sees exactly them as context."""
    block_size, lengths = 4, [7, 3]
    gen = torch.Generator().manual_seed(3)
    kc, vc = torch.zeros(6, block_size, 2, D), torch.zeros(6, block_size, 2, D)
    tables = [[5, 2], [3]]
    backend = get_backend("torch")
    for table, n in zip(tables, lengths):
        slots = torch.tensor([table[p // block_size] * block_size + p % block_size for p in range(n)])
        backend.write_kv(torch.randn(n, 2, D, generator=gen), torch.randn(n, 2, D, generator=gen), kc, vc, slots)
    written = (kc.flatten(1).abs().sum(1) > 0).nonzero().flatten().tolist()
    assert written == [2, 3, 5]
    q = torch.randn(2, 1, 2, D, generator=gen)
    k, v = torch.randn(2, 1, 2, D, generator=gen), torch.randn(2, 1, 2, D, generator=gen)
    meta = backend.build_draft_metadata(DraftBatch(lengths, tables, block_size, k.shape[1]), "cpu")
    torch.testing.assert_close(backend.forward_draft(q, k, v, kc, vc, meta, 1.0, DraftMask()),
                               reference(q, k, v, kc, vc, tables, lengths, block_size, 1.0, DraftMask()))


def test_block_table_too_short_is_an_error():
    with pytest.raises(ValueError, match="draft request 1: 1 blocks of 4 cannot hold its 5 context positions"):
        get_backend("torch").build_draft_metadata(DraftBatch([2, 5], [[1], [2]], 4, 1), "cpu")


def test_registry_names_only_existing_backends():
    assert available_backends() == ["torch", "cpu", "triton", "flashinfer"]
    for name in ("torch", "cpu"):  # triton/flashinfer need a GPU (tests/triton_kernels/test_triton_backend.py)
        if name != "cpu" or native.available():  # cpu: the native kernels (tests/attention/test_native_attention.py)
            assert get_backend(name).name == name
    for name in ("triton", "flashinfer"):  # their modules exist (flashinfer itself is imported only when used)
        assert importlib.util.find_spec(f"sparkserve.attention.{name}_backend") is not None
    with pytest.raises(ValueError, match="unknown attention backend 'nope'; available: auto, torch, cpu, triton, "
                                         "flashinfer"):
        get_backend("nope")
