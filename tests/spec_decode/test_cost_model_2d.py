"""The cost table's t(B, R) (R: requests that draft after the step): fitting from the sparse startup
profile, honest prediction error on a traffic mix, online tracking, planner decisions, old caches."""
from __future__ import annotations

import json
import logging
import os
import random
from types import SimpleNamespace

import pytest

from sparkserve.spec_decode.cost_model import CostKey, CostTable, cache_dir
from sparkserve.spec_decode.planner import Planner, plan_causal
from sparkserve.spec_decode.profile import default_grid, drafting_grid, profile_step_times

KEY = CostKey(model="m", drafter="d", dtype="float32", backend="torch", hardware="cpu:x", token_budget=256)
GAMMA, BUDGET, MAX_SEQS = 7, 256, 32


def affine(a: float, b: float, c: float, d: float = 0.0):
    """t(B, R) = a + b B + c R (+ d whenever R > 0: the drafter's fixed cost)."""
    return lambda num_tokens, num_drafting: a + b * num_tokens + c * num_drafting + d * (num_drafting > 0)


TRUE = affine(2e-3, 2e-5, 4e-4, 1e-3)  # each drafting request costs as much as 20 verified tokens


def noisy(true_time, rng: random.Random, noise: float = 0.02):
    return lambda b, r: true_time(b, r) * (1.0 + rng.uniform(-noise, noise))


def profiled(true_time, seed: int = 0, **kwargs) -> CostTable:
    return profile_step_times(noisy(true_time, random.Random(seed)), BUDGET, time_limit_s=1e9, max_repeats=5,
                              num_drafting=drafting_grid(MAX_SEQS, BUDGET), gamma=GAMMA, **kwargs)


def traffic(rng: random.Random, n: int):
    """(B, R) of live steps: drafting steps (R requests verifying 0..gamma drafts each, sometimes a prefill
    chunk) and plain ones (R = 0)."""
    for _ in range(n):
        r = rng.randint(1, 40)
        b = r + sum(rng.randint(0, 3) for _ in range(r)) + (rng.randint(16, 64) if rng.random() < 0.2 else 0)
        yield (b, r) if rng.random() < 0.5 else (r + rng.randint(0, 8), 0)


def test_drafting_grid():
    assert drafting_grid(32, 256) == [1, 2, 4, 8, 16, 32] and drafting_grid(48, 40) == [1, 2, 4, 8, 16, 32, 40]
    assert drafting_grid(1, 8) == [1]


@pytest.mark.parametrize("seed", [0, 1])
def test_profile_recovers_an_affine_cost_between_and_beyond_its_points(seed):
    table = profiled(TRUE, seed)
    assert table.num_drafting == drafting_grid(MAX_SEQS, BUDGET) and table.buckets == default_grid(BUDGET)
    for r in (0, 1, 3, 5, 12, 32, 48):  # 3, 5, 12 between rows, 48 beyond the last
        for b in {max(r, 1), 2 * r + 1, r * (1 + GAMMA) - 3}:
            if b >= max(r, 1):
                assert table.step_time_s(b, r) == pytest.approx(TRUE(b, r), rel=0.03), (b, r)


def test_the_prediction_error_on_a_traffic_mix_is_the_noise_and_b_only_misses_it():
    """Both tables refine online; the error is measured before each update. t(B) alone cannot tell a
    plain step from a drafting one at the same B."""
    table = profiled(TRUE)
    rng = random.Random(7)
    b_only = profile_step_times(lambda b: TRUE(b, min(b // (1 + GAMMA), MAX_SEQS)), BUDGET, time_limit_s=1e9,
                                max_repeats=1)  # the old profile's shape: decodes verifying every draft
    for b, r in traffic(rng, 600):
        t = TRUE(b, r) * (1 + rng.uniform(-0.05, 0.05))
        table.observe(b, t, r)
        b_only.observe(b, t)
    assert table.error("plain") < 0.05 and table.error("drafting") < 0.05 and table.prediction_error < 0.05
    assert b_only.prediction_error > 0.25


def test_online_refinement_tracks_a_dearer_drafter():
    """The drafter gets 2.5x dearer per request (another job on its cores). On the traffic mix the
    drafting steps' prediction error jumps, then falls back to the noise level within a few hundred
    steps; t(B, 0), which did not change, stays put; and the planner, asked at the same load, verifies
    as many drafts as on the true new table, more than before (a dearer fixed part makes verified
    tokens relatively cheaper)."""
    table = profiled(TRUE)
    dearer = affine(2e-3, 2e-5, 1e-3, 1e-3)
    requests = [SimpleNamespace(request_id=f"r{i}", draft_token_ids=[1] * GAMMA,
                                draft_confidences=[0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]) for i in range(16)]
    before = sum(Planner("causal", cost_table=table)(requests))
    rng = random.Random(3)
    errors = []
    for i, (b, r) in enumerate(traffic(rng, 600)):
        true = dearer if r else TRUE
        table.observe(b, true(b, r) * (1 + rng.uniform(-0.02, 0.02)), r)
        if i in (19, 599):
            errors.append(table.error("drafting"))
    assert errors[0] > 0.3 and errors[1] < 0.04
    for r in (4, 8, 16, 32):
        for b in (r, 3 * r):
            assert table.step_time_s(b, r) == pytest.approx(dearer(b, r), rel=0.03), (b, r)
    for b in (8, 16, 32):
        assert table.step_time_s(b, 0) == pytest.approx(TRUE(b, 0), rel=0.03)
    assert table.error("plain") < 0.03
    true_table = CostTable.from_function(dearer, default_grid(BUDGET), drafting_grid(MAX_SEQS, BUDGET))
    after = sum(Planner("causal", cost_table=table)(requests))
    assert after == sum(Planner("causal", cost_table=true_table)(requests)) > before


def test_planner_asks_the_table_at_the_plans_drafting_count():
    """On a fixed synthetic t(B, R) the planner plans with R = its requests (all draft again after the
    step): the same lengths as Algorithm 1 on the B-only curve t(B, 16), and more drafts the dearer
    the per-request drafting cost, as the B-only table at R = 0 would never see."""
    grid, rows = default_grid(BUDGET), drafting_grid(MAX_SEQS, BUDGET)
    requests = [SimpleNamespace(request_id=f"r{i}", draft_token_ids=[1] * 5,
                                draft_confidences=[0.9, 0.8, 0.6, 0.4, 0.2]) for i in range(16)]
    confs, lengths = [r.draft_confidences for r in requests], [5] * 16
    verified = []
    for c in (0.0, 1e-3, 1e-2):
        true = affine(1e-2, 4e-4, c)
        table = CostTable.from_function(true, grid, rows, learning_rate=0.0)
        planned = Planner("causal", cost_table=table)(requests)
        at_16 = CostTable.from_function(lambda b: true(b, 16), grid)
        assert planned == plan_causal(confs, lengths, at_16, 16) == plan_causal(confs, lengths, table, 16,
                                                                                  num_drafting=16)
        verified.append(sum(planned))
    assert verified[0] < verified[1] < verified[2]
    assert plan_causal(confs, lengths, table, 16) != planned  # at R = 0 the table is a different curve


def test_profile_grid_order_and_deadline():
    calls = []
    clock = SimpleNamespace(t=0.0)

    def run_step(b, r):
        calls.append((b, r))
        clock.t += 1e-4
        return TRUE(b, r)

    profile_step_times(run_step, 64, time_limit_s=1.0, num_drafting=[1, 2, 8], gamma=3, warmup=False,
                       max_repeats=1, clock=lambda: clock.t)
    assert calls == sorted(calls) and set(calls) == {(b, 0) for b in default_grid(64)} | \
        {(1, 1), (4, 1), (2, 2), (8, 2), (8, 8), (32, 8)}  # B = R and B = R (1 + gamma) per row

    calls.clear()

    def slow(b, r):
        calls.append((b, r))
        clock.t += 1.0  # every step is far over the 0.1 s limit
        return TRUE(b, r)

    clock.t = 0.0
    table = profile_step_times(slow, 64, time_limit_s=0.1, num_drafting=[1, 2, 8], gamma=3, clock=lambda: clock.t)
    assert calls == [(1, 0), (1, 0), (1, 1), (2, 0)]  # one warm-up step, then up to the second R = 0 bucket
    assert table.buckets == [1, 2] and table.num_drafting == [1]
    for b, r in ((64, 0), (64, 1), (64, 8)):  # extrapolated along B and R, never below a measured point
        assert table.step_time_s(b, r) >= table.step_time_s(2, min(r, 1)) > 0


def test_round_trip_and_old_b_only_files_are_ignored_with_a_log_line(tmp_path, caplog):
    table = profiled(TRUE, key=KEY)
    table.observe(20, 5e-3, 4)
    loaded = CostTable.load_cached(KEY, table.save_cached(str(tmp_path)).rsplit("/cost/", 1)[0])
    assert loaded.num_drafting == table.num_drafting and loaded.extra_s == table.extra_s
    assert loaded.step_times_s == table.step_times_s and loaded.extra_scales_s == table.extra_scales_s
    assert loaded.scales_s == table.scales_s and loaded.num_updates == 1
    path = os.path.join(cache_dir(str(tmp_path)), KEY.filename())
    with open(path, "w") as f:  # what the B-only build wrote
        json.dump({"version": 1, "key": KEY.__dict__, "buckets": [1, 8], "step_times_s": [1e-3, 2e-3],
                   "scales_s": [0.0, 0.0], "profiled_at": 0.0, "updated_at": 0.0, "num_updates": 0}, f)
    with caplog.at_level(logging.INFO, logger="sparkserve.spec_decode.cost_model"):
        assert CostTable.load_cached(KEY, str(tmp_path)) is None
    assert any("format 1" in r.message and "profiling afresh" in r.message for r in caplog.records)


def test_drafting_rows_lookup_and_validation():
    table = CostTable([1, 8], [1.0, 2.0], num_drafting=[1, 4], drafting_extra_s=[0.5, 1.1])
    assert table.step_time_s(8, 0) == 2.0 and table.step_time_s(8, 1) == 2.5
    assert table.step_time_s(4, 2) == pytest.approx(1 + 3 / 7 + 0.7)  # linear in B and in R
    assert table.step_time_s(1, 8) == pytest.approx(1.0 + 1.1 + 0.2 * 4)  # the last per-request slope
    assert CostTable([1, 8], [1.0, 2.0], num_drafting=[2], drafting_extra_s=[0.5]).step_time_s(1, 4) == 2.0
    for rows, extra in (([2, 1], [1.0, 2.0]), ([1], []), ([0], [1.0]), ([1], [-1.0])):
        with pytest.raises(ValueError):
            CostTable([1, 8], [1.0, 2.0], num_drafting=rows, drafting_extra_s=extra)
    assert CostTable([1, 8], [1.0, 2.0]).step_time_s(8, 5) == 2.0  # B only: d = 0
