"""The captured draft step (spec_decode/drafters/native_draft_stack.py, csrc/draft_stack.cpp) against the fused
module path it replaces (bit-identical hidden rows and drafts), the fused serving layout against the checkpoint
layout (the same function), masks (causal / sliding layers), and when capture applies."""
from __future__ import annotations

import pytest
import torch

from sparkserve import native
from sparkserve.spec_decode.checkpoint import load_drafter
from tests.spec_decode.drafter_fixtures import (
    BLOCK,
    NUM_BLOCKS,
    PagedTables,
    drafter_dir,
    loaded_target,
    perturb_norms,
    propose_request,
    single_thread,  # noqa: F401  (fixture)
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module", autouse=True)
def kernels():
    if not native.enabled_by_env():
        pytest.skip("SPARKSERVE_NATIVE=0: the kernels are forced off")
    native.require()


def _proposer(method: str, fuse: bool, num_requests: int, seed: int = 0):
    """A tiny drafter with observed random contexts for num_requests requests (norms perturbed so a
    swapped norm shows), and those requests (greedy and sampled, ragged caps)."""
    target, cfg = loaded_target()
    proposer = load_drafter(drafter_dir(method, "vanilla", 5, 0.5), target, num_blocks=NUM_BLOCKS,
                            block_size=BLOCK, fuse=fuse)
    with torch.no_grad():
        perturb_norms(proposer.model, seed=3)
    tables = PagedTables()
    gen = torch.Generator().manual_seed(seed)
    feat_dim = len(proposer.target_layer_ids) * cfg.hidden_size
    contexts = {f"q{i}": torch.randint(4, 300, (5 + 4 * i,), generator=gen).tolist() for i in range(num_requests)}
    for rid, toks in contexts.items():
        pos = range(len(toks) - 1)
        proposer.observe(torch.randn(len(pos), feat_dim, generator=gen), torch.tensor(toks[:-1]),
                         torch.tensor(pos), torch.tensor(tables.slots(rid, pos)), torch.tensor(toks[1:]))

    def requests():
        return [propose_request(rid, toks, tables, temperature=(0.0, 0.9)[i % 2], seed=50 + i,
                                max_draft_tokens=5 - i % 3) for i, (rid, toks) in enumerate(contexts.items())]
    return proposer, requests


def _propose(proposer, requests, captured: bool):
    proposer.native_stack = None
    if captured:
        assert proposer.capture_step() is None
    with torch.inference_mode():
        hidden = proposer._block_hidden(requests())
        return hidden, proposer.propose(requests())


@pytest.mark.parametrize("method", ["dspark", "dflash"])
@pytest.mark.parametrize("num_requests", [1, 3, 6])  # 6 x 6 block rows: the many-row (GEMM) products too
def test_captured_draft_step_is_bit_identical(method, num_requests):
    proposer, requests = _proposer(method, True, num_requests)
    h_mod, blocks_mod = _propose(proposer, requests, captured=False)
    h_cap, blocks_cap = _propose(proposer, requests, captured=True)
    assert proposer.native_stack is not None
    assert torch.equal(h_cap, h_mod)
    for a, b in zip(blocks_cap, blocks_mod):
        assert a.token_ids == b.token_ids and a.confidences == b.confidences
        assert (a.probs is None) == (b.probs is None) and (a.probs is None or torch.equal(a.probs, b.probs))


@pytest.mark.parametrize("is_causal", [None, False])
def test_masks_reach_the_captured_step(is_causal):
    """Causal and sliding-window layers (the z-lab layouts) give the modules' numbers too."""
    proposer, requests = _proposer("zlab-dflash", True, 3)
    dcfg = proposer.config
    dcfg.layer_types = ("sliding_attention", "full_attention") * dcfg.num_layers
    dcfg.sliding_window, dcfg.is_causal = 3, is_causal  # None: sliding layers are causal (z-lab)
    assert dcfg.layer_attention(0) == (is_causal is None, 3)
    h_mod, _ = _propose(proposer, requests, captured=False)
    h_cap, _ = _propose(proposer, requests, captured=True)
    assert torch.equal(h_cap, h_mod)
    dcfg.layer_types, dcfg.is_causal = (), False
    h_open, _ = _propose(proposer, requests, captured=True)
    assert not torch.equal(h_open, h_cap)  # the masks changed what the rows see


def test_fused_serving_layout_computes_the_checkpoint_layouts_function():
    fused, requests = _proposer("dspark", True, 3)
    plain, requests_plain = _proposer("dspark", False, 3)
    assert fused.model.layers[0].self_attn.qkv_proj is not None and plain.model.layers[0].self_attn.qkv_proj is None
    assert plain.capture_step() is not None  # the checkpoint layout is not captured
    h_fused, _ = _propose(fused, requests, captured=True)
    with torch.inference_mode():
        h_plain = plain._block_hidden(requests_plain())
    torch.testing.assert_close(h_fused, h_plain, rtol=1e-5, atol=1e-5)


def test_capture_applies_only_to_fp32_rows_on_the_native_backend():
    proposer, _ = _proposer("dspark", True, 2)
    assert proposer.capture_step() is None
    ctx_backend = type("B", (), {"name": "torch"})()
    ctx = type("C", (), {"backend": ctx_backend})()
    assert not proposer.native_stack.applies(torch.zeros(1, 2, 4), ctx)
    ctx.backend = type("B", (), {"name": "cpu"})()
    assert not proposer.native_stack.applies(torch.zeros(1, 2, 4), ctx)  # autograd on (training): modules
    with torch.no_grad():
        assert proposer.native_stack.applies(torch.zeros(1, 2, 4), ctx)
        assert not proposer.native_stack.applies(torch.zeros(1, 2, 4, dtype=torch.bfloat16), ctx)
