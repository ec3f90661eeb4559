"""The drafter's graphed block forward (``runner/draft_graphs.py``). On a CPU: the triton
attention backend (interpreted) and a capturer that replays by calling the recorded step again on the same
static buffers; on a GPU: real CUDA graphs. Over propose calls of 3, 5, 3, 1 and 8 requests (padded into
buckets 4, 8, 4, 1, 8) with contexts that grow between calls, the replayed hidden rows equal the eager
ones, the draft cache is untouched, and every padding request's rows equal those of a lone context-free
request (so padding reads nothing of the real requests); 9 requests run eagerly. A graphed ModelRunner
with a DSpark drafter drafts and emits the same tokens as an eager one."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from sparkserve.attention.triton_backend import TritonBackend  # noqa: E402
from sparkserve.models.hf_config import DecoderConfig  # noqa: E402
from sparkserve.models.registry import model_class  # noqa: E402
from sparkserve.runner.cuda_graphs import CudaGraphCapture, GraphSettings, ReplayByCall  # noqa: E402
from sparkserve.runner.model_runner import ModelRunner  # noqa: E402
from sparkserve.runner import draft_graphs  # noqa: E402
from sparkserve.spec_decode.drafters import DraftConfig, DSparkDraftModel, DSparkProposer  # noqa: E402
from sparkserve.spec_decode.types import ProposeRequest  # noqa: E402
from sparkserve.step import SamplingMeta, ScheduledSeq, StepPlan  # noqa: E402

BS, BLOCKS_PER_REQ, VOCAB, DRAFT_BLOCK = 4, 6, 96, 4
GREEDY = SamplingMeta(temperature=0.0)
BUCKETS = (1, 2, 4, 8)


def _config(layers: int) -> DecoderConfig:
    return DecoderConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64)


def _proposer(device, kind: str = "dspark", num_blocks: int = 1 + 9 * BLOCKS_PER_REQ) -> DSparkProposer:
    """A random 2-layer drafter on the triton backend; z-lab: a sliding causal layer, an embedding scale and
    the "target's" vocabulary modules."""
    extra = {"layer_types": ("sliding_attention", "full_attention"), "sliding_window": 3,
             "input_embedding_scale": 1.5} if kind == "zlab-dflash" else {}
    dcfg = DraftConfig(kind, _config(2), target_layer_ids=(0, 1), block_size=DRAFT_BLOCK,
                       mask_token_id=VOCAB - 1, **extra)
    torch.manual_seed(0)
    with torch.device(device):
        model = DSparkDraftModel(dcfg)
        vocab = {"embed_tokens": torch.nn.Embedding(VOCAB, 32), "lm_head": torch.nn.Linear(32, VOCAB, bias=False)} \
            if kind == "zlab-dflash" else {}
    return DSparkProposer(model.fuse_for_inference().eval(), num_blocks, BS, attention_backend=TritonBackend(),
                          **vocab)


def _capturer(device):
    return CudaGraphCapture() if device == "cuda" else ReplayByCall()


def _request(i: int, anchor: int, position: int) -> ProposeRequest:
    blocks = list(range(1 + i * BLOCKS_PER_REQ, 1 + (i + 1) * BLOCKS_PER_REQ))
    return ProposeRequest(f"r{i}", anchor, position, None, blocks, GREEDY, None, DRAFT_BLOCK)


def _observe(proposer, device, lens: list[int], new: list[int], gen: torch.Generator) -> None:
    """Request i's context grows from lens[i] by new[i] rows of random target features (one flat batch)."""
    pos = [p for i, (s, m) in enumerate(zip(lens, new)) for p in range(s, s + m)]
    req = [i for i, m in enumerate(new) for _ in range(m)]
    slots = [(1 + i * BLOCKS_PER_REQ + p // BS) * BS + p % BS for i, p in zip(req, pos)]
    feats = torch.randn(len(pos), 64, generator=gen).to(device)
    proposer.observe(feats, torch.zeros(len(pos), dtype=torch.long, device=device),
                     torch.tensor(pos, device=device), torch.tensor(slots, device=device),
                     torch.full((len(pos),), -1, device=device))


@pytest.mark.parametrize("kind", ["dspark", "zlab-dflash"])
@torch.inference_mode()  # as propose() runs
def test_replayed_block_forward_equals_eager(device, kind):
    proposer = _proposer(device, kind)
    # bit-exact on a CPU (every row's products and reductions are the same whatever the batch); a GPU's GEMMs
    # may pick other kernels for the padded row count, so there fp32 rounding
    tol = {"atol": 0, "rtol": 0} if device == "cpu" else {"atol": 1e-5, "rtol": 1e-5}
    graphs = draft_graphs.build(proposer, False, GraphSettings(capturer=_capturer(device), buckets=BUCKETS,
                                                                max_model_len=BS * BLOCKS_PER_REQ))
    assert proposer.graphs is graphs and sorted(graphs.replays) == list(BUCKETS)
    lone = _request(0, 0, 0)
    lone.block_ids = []
    proposer.graphs = None
    padding = proposer._block_hidden([lone])[0].clone()  # [B, H]: anchor 0 at position 0, no context
    gen = torch.Generator().manual_seed(3)
    lens = [0] * 9
    for call, n in enumerate((3, 5, 3, 1, 8, 9)):
        new = [1 + (i + call) % 4 if i < n else 0 for i in range(9)]
        _observe(proposer, device, lens, new, gen)
        lens = [s + m for s, m in zip(lens, new)]
        reqs = [_request(i, int(torch.randint(0, VOCAB, (1,), generator=gen)), lens[i]) for i in range(n)]
        caches = [t.clone() for kv in proposer.kv_caches for t in kv]
        proposer.graphs = None
        eager = proposer._block_hidden(reqs).clone()
        proposer.graphs = graphs
        got = proposer._block_hidden(reqs).clone()
        assert got.shape == eager.shape == (n, DRAFT_BLOCK, 32)
        torch.testing.assert_close(got, eager, **tol, msg=f"call {call}")
        assert all(torch.equal(a, b) for a, b in zip(caches, (t for kv in proposer.kv_caches for t in kv)))
        b = graphs.bucket(n)
        if b is not None:
            for row in graphs.hidden[n:b]:  # padding requests: what a lone context-free request computes
                torch.testing.assert_close(row, padding, **tol)
    assert graphs.replayed == {4: 2, 8: 2, 1: 1} and graphs.num_eager == 1


def test_only_wanted_dspark_drafters_on_a_graphable_backend_are_graphed(device, caplog):
    proposer = _proposer(device)
    settings = GraphSettings(capturer=_capturer(device), buckets=(1, 2, 4, 8, 16), max_tokens=32,
                             max_model_len=BS * BLOCKS_PER_REQ)
    assert draft_graphs.build(None, False, settings) is None
    assert draft_graphs.build(proposer, True, settings) is None and proposer.graphs is None  # --enforce-eager
    if device == "cpu":
        assert draft_graphs.build(proposer, False, GraphSettings()) is None  # a CPU without a capturer
    graphs = draft_graphs.build(proposer, False, settings)
    assert graphs.buckets == [1, 2, 4, 8]  # 16 requests x 4 rows > max_tokens 32
    req = _request(0, 5, BS * BLOCKS_PER_REQ + 1)  # a context past the captured tables: eager
    assert graphs.forward([req]) is None and graphs.num_eager == 1
    proposer.graphs = None
    proposer.backend = type("NoGraphs", (), {"name": "plain"})()
    with caplog.at_level("INFO", logger="sparkserve.spec_decode"):
        assert draft_graphs.build(proposer, False, settings) is None
    assert "has no fixed-shape metadata (graph_draft_metadata)" in caplog.text


def _runner(device, capturer, gamma: int = 3):
    cfg = _config(2)
    torch.manual_seed(1)
    with torch.device(device):
        model = model_class(cfg)(cfg).fuse_for_inference().eval()
    num_blocks = 1 + 9 * BLOCKS_PER_REQ
    graphs = GraphSettings(capturer=capturer, buckets=(1, 2, 4), max_model_len=BS * BLOCKS_PER_REQ)
    return ModelRunner(model, num_blocks, BS, "triton", 0, _proposer(device, num_blocks=num_blocks), gamma,
                       graphs=graphs)


def test_graphed_runner_drafts_like_an_eager_one(device):
    eager, graphed = _runner(device, None), _runner(device, _capturer(device))
    assert eager.draft_graphs is None and graphed.draft_graphs is graphed.proposer.graphs
    assert graphed.draft_graphs.capturer is graphed.graphs.capturer  # one memory pool
    g = torch.Generator().manual_seed(7)
    seqs = [ScheduledSeq(f"s{i}", torch.randint(1, VOCAB, (3 + i,), generator=g).tolist(), 0,
                         list(range(1 + i * BLOCKS_PER_REQ, 1 + (i + 1) * BLOCKS_PER_REQ)), GREEDY) for i in range(3)]
    plan = StepPlan(seqs, draft=True)
    for step in range(3):
        results = [r.execute(plan).seqs for r in (eager, graphed)]
        out = [[(s.new_token_ids, s.num_accepted_drafts, s.next_draft_token_ids) for s in res] for res in results]
        assert out[0] == out[1], f"step {step}"
        plan = StepPlan([ScheduledSeq(s.request_id, [r.new_token_ids[-1], *r.next_draft_token_ids],
                                      s.num_computed_tokens + len(s.token_ids) - s.num_draft_tokens
                                      + r.num_accepted_drafts, s.block_ids, GREEDY,
                                      num_draft_tokens=len(r.next_draft_token_ids))
                         for s, r in zip(plan.seqs, results[0])], draft=True)
    assert graphed.draft_graphs.replayed == {4: 3} and graphed.draft_graphs.num_eager == 0
