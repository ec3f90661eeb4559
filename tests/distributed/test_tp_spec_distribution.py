"""Losslessness at TP=2: DSpark speculative decoding on a 2-rank gloo group emits tokens distributed exactly as
plain sampling from the target (the G-tests of ``tests/spec_decode/test_spec_distribution.py``, same world,
sample sizes and stated power, at T=1), and the verifier accepts each draft at sum_x min(p, q)(x)."""
from __future__ import annotations

import random

import numpy as np

from sparkserve import LLM, SamplingParams
from tests.spec_decode.test_spec_distribution import (  # noqa: F401 - ``world`` is a fixture
    GAMMA,
    N,
    NUM_TOKENS,
    PROMPT,
    SETTINGS,
    distribution_pvalues,
    drafter_dir,
    exact_conditionals,
    record_verify,
    world,
)
from tests.stats import check_pvalues


def test_tokens_follow_target_at_tp2(world, monkeypatch):  # noqa: F811
    _, target = world
    llm = LLM(target, max_model_len=64, max_num_seqs=256, max_num_batched_tokens=4096, tensor_parallel_size=2,
              speculative_config={"method": "dspark", "model": drafter_dir(world, "dspark"),
                                  "num_speculative_tokens": GAMMA})
    try:
        rng = random.Random(0)
        llm.engine.scheduler.verify_planner = lambda reqs, _: [rng.randint(1, len(r.draft_token_ids)) for r in reqs]
        record = record_verify(monkeypatch)
        params = [SamplingParams(max_tokens=NUM_TOKENS + 1, ignore_eos=True, seed=1000 + i, **SETTINGS["t1"],
                                 speculative={"max_draft_tokens": (3, 3, 2, 1, 0)[i % 5]}) for i in range(N)]
        outs = llm.generate([{"prompt_token_ids": PROMPT}] * N, params)
    finally:
        llm.engine.close()
    samples = np.array([o.outputs[0].token_ids[:NUM_TOKENS] for o in outs])  # [N, K]
    stats = llm.engine.spec_stats.total
    assert 0 < stats.num_accepted_tokens < stats.num_verified_draft_tokens  # both paths exercised
    assert len(record.draft_ranks) == stats.num_verified_draft_tokens
    check_pvalues(distribution_pvalues(samples, exact_conditionals(target, SETTINGS["t1"])))
    check_pvalues(record.pvalues())
