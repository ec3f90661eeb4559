"""The CUDA-graph runner's static buffers and padding (``runner/cuda_graphs.py``). On a CPU: the triton
attention backend (interpreted) and a capturer that replays by calling the recorded step again on the same
static buffers; on a GPU: real CUDA graphs (``CudaGraphCapture``). A graphed ModelRunner and an eager one run the same greedy requests, decode steps and
verify blocks (a drafter with deterministic drafts; full blocks, and ragged ones padded to 1 + gamma rows),
at batch sizes that pad into buckets (5 -> 8, 3 -> 4, 1), over steps and rounds that reuse the buffers: the same tokens every step, the same
features for the drafter, the same K/V in every real slot, and nothing written to the null block."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from sparkserve.models.hf_config import DecoderConfig  # noqa: E402
from sparkserve.models.registry import model_class  # noqa: E402
from sparkserve.runner.cuda_graphs import CudaGraphCapture, GraphSettings, ReplayByCall  # noqa: E402
from sparkserve.runner.model_runner import ModelRunner  # noqa: E402
from sparkserve.spec_decode.types import DraftBlock  # noqa: E402
from sparkserve.step import SamplingMeta, ScheduledSeq, StepPlan  # noqa: E402

GAMMA, BS, BLOCKS_PER_SEQ, VOCAB = 3, 4, 8, 96
GREEDY = SamplingMeta(temperature=0.0)


class FixedDrafter:
    """Deterministic drafts from the anchor token (one-hot q); records the features it observes."""

    num_speculative_tokens = GAMMA
    target_layer_ids = (0,)
    needs_history = False
    has_confidence = False
    confidence_temperatures = None

    def __init__(self):
        self.features: list[torch.Tensor] = []

    def observe(self, features, input_ids, positions, slot_mapping, next_token_ids) -> None:
        self.features.append(features.clone())

    def propose(self, requests):
        return [DraftBlock([(r.anchor_token_id * 7 + j) % VOCAB for j in range(1, GAMMA + 1)]) for r in requests]


def _model(device):
    cfg = DecoderConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64)
    torch.manual_seed(0)
    with torch.device(device):
        model = model_class(cfg)(cfg)
    return model.fuse_for_inference().eval()


def _capturer(device):
    return CudaGraphCapture() if device == "cuda" else ReplayByCall()


def _runner(model, capturer=None, gamma=GAMMA):
    proposer = FixedDrafter() if gamma else None
    graphs = GraphSettings(capturer=capturer, buckets=(1, 2, 4, 8), max_model_len=BS * BLOCKS_PER_SEQ)
    return ModelRunner(model, 1 + 8 * BLOCKS_PER_SEQ, BS, "triton", 0, proposer, gamma, graphs=graphs)


def _round(runners, num_seqs: int, tag: str, steps: int, verify: bool, ragged: bool = False) -> None:
    """Prefill num_seqs greedy prompts, then ``steps`` decode (or verify) steps on every runner; ``ragged``:
    sequence i verifies (i + step) % (GAMMA + 1) of its drafts."""
    g = torch.Generator().manual_seed(num_seqs)
    seqs = [ScheduledSeq(f"{tag}{i}", torch.randint(1, VOCAB, (3 + i % 4,), generator=g).tolist(), 0,
                         list(range(1 + i * BLOCKS_PER_SEQ, 1 + (i + 1) * BLOCKS_PER_SEQ)), GREEDY)
            for i in range(num_seqs)]
    plan = StepPlan(seqs, draft=verify)
    for step in range(steps + 1):
        results = [r.execute(plan).seqs for r in runners]
        tokens = [[(s.new_token_ids, s.num_accepted_drafts, s.next_draft_token_ids) for s in res] for res in results]
        assert all(t == tokens[0] for t in tokens[1:]), f"round {tag} step {step}"
        nxt = []
        for s, res in zip(plan.seqs, results[0]):
            done = s.num_computed_tokens + len(s.token_ids) - s.num_draft_tokens + res.num_accepted_drafts
            drafts = res.next_draft_token_ids or []
            if ragged:
                drafts = drafts[:(len(nxt) + step) % (GAMMA + 1)]
            nxt.append(ScheduledSeq(s.request_id, [res.new_token_ids[-1], *drafts], done, s.block_ids, GREEDY,
                                    num_draft_tokens=len(drafts)))
        plan = StepPlan(nxt, draft=verify)
    for r in runners:
        r.execute(StepPlan([], finished_request_ids=[s.request_id for s in seqs]))


@pytest.mark.parametrize("verify,ragged", [(False, False), (True, False), (True, True)],
                         ids=["decode", "verify", "ragged-verify"])
def test_replayed_steps_equal_eager_steps(device, verify, ragged):
    model = _model(device)
    gamma = GAMMA if verify else 0
    eager, graphed = _runner(model, gamma=gamma), _runner(model, _capturer(device), gamma=gamma)
    assert eager.graphs is None
    g = graphed.graphs
    assert sorted(g.replays) == sorted((b, q) for b in (1, 2, 4, 8) for q in ((1, 1 + GAMMA) if verify else (1,)))
    assert g.bucket(5, 1) == (8, 1) and g.bucket(3, 1) == (4, 1) and g.bucket(9, 1) is None
    assert g.bucket(1, 2) == ((1, 1 + GAMMA) if verify else None)  # 1 + l rows pad to 1 + gamma
    for num_seqs, tag in ((5, "a"), (3, "b"), (1, "c")):
        _round([eager, graphed], num_seqs, tag, steps=2, verify=verify, ragged=ragged)
    q = 1 + gamma
    # 5 -> 8, 3 -> 4, 1 sequences; prompts of 3..6 tokens: prefills run eagerly, except round c's 3-token
    # prompt, which fits 1 + gamma = 4 rows (sequences shorter than Q are padded, as ragged verify blocks are)
    if ragged:  # (1, 1) when the one sequence verifies no draft
        assert sum(g.replayed.values()) == 7 and {b for b, _ in g.replayed} == {8, 4, 1} and g.num_ragged >= 4
    else:
        assert g.replayed == {(8, q): 2, (4, q): 2, (1, q): 3 if verify else 2}
        assert g.num_ragged == (1 if verify else 0)  # round c's prompt
    assert g.num_eager == (2 if verify else 3)
    if verify:
        ref, got = eager.proposer.features, graphed.proposer.features
        assert len(ref) == len(got) and all(torch.allclose(a, b, atol=1e-5, rtol=1e-5) for a, b in zip(ref, got))
    for (k, v), (k_ref, v_ref) in zip(graphed.kv_caches, eager.kv_caches):
        assert not k[0].any() and not v[0].any()  # padding rows (slot -1) wrote nothing into the null block
        torch.testing.assert_close(k, k_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(v, v_ref, atol=1e-5, rtol=1e-5)


def test_longer_and_oversized_steps_run_eagerly(device):
    graphed = _runner(_model(device), _capturer(device), gamma=0)
    g = graphed.graphs
    seqs = [ScheduledSeq(f"r{i}", [5 + i], 0, [1 + i], GREEDY) for i in range(9)]  # 9 > the largest bucket
    graphed.execute(StepPlan(seqs))
    assert (sum(g.replayed.values()), g.num_eager) == (0, 1)
    graphed.execute(StepPlan([ScheduledSeq("r0", [7], 1, [1], GREEDY), ScheduledSeq("r1", [8, 9], 1, [2], GREEDY)]))
    assert (sum(g.replayed.values()), g.num_eager) == (0, 2)  # 2 rows > the captured 1 (no drafter): eager
    graphed.execute(StepPlan([ScheduledSeq("r0", [7], 2, [1], GREEDY)]))
    assert g.replayed == {(1, 1): 1} and g.num_eager == 2
