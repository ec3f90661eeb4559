"""Verify-length planners: pure functions (fixed, threshold, causal = Algorithm 1, lagged) and the
stateful ``Planner`` behind the scheduler's ``verify_planner`` hook."""
from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkserve.config import SpecConfig
from sparkserve.request import Request
from sparkserve.sampling_params import SamplingParams
from sparkserve.scheduler.drafts import plan_verify_lengths
from sparkserve.spec_decode.cost_model import CostTable
from sparkserve.spec_decode.planner import (Planner, best_budget, plan_causal, plan_fixed, plan_lagged, plan_retrospective,
                                     plan_threshold, plan_top_k, planner_from_spec, sorted_candidates, survival)

GRID = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
CONF = [0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5]


def linear_table(base_s: float = 2e-3, per_token_s: float = 2e-5) -> CostTable:
    return CostTable.from_function(lambda b: base_s + per_token_s * b, GRID)


FLAT = CostTable([1, 1024], [1e-2, 1e-2])
STEEP = CostTable([1, 1024], [1e-3, 1e3])


def req(rid: str, confidences, num_drafts: int | None = None):
    n = len(confidences) if num_drafts is None else num_drafts
    return SimpleNamespace(request_id=rid, draft_token_ids=[7] * n, draft_confidences=list(confidences))


# ---- building blocks --------------------------------------------------------------------------
def test_survival_clamps_and_is_non_increasing():
    assert survival([0.5, 0.5, 2.0, -1.0, 0.9]) == [0.5, 0.25, 0.25, 0.0, 0.0]
    assert survival([float("nan"), 1.0]) == [0.0, 0.0]


def test_sorted_candidates_ties_keep_prefix_order():
    cands = sorted_candidates([[1.0, 1.0, 0.5], [1.0, 0.0, 1.0]], [3, 3])
    assert [(j, r) for _, j, r in cands] == [(1, 0), (1, 1), (2, 0), (3, 0)]  # a = 1,1,1,0.5; zeros dropped


def test_fixed_and_threshold_semantics():
    assert plan_fixed([7, 3, 0]) == [7, 3, 0]
    assert plan_fixed([7, 3, 0], k=4) == [4, 3, 0]
    confs = [[0.9, 0.5, 0.9], [0.2, 0.9], [0.7, 0.7, 0.7], [0.8, float("nan"), 0.9], [0.9]]
    lengths = [3, 2, 2, 3, 3]
    assert plan_threshold(confs, lengths, 0.6) == [1, 0, 2, 1, 1]  # first c < threshold ends it; NaN too;
    assert plan_threshold(confs, lengths, 0.0) == lengths  # <= 0: everything; positions without c stop
    assert plan_threshold(confs, lengths, 0.95) == [0, 0, 0, 0, 0]
    assert plan_threshold([[0.5]], [1], 0.5) == [1]  # c >= threshold passes


# ---- Algorithm 1 ------------------------------------------------------------------------------
def test_flat_curve_verifies_everything_steep_curve_nothing():
    confs, lengths = [CONF, CONF[:3], [0.9, 0.0, 0.9]], [7, 3, 3]
    assert plan_causal(confs, lengths, FLAT, 3) == [7, 3, 1]  # a = 0 is never worth a slot
    assert plan_causal(confs, lengths, STEEP, 3) == [0, 0, 0]
    assert plan_lagged(confs, lengths, confs, FLAT, 3) == [7, 3, 1]
    assert plan_lagged(confs, lengths, confs, STEEP, 3) == [0, 0, 0]


def test_token_budget_caps_the_batch():
    assert sum(plan_causal([CONF] * 4, [7] * 4, FLAT, 4, max_num_tokens=10)) == 6
    assert sum(plan_lagged([CONF] * 4, [7] * 4, [CONF] * 4, FLAT, 4, max_num_tokens=10)) == 6


def test_causal_takes_the_highest_survival_first():
    lengths = plan_causal([[0.9, 0.9], [0.5, 0.5], [0.99, 0.2]], [2, 2, 2], linear_table(1e-3, 2e-4), 3)
    assert lengths == [2, 0, 1]


def test_early_stop_vs_global_search_on_a_jagged_curve():
    """A cliff right after B0 (a jagged curve): Algorithm 1 stops at the first non-improvement; the
    global search (lagged on honest stale values, retrospective) climbs over it."""
    cliff = CostTable([1, 2, 8], [1.0, 2.0, 2.05])  # Theta1 = 1.9 / 2 < 1, Theta7 = 5.7 / 2.05
    confs = [[0.9] * 7]
    assert plan_causal(confs, [7], cliff, 1) == [0]
    assert best_budget(confs, [7], cliff, 1) == 7
    assert plan_lagged(confs, [7], confs, cliff, 1) == [7]
    assert plan_retrospective(confs, [7], cliff, 1) == [7]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.floats(0.0, 1.0), min_size=0, max_size=7), min_size=1, max_size=6),
       st.integers(0, 64), st.floats(1e-6, 1e-3), st.integers(0, 40))
def test_admitted_sets_are_prefixes_of_the_sorted_order(confs, prefill, per_token, k):
    """Whatever the inputs: l_r in [0, n_r], and the admitted (r, j) are exactly the first m candidates
    of the global order for some m (hence a prefix within each request, never skipping a j < l_r)."""
    lengths = [len(c) for c in confs]
    table = linear_table(2e-3, per_token)
    order = [(j, r) for _, j, r in sorted_candidates(confs, lengths)]
    stale = [list(reversed(c)) for c in confs]
    for plan in (plan_causal(confs, lengths, table, len(confs) + prefill),
                 plan_lagged(confs, lengths, stale, table, len(confs) + prefill),
                 plan_retrospective(confs, lengths, table, len(confs) + prefill),
                 plan_top_k(confs, lengths, k)):
        assert all(0 <= n <= m for n, m in zip(plan, lengths))
        admitted = {(j, r) for r, n in enumerate(plan) for j in range(1, n + 1)}
        assert admitted == set(order[: len(admitted)])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.05, 1.0), min_size=1, max_size=7), st.floats(1e-6, 1e-3))
def test_verify_budget_shrinks_as_load_grows(conf, per_token):
    """More requests (same confidences) or more prefill tokens never raise the per-request verify
    length, for Algorithm 1 and for lagged's K (on any convex-or-linear curve: here affine)."""
    table = linear_table(2e-3, per_token)
    n = len(conf)
    per_request = [sum(plan_causal([conf] * r, [n] * r, table, r)) / r for r in (1, 2, 4, 8, 16, 32, 64)]
    assert all(b <= a + 1e-12 for a, b in zip(per_request, per_request[1:])), per_request
    ks = [best_budget([conf] * r, [n] * r, table, r) / r for r in (1, 2, 4, 8, 16, 32, 64)]
    assert all(b <= a + 1e-12 for a, b in zip(ks, ks[1:])), ks
    by_prefill = [sum(plan_causal([conf] * 8, [n] * 8, table, 8 + p)) for p in (0, 16, 64, 256, 512)]
    assert all(b <= a for a, b in zip(by_prefill, by_prefill[1:])), by_prefill


def test_verify_budget_shrinks_on_a_realistic_curve():
    """Flat until the GPU saturates (memory-bound), linear after: light load verifies everything."""
    table = CostTable.from_function(lambda b: max(5e-3, 5e-3 + 4e-5 * (b - 128)), GRID)
    totals = [sum(plan_causal([CONF] * r, [7] * r, table, r)) / r for r in (1, 8, 16, 32, 64, 128)]
    assert totals[0] == 7 and totals[1] == 7 and totals[-1] < 2
    assert all(b <= a for a, b in zip(totals, totals[1:]))


# ---- the Planner object -----------------------------------------------------------------------
def test_planner_modes():
    reqs = [req("a", [0.9, 0.5, 0.9]), req("b", [0.99, 0.99, 0.99])]
    assert Planner("fixed")(reqs) == [3, 3]
    assert Planner("fixed", fixed_k=2)(reqs) == [2, 2]
    assert Planner("threshold", threshold=0.6)(reqs) == [1, 3]
    assert Planner("causal", cost_table=FLAT)(reqs) == [3, 3]
    assert Planner("causal", cost_table=STEEP)(reqs) == [0, 0]
    with pytest.raises(ValueError):
        Planner("greedy")


def test_planner_falls_back_and_says_why(caplog):
    reqs = [req("a", CONF), req("b", CONF)]
    planner = Planner("causal", fixed_k=5)
    with caplog.at_level(logging.WARNING, logger="sparkserve.spec_decode.planner"):
        assert planner(reqs) == [5, 5]
        assert planner(reqs) == [5, 5]
    assert planner.fallback_reason["no_cost_table"] == 2
    assert sum("no_cost_table" in r.message for r in caplog.records) == 1  # logged once
    planner.cost_table = STEEP
    assert planner(reqs) == [0, 0]
    no_conf = [req("a", CONF), req("n", [], num_drafts=4)]
    assert planner(no_conf) == [0, 4]  # the one without confidences gets the fixed length
    assert Planner("threshold", threshold=0.99)(no_conf) == [0, 4]
    assert planner.fallback_reason["no_confidences"] == 1
    assert planner.stats()["fallback_reason"] == {"no_cost_table": 2, "no_confidences": 1}


def test_other_tokens_shrink_the_budget_for_that_call():
    table = linear_table(1e-3, 1e-4)
    reqs = [req(f"r{i}", CONF) for i in range(4)]
    planner = Planner("causal", cost_table=table)
    alone = sum(planner(reqs))
    busy = sum(planner(reqs, 512))
    assert busy < alone
    assert sum(planner(reqs)) == alone  # the prefill tokens count for their call only
    assert busy == sum(plan_causal([CONF] * 4, [7] * 4, table, 4 + 512))


def test_lagged_sizes_k_from_confidences_two_calls_back():
    table = linear_table(1e-3, 1e-4)
    high, low, mid = [0.99] * 7, [0.3] * 7, [0.8] * 7
    planner = Planner("lagged", cost_table=table, lag=2)
    reqs = lambda conf: [req(f"r{i}", conf) for i in range(4)]  # noqa: E731
    assert planner(reqs(high)) == plan_causal([high] * 4, [7] * 4, table, 4)  # warm-up: causal
    planner(reqs(low))
    assert planner.fallback_reason["lagged_warmup"] == 2
    expected_k = best_budget([high] * 4, [7] * 4, table, 4)
    for current in (mid, low, high):  # K ignores the current confidences ...
        twin = Planner("lagged", cost_table=table, lag=2)
        twin(reqs(high))
        twin(reqs(low))
        lengths = twin(reqs(current))
        assert twin.last_budget == expected_k
        assert lengths == plan_top_k([current] * 4, [7] * 4, expected_k)  # ... and ranks by them
    planner(reqs(mid))
    planner(reqs(high))
    assert planner.last_budget == best_budget([low] * 4, [7] * 4, table, 4)  # now two calls back: low
    assert planner.last_budget < expected_k


def test_lagged_new_requests_use_the_old_batch_mean():
    table = linear_table(1e-3, 1e-4)
    planner = Planner("lagged", cost_table=table, lag=1)
    planner([req("a", [0.9] * 3), req("b", [0.5] * 3)])
    planner([req("a", [0.1] * 3), req("c", [0.1] * 3)])
    assert planner.last_budget == best_budget([[0.9] * 3, [0.7] * 3], [3, 3], table, 2)


def test_planner_plugs_into_the_scheduler_hook():
    reqs = []
    for i, conf in enumerate(([0.9, 0.9, 0.9], [0.2, 0.9, 0.9])):
        r = Request(f"r{i}", [1, 2, 3], SamplingParams(max_tokens=10))
        r.output_token_ids = [4]
        r.num_computed_tokens = r.num_tokens - 1  # decoding
        r.draft_token_ids, r.draft_confidences = [5, 6, 7], list(conf)
        reqs.append(r)
    planner = planner_from_spec(SpecConfig(method="dspark", num_speculative_tokens=3, verify="threshold",
                                           confidence_threshold=0.5))
    assert plan_verify_lengths(planner, reqs) == {"r0": 3, "r1": 0}
    causal = planner_from_spec(SpecConfig(method="dspark", num_speculative_tokens=3, verify="causal"),
                               cost_table=FLAT, max_num_batched_tokens=4)
    assert plan_verify_lengths(causal, reqs) == {"r0": 2, "r1": 0}
    fixed = planner_from_spec(SpecConfig(method="dspark", num_speculative_tokens=3, verify_k=1))
    assert plan_verify_lengths(fixed, reqs) == {"r0": 1, "r1": 1}
    assert math.isclose(causal.cost_table.sps(3), 100.0)
