"""Each verify-length planner inside the engine keeps speculation lossless: greedy equality, and the
sampled distribution with the drafts it verified counted.

Every cost table here is FIXED and synthetic: ``CostTable.load_cached`` is patched to hand out a
table with learning rate 0, so the engine neither profiles nor refines it from measured step times,
and what the planners decide (hence what these tests cover) does not depend on the machine.
"""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from sparkserve import LLM, SamplingParams
from sparkserve.spec_decode.cost_model import CostTable
from sparkserve.spec_decode.planner import Planner
from tests.spec_decode.spec_fixtures import spec_config, target_dir
from tests.spec_decode.test_spec_distribution import (  # noqa: F401
    NUM_TOKENS,
    PROMPT,
    N,
    distribution_pvalues,
    drafter_dir,
    exact_conditionals,
    record_verify,
    world,
)
from tests.spec_decode.test_spec_engine import MAX_TOKENS, baseline, make_prompts, root  # noqa: F401
from tests.stats import check_pvalues

PLANNERS = ["threshold", "causal", "lagged"]


# Flat until 32 batch tokens, then each token costs 2% of a step: at the greedy tests' load (<= 16
# decoding requests, 64-token budget) the planners verify some drafts and drop others.
def greedy_step_time_s(num_tokens: int) -> float:
    return 1.0 + 0.02 * max(num_tokens - 32, 0)


# Flat until 400 batch tokens (256 anchors + room for drafts), then 0.5% of a step per token.
def batch_step_time_s(num_tokens: int) -> float:
    return 1.0 + 0.005 * max(num_tokens - 400, 0)


GRID = [1, 2, 4, 8, 16, 32, 64, 128, 256, 400, 512, 1024, 2048, 4096]


@pytest.fixture
def fixed_cost_table(monkeypatch):
    """Make every engine built in the test plan with ``step_time_s`` (a fixed, never-refined table)."""
    def install(step_time_s):
        def load_cached(cls, key, *args, **kwargs):
            return CostTable.from_function(step_time_s, GRID, key=key, learning_rate=0.0)
        monkeypatch.setattr(CostTable, "load_cached", classmethod(load_cached))
    return install


def planner_settings(tmp_root: str, draft_gate: bool = True) -> dict:
    return {"cost_cache_dir": f"{tmp_root}/cost", "draft_gate": draft_gate}


@pytest.mark.parametrize("verify", PLANNERS)
def test_greedy_equality_with_planner(verify, root, baseline, fixed_cost_table):  # noqa: F811
    fixed_cost_table(greedy_step_time_s)
    prompts, want = baseline
    spec = spec_config("dspark", root, verify=verify, confidence_threshold=0.4,
                       **planner_settings(root, draft_gate=False))
    llm = LLM(target_dir(root), max_model_len=192, max_num_seqs=16, max_num_batched_tokens=64, block_size=4,
              num_kv_blocks=80, speculative_config=spec)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True))
    assert [o.outputs[0].token_ids for o in outs] == want
    stats = llm.engine.stats().spec_decode
    assert stats.planner.mode == verify and stats.planner.num_calls > 0
    total = llm.engine.spec_stats.total
    assert 0 < total.num_verified_draft_tokens < total.num_draft_tokens  # verified some drafts, dropped others


# ---- the causal planner's early stop, in the engine ------------------------------------------
# Appendix A of the DSpark paper inside the engine, per request (a batch of one, B0 = 1, as in the
# paper: in a large batch a request's own drafts move the global search only a little). Confidences
# follow a rule that may read the drafts before position j (never d_j itself): c1 = 0.9;
# c2 = 0.95 if d1 is even else 0.5; c3 = 0.95 if d2 is even else 0.05. On SPS = (1, 0.6, 0.45, 0.44)
# for B = 1..4, Algorithm 1 verifies 2 or 3 drafts after an even d1 and exactly 1 after an odd one
# (its early stop at the cliff B = 3). The search without the early stop verifies d2 after an odd d1
# exactly when d2 is even (c3 lifts Theta(3) above Theta(1)): d2 is admitted because of its own
# value, which biases the token emitted in its place.
APPENDIX_SPS = {1: 1.0, 2: 0.6, 3: 0.45, 4: 0.44}


def appendix_confidences(drafts: list[int]) -> list[float]:
    """c_1..c_n of a block by the rule above (c_j reads d_{j-1})."""
    conf = [0.9]
    if len(drafts) > 1:
        conf.append(0.95 if drafts[0] % 2 == 0 else 0.5)
    if len(drafts) > 2:
        conf.append(0.95 if drafts[1] % 2 == 0 else 0.05)
    return conf[:len(drafts)]


def test_causal_planner_is_lossless_in_the_engine(world, monkeypatch):  # noqa: F811
    planner = Planner("causal", cost_table=CostTable.from_sps(APPENDIX_SPS))
    chosen = Counter()

    def per_request(reqs, _num_other_tokens):
        """The scheduler's hook: each request planned alone (B0 = 1) with the rule's confidences."""
        lengths = []
        for r in reqs:
            drafts = list(r.draft_token_ids)
            view = SimpleNamespace(request_id=r.request_id, draft_token_ids=drafts,
                                   draft_confidences=appendix_confidences(drafts))
            lengths.append(planner([view], 0)[0])
            chosen[(len(drafts), lengths[-1])] += 1
        return lengths

    _, target = world
    llm = LLM(target, max_model_len=64, max_num_seqs=256, max_num_batched_tokens=4096,
              speculative_config={"method": "dspark", "model": drafter_dir(world, "dspark"),
                                  "num_speculative_tokens": 3})
    llm.engine.scheduler.verify_planner = per_request
    record = record_verify(monkeypatch)
    params = [SamplingParams(max_tokens=NUM_TOKENS + 1, ignore_eos=True, seed=7000 + i, temperature=1.0)
              for i in range(N)]
    outs = llm.generate([{"prompt_token_ids": PROMPT}] * N, params)
    samples = np.array([o.outputs[0].token_ids[:NUM_TOKENS] for o in outs])
    # the planner stopped early and went on, both: 3-draft blocks verified 1, 2 and 3 drafts
    assert all(chosen[(3, n)] > 100 for n in (1, 2, 3)), chosen
    assert llm.engine.spec_stats.total.num_verified_draft_tokens > N
    check_pvalues(distribution_pvalues(samples, exact_conditionals(target, {"temperature": 1.0})))
    check_pvalues(record.pvalues())


def test_lagged_planner_is_lossless_in_the_engine(world, fixed_cost_table, monkeypatch, tmp_path):  # noqa: F811
    """The production wiring (spec config ``verify: lagged``), on a batch of up to 256 requests."""
    fixed_cost_table(batch_step_time_s)
    _, target = world
    spec = {"method": "dspark", "model": drafter_dir(world, "dspark"), "num_speculative_tokens": 3,
            "verify": "lagged", **planner_settings(str(tmp_path), draft_gate=False)}
    llm = LLM(target, max_model_len=64, max_num_seqs=256, max_num_batched_tokens=4096, speculative_config=spec)
    record = record_verify(monkeypatch)
    params = [SamplingParams(max_tokens=NUM_TOKENS + 1, ignore_eos=True, seed=9000 + i, temperature=1.0)
              for i in range(N)]
    outs = llm.generate([{"prompt_token_ids": PROMPT}] * N, params)
    samples = np.array([o.outputs[0].token_ids[:NUM_TOKENS] for o in outs])
    total = llm.engine.spec_stats.total
    assert N < total.num_verified_draft_tokens < total.num_draft_tokens  # verified many, not all
    check_pvalues(distribution_pvalues(samples, exact_conditionals(target, {"temperature": 1.0})))
    check_pvalues(record.pvalues())


def test_greedy_equality_while_the_draft_gate_switches(root, baseline, fixed_cost_table):  # noqa: F811
    """A twitchy gate (probe every 3 steps) turns drafting off and on many times mid-request."""
    from sparkserve.spec_decode.draft_gate import DraftGate

    fixed_cost_table(greedy_step_time_s)
    prompts, want = baseline
    spec = spec_config("dspark", root, verify="causal", **planner_settings(root))
    llm = LLM(target_dir(root), max_model_len=192, max_num_seqs=16, max_num_batched_tokens=64, block_size=4,
              num_kv_blocks=80, speculative_config=spec)
    gate = llm.engine.spec_control.gate = DraftGate(window=2, min_samples=1, probe_every=3, probe_steps=1)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True))
    assert [o.outputs[0].token_ids for o in outs] == want
    stats = llm.engine.stats().spec_decode.draft_gate
    assert 0 < stats.num_plain_steps < stats.num_steps
    assert gate.buckets  # it measured something
