"""min_tokens (runner/min_tokens.py): no stop token before the request has that many outputs, with plain
decoding and with verify blocks (whose row j is output index num_output_tokens + j), greedy and sampled."""
from __future__ import annotations

import pytest
import torch

from sparkserve.assets import demo_speculative_config
from sparkserve.engine.llm import LLM
from sparkserve.runner.min_tokens import mask_early_stops
from sparkserve.sampling_params import SamplingParams
from sparkserve.step import SamplingMeta, ScheduledSeq, StepPlan

PROMPT = ("Sofia buys 7 hats. Each hat costs $4. How many dollars does Sofia spend?\n"
          "Please reason step by step, and put your final answer within \\boxed{}.")


def seq(num_drafts: int, outputs: int, min_tokens: int, stop_ids=(2,)) -> ScheduledSeq:
    return ScheduledSeq("r", [5] * (1 + num_drafts), 10, [1], SamplingMeta(min_tokens=min_tokens,
                        min_tokens_stop_ids=stop_ids), num_draft_tokens=num_drafts, num_output_tokens=outputs)


def test_rows_below_min_tokens_lose_their_stop_ids():
    plan = StepPlan([seq(3, outputs=2, min_tokens=4), seq(0, outputs=5, min_tokens=4), seq(0, 0, 1, (2, 7))])
    logits = torch.zeros(6, 10)
    mask_early_stops(plan, [0, 1, 2], logits)
    masked = (logits == float("-inf")).nonzero().tolist()
    assert masked == [[0, 2], [1, 2], [5, 2], [5, 7]]  # output indexes 2, 3 of the block; index 0 of the last


@pytest.fixture(scope="module")
def natural_length() -> int:
    llm = LLM(None, num_threads=1)
    out = llm.generate([PROMPT], SamplingParams(max_tokens=96, temperature=0.0))[0].outputs[0]
    assert out.finish_reason == "stop"  # the demo answers and ends with eos
    return len(out.token_ids)


@pytest.mark.parametrize("spec", [None, "dspark"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_no_stop_before_min_tokens(natural_length, spec, temperature):
    config = demo_speculative_config() if spec else None
    if config:
        config = {**config, "verify": "fixed"}  # every draft verified: stop tokens get drafted
    llm = LLM(None, num_threads=1, speculative_config=config)
    eos = set(llm.engine.eos_token_ids)
    want = natural_length + 12
    for seed in range(3):
        params = SamplingParams(max_tokens=want + 40, min_tokens=want, temperature=temperature, seed=seed)
        out = llm.generate([PROMPT], params)[0].outputs[0]
        assert len(out.token_ids) >= want
        assert not eos & set(out.token_ids[:want])
