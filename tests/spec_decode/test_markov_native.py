"""The native DSpark Markov loop (``csrc/markov.cpp`` via ``spec_decode/markov_native.py``) against its
torch reference (``DSparkProposer._draft_torch``), in fp32 and bf16, for every head, both weight layouts
(nn.Linear and DualLayoutLinear), gamma 1 and many, one request and many, greedy and sampled rows.

What must agree (markov_native.py docstring): draft tokens exactly (greedy: same logits bit for bit;
sampled: same uniforms, q equal to float rounding); q to ~1e-6; confidence logits to the products'
rounding; and each generator consumed by the same number of draws."""
from types import SimpleNamespace

import pytest
import torch

from sparkserve import native
from sparkserve.layers import linear as cpu_linear
from sparkserve.sample.sampler import draw_indices_with_uniforms
from sparkserve.spec_decode import markov_native
from sparkserve.spec_decode.checkpoint import load_drafter
from sparkserve.spec_decode.drafters.dspark import DSparkProposer
from sparkserve.spec_decode.heads import ConfidenceHead, build_markov_head
from sparkserve.spec_decode.types import ProposeRequest
from sparkserve.step import SamplingMeta
from tests.spec_decode.drafter_fixtures import (
    NUM_BLOCKS,
    BLOCK,
    PagedTables,
    drafter_dir,
    loaded_target,
    propose_request,
    single_thread,  # noqa: F401  (fixture)
)

pytestmark = [pytest.mark.usefixtures("single_thread"),
              pytest.mark.skipif(not native.available(), reason="native CPU kernels not built here")]

@pytest.fixture(autouse=True)
def no_grad():
    """No autograd, as in ``DSparkProposer.propose`` (the kernel is only taken without it). Not
    inference_mode: the shared tiny target loaded here serves autograd tests elsewhere."""
    with torch.no_grad():
        yield


V, H, RANK = 1001, 48, 8  # V not a multiple of any vector width or draw block
HEADS = ["vanilla", "gated", "rnn", None]  # None: no Markov head (DFlash), confidence from h alone
TEMPS = [0.0, 0.7, 1.0, 1.6, 0.0, 0.3, 1.0]


LAYOUTS = ["torch", "dual"] + (["stream"] if hasattr(cpu_linear, "StreamLinear") else [])  # layers/linear.py


def _heads(head_type, dtype, layout: str, seed=0):
    markov = build_markov_head(head_type, V, H, RANK) if head_type else None
    conf = ConfidenceHead(H, RANK if head_type else 0)
    gen = torch.Generator().manual_seed(seed)
    for module in (markov, conf):
        if module is None:
            continue
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.7)
        module.to(dtype)
        if layout == "dual":
            cpu_linear.use_dual_layout_everywhere(module)
        elif layout == "stream":
            cpu_linear.use_stream_linears(module)
    return markov, conf


def _requests(num, temps, nums, seed=0, generators=None):
    gens = generators or [torch.Generator().manual_seed(seed + 100 * r) for r in range(num)]
    return [ProposeRequest(f"r{r}", (37 * r + 5) % V, 10, None, [1], SamplingMeta(temperature=temps[r % len(temps)]),
                           gens[r], nums[r]) for r in range(num)]


def _torch_loop(markov, conf, dtype, base, rows, requests, nums, greedy):
    proposer = SimpleNamespace(model=SimpleNamespace(markov_head=markov, confidence_head=conf),
                               device=torch.device("cpu"), dtype=dtype)
    return DSparkProposer._draft_torch(proposer, base, rows, requests, nums, greedy)


def _run_both(markov, conf, dtype, num, steps, nums, temps=TEMPS, seed=0, base_scale=2.0):
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(num, steps, V, generator=gen) * base_scale
    rows = torch.randn(num, steps, H, generator=gen).to(dtype)
    greedy = [temps[r % len(temps)] < 1e-5 for r in range(num)]
    out = {}
    for backend in ("torch", "native"):
        requests = _requests(num, temps, nums, seed)
        if backend == "torch":
            out[backend] = _torch_loop(markov, conf, dtype, base, rows, requests, nums, greedy)
        else:
            out[backend] = markov_native.markov_draft(markov, conf, base, rows, requests, nums, greedy)
        out[backend + " next"] = [float(torch.rand(1, dtype=torch.float64, generator=r.generator)) for r in requests]
    return out, greedy


def _check(out, greedy, nums, dtype):
    (t_tok, t_q, t_conf), (n_tok, n_q, n_conf) = out["torch"], out["native"]
    for r, n in enumerate(nums):
        assert n_tok[r, :n].tolist() == t_tok[r, :n].tolist(), f"row {r} (greedy {greedy[r]})"
        assert (t_q[r] is None) == (n_q[r] is None)
        if n_q[r] is not None:
            assert n_q[r].shape == (n, V) and n_q[r].dtype == torch.float32
            torch.testing.assert_close(n_q[r], t_q[r], rtol=2e-5, atol=1e-7)
            assert bool((n_q[r].gather(1, n_tok[r, :n, None]) > 0).all())  # never a zero-probability draft
            torch.testing.assert_close(n_q[r].sum(-1), torch.ones(n), rtol=1e-5, atol=1e-5)
    assert out["torch next"] == out["native next"]  # the same number of draws from every generator
    if t_conf is None:
        assert n_conf is None
    else:
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
        mask = torch.arange(t_conf.shape[1])[None] < torch.tensor(nums)[:, None]
        torch.testing.assert_close(n_conf[mask], t_conf[mask], **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("head_type", HEADS, ids=lambda h: h or "none")
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("num,steps", [(1, 1), (2, 6), (7, 5), (20, 3)])
def test_matches_torch(head_type, dtype, num, steps, layout):
    markov, conf = _heads(head_type, dtype, layout)
    nums = [max(0, steps - (r % 3)) if num > 1 else steps for r in range(num)]  # ragged, some rows stop early
    nums[0] = steps
    out, greedy = _run_both(markov, conf, dtype, num, steps, nums)
    _check(out, greedy, nums, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("head_type", HEADS[:3])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("num", [1, 2, 5, 20])  # across the dual-layout (2) and streaming (16) row limits
def test_logits_are_bit_identical(head_type, dtype, layout, num):
    """base = -(the reference's W2 u): the reference's z is exactly 0 everywhere, so the greedy draft is
    index 0; a product or head update that differs by one ulp anywhere makes some z > 0 and moves it."""
    markov, conf = _heads(head_type, dtype, layout, seed=num)
    gen = torch.Generator().manual_seed(num)
    rows = torch.randn(num, 1, H, generator=gen).to(dtype)
    requests = _requests(num, [0.0], [1] * num)
    anchors = torch.tensor([r.anchor_token_id for r in requests])
    state = markov.init_state(num, "cpu", dtype)
    products, _ = markov.step(torch.zeros(num, V), rows[:, 0], anchors, state)  # = float(W2 u) [R, V]
    assert products.abs().min() > 0
    tokens, _, _ = markov_native.markov_draft(markov, conf, -products[:, None], rows, requests, [1] * num,
                                              [True] * num)
    assert tokens[:, 0].tolist() == [0] * num


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_greedy_ties_take_the_first_index(dtype):
    markov, conf = _heads("vanilla", dtype, "dual")
    with torch.no_grad():
        markov.markov_w2.weight.zero_()
        markov.markov_w2.weight_t.zero_()
    base = torch.zeros(3, 2, V)
    base[:, :, [900, 17, 400]] = 5.0  # three-way tie at every step
    base[2, 1, 1000] = 5.0
    base[2, 1, :1000] = -1.0  # row 2, step 1: the last index alone
    rows = torch.randn(3, 2, H).to(dtype)
    requests = _requests(3, [0.0], [2, 2, 2])
    tokens, qs, _ = markov_native.markov_draft(markov, conf, base, rows, requests, [2, 2, 2], [True] * 3)
    ref, _, _ = _torch_loop(markov, conf, dtype, base, rows, requests, [2, 2, 2], [True] * 3)
    assert tokens.tolist() == ref.tolist() == [[17, 17], [17, 17], [17, 1000]]
    assert qs == [None] * 3


def test_draw_is_the_inverse_cdf_of_q_with_the_request_uniforms():
    """Sampled drafts: the token is draw_indices' choice on the returned q with exactly the uniforms
    the request's generator gives, in the reference's order."""
    markov, conf = _heads("gated", torch.float32, LAYOUTS[-1])
    num, steps = 5, 4
    nums = [4, 2, 4, 0, 3]
    temps = [0.7, 1.0, 0.0, 1.3, 2.0]
    gen = torch.Generator().manual_seed(3)
    base, rows = torch.randn(num, steps, V, generator=gen), torch.randn(num, steps, H, generator=gen)
    greedy = [t == 0.0 for t in temps]
    tokens, qs, _ = markov_native.markov_draft(markov, conf, base, rows, _requests(num, temps, nums, 7), nums, greedy)
    uniforms = markov_native.draft_uniforms(_requests(num, temps, nums, 7), nums, greedy, steps)
    for r in range(num):
        if greedy[r] or nums[r] == 0:
            assert qs[r] is None
            continue
        fresh = torch.Generator().manual_seed(7 + 100 * r)
        expect_u = torch.cat([torch.rand(1, dtype=torch.float64, generator=fresh) for _ in range(nums[r])])
        assert torch.equal(uniforms[r, :nums[r]], expect_u)
        assert tokens[r, :nums[r]].tolist() == draw_indices_with_uniforms(qs[r], expect_u).tolist()


def test_uniforms_follow_the_reference_order_with_shared_generators():
    """Two requests on one generator and two on the default one: step-major, batch order within a step."""
    shared = torch.Generator().manual_seed(11)
    requests = _requests(4, [0.8], [3, 2, 3, 1], generators=[shared, None, shared, None])
    torch.manual_seed(5)
    uniforms = markov_native.draft_uniforms(requests, [3, 2, 3, 1], [False] * 4, 3)
    shared.manual_seed(11)
    torch.manual_seed(5)
    expect = torch.zeros(4, 3, dtype=torch.float64)
    for k in range(3):
        for r, n in enumerate([3, 2, 3, 1]):
            if k < n:
                expect[r, k] = torch.rand(1, dtype=torch.float64, generator=requests[r].generator)
    assert torch.equal(uniforms, expect)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("head", ["vanilla", "rnn"])
def test_propose_native_equals_torch(head, dtype, monkeypatch):
    """Whole proposals of a real (tiny) drafter: greedy and seeded sampled requests, ragged caps."""
    target, cfg = loaded_target()
    proposer = load_drafter(drafter_dir("dspark", head, 5, 0.5), target, num_blocks=NUM_BLOCKS, block_size=BLOCK,
                            dtype=dtype)
    tables = PagedTables()
    gen = torch.Generator().manual_seed(0)
    contexts = {f"q{i}": torch.randint(4, 300, (6 + 3 * i,), generator=gen).tolist() for i in range(4)}
    feat_dim = len(proposer.target_layer_ids) * cfg.hidden_size
    for rid, toks in contexts.items():
        pos = range(len(toks) - 1)
        proposer.observe(torch.randn(len(pos), feat_dim, generator=gen), torch.tensor(toks[:-1]), torch.tensor(pos),
                         torch.tensor(tables.slots(rid, pos)), torch.tensor(toks[1:]))
    blocks = {}
    for backend in ("torch", "native"):
        monkeypatch.setattr(DSparkProposer, "markov_backend", backend)
        requests = [propose_request(rid, toks, tables, temperature=(0.0, 0.8, 1.0, 0.0)[i], seed=40 + i,
                                    max_draft_tokens=(5, 5, 3, 2)[i]) for i, (rid, toks) in enumerate(contexts.items())]
        blocks[backend] = proposer.propose(requests)
    for t, n in zip(blocks["torch"], blocks["native"]):
        assert t.token_ids == n.token_ids
        assert (t.probs is None) == (n.probs is None)
        if t.probs is not None:
            torch.testing.assert_close(n.probs, t.probs, rtol=2e-5, atol=1e-7)
        torch.testing.assert_close(n.confidences, t.confidences, rtol=1e-2 if dtype == "bfloat16" else 1e-5,
                                   atol=1e-2 if dtype == "bfloat16" else 1e-6)


def test_backend_switch(monkeypatch):
    markov, conf = _heads("vanilla", torch.float32, "torch")
    rows = torch.zeros(1, 1, H)
    assert markov_native.use_native("auto", markov, conf, rows)
    assert not markov_native.use_native("torch", markov, conf, rows)
    assert not markov_native.use_native("auto", markov, conf, rows.to(torch.float64))
    with torch.enable_grad():
        assert not markov_native.use_native("auto", markov, conf, rows)
    handle = conf.register_forward_hook(lambda *_: None)  # a watcher of the head gets the reference
    assert not markov_native.use_native("auto", markov, conf, rows)
    handle.remove()
    assert markov_native.use_native("auto", markov, conf, rows)
    with pytest.raises(ValueError, match="backend"):
        markov_native.use_native("cuda", markov, conf, rows)
    with pytest.raises(ValueError, match="does not support"):
        markov_native.use_native("native", markov, conf, rows.to(torch.float64))
