"""Each verify-length planner inside the engine keeps speculation lossless: greedy equality and
the sampled-distribution test, with a live cost table (profiled in a few seconds)."""

import pytest

from sparkserve import LLM, SamplingParams
from tests.spec_decode.spec_fixtures import spec_config, target_dir
from tests.spec_decode.test_spec_distribution import N, PROMPT, chi2_pvalue, exact_joint, world  # noqa: F401
from tests.spec_decode.test_spec_engine import MAX_TOKENS, baseline, make_prompts, root  # noqa: F401

PLANNERS = ["threshold", "causal", "lagged"]


def planner_settings(tmp_root: str, draft_gate: bool = True) -> dict:
    return {"cost_profile_time_s": 2.0, "cost_cache_dir": f"{tmp_root}/cost", "draft_gate": draft_gate}


@pytest.mark.parametrize("verify", PLANNERS)
def test_greedy_equality_with_planner(verify, root, baseline):  # noqa: F811
    prompts, want = baseline
    spec = spec_config("dspark", root, verify=verify, confidence_threshold=0.4, **planner_settings(root))
    llm = LLM(target_dir(root), max_model_len=192, max_num_seqs=16, max_num_batched_tokens=64, block_size=4,
              num_kv_blocks=80, speculative_config=spec)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True))
    assert [o.outputs[0].token_ids for o in outs] == want
    stats = llm.engine.stats().spec_decode
    assert stats.planner.mode == verify and stats.planner.num_calls > 0


@pytest.mark.parametrize("verify", ["causal", "lagged"])
def test_distribution_with_planner(verify, world):  # noqa: F811
    import os

    from sparkserve.tools.init_drafter import init_drafter

    root_dir, target = world
    drafter = os.path.join(root_dir, "drafter-dspark")
    if not os.path.exists(drafter):
        init_drafter("dspark", target, drafter, num_speculative_tokens=3, seed=5, init_std=0.3)
    spec = {"method": "dspark", "model": drafter, "num_speculative_tokens": 3, "verify": verify,
            **planner_settings(root_dir, draft_gate=False)}  # the planner on every step
    llm = LLM(target, max_model_len=64, max_num_seqs=256, max_num_batched_tokens=4096, speculative_config=spec)
    params = [SamplingParams(max_tokens=5, ignore_eos=True, seed=7000 + i, temperature=1.0) for i in range(N)]
    outs = llm.generate([{"prompt_token_ids": PROMPT}] * N, params)
    samples = [tuple(o.outputs[0].token_ids[:3]) for o in outs]
    assert chi2_pvalue(samples, exact_joint(target, {"temperature": 1.0})) > 1e-3


def test_greedy_equality_while_the_draft_gate_switches(root, baseline):  # noqa: F811
    """A twitchy gate (probe every 3 steps) turns drafting off and on many times mid-request."""
    from sparkserve.spec_decode.draft_gate import DraftGate

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
