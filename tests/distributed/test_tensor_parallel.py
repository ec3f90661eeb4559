"""Tensor parallelism on CPU with gloo (sparkserve/distributed/): TP=2 runs the demo model token for token as
TP=1 with the shipped DSpark drafter (without it: ``test_launch_tp.py``, through the server), sizes that do not
divide are refused before any process starts, and a worker killed mid-run makes the engine raise a clear
error instead of hanging.

fp32 sums in another order (each rank's partial o_proj/down_proj products, then the all-reduce) could flip a
near-tie in principle; the prompts here have no such tie on the demo model, and a flip would show as a
token mismatch, not a hang."""
from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from sparkserve.assets import demo_model_path, demo_speculative_config
from sparkserve.distributed.driver import TensorParallelError
from sparkserve.distributed.shard import shard_for_tensor_parallel
from sparkserve.engine.args import build_engine_config
from sparkserve.engine.llm import LLM
from sparkserve.models.hf_config import DecoderConfig
from sparkserve.models.registry import model_class
from sparkserve.sampling_params import SamplingParams

PROMPTS = ["The quick brown fox", "def add(a, b):", "Question: what is 3 + 4?", "Hello, my name is"]
GREEDY = SamplingParams(temperature=0, max_tokens=20, logprobs=1)
ENGINE = dict(num_kv_blocks=64, max_model_len=256)


def _tokens_and_logprobs(outs) -> tuple[list[list[int]], list[list[float]]]:
    return [o.outputs[0].token_ids for o in outs], [[lp.logprob for lp in o.outputs[0].logprobs] for o in outs]


def _assert_same(ref, got) -> None:
    (ref_ids, ref_lps), (ids, lps) = ref, got
    assert ids == ref_ids
    for a, b in zip(ref_lps, lps):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-3)


@pytest.mark.parametrize("world", [3, 5])
def test_sizes_that_do_not_divide_are_refused(world):
    with pytest.raises(ValueError, match=f"tensor_parallel_size {world} does not divide .*num_attention_heads 8"):
        build_engine_config(tensor_parallel_size=world)
    with pytest.raises(ValueError, match="num_key_value_heads 2"):
        cfg = DecoderConfig.from_file(demo_model_path())
        with torch.device("meta"):
            shard_for_tensor_parallel(model_class(cfg)(cfg), 0, world)
    with pytest.raises(ValueError, match="tensor_parallel_size must be >= 1"):
        build_engine_config(tensor_parallel_size=0)


def test_tp2_with_dspark_matches_tp1_then_a_dead_worker_fails_the_engine():
    spec = demo_speculative_config() | {"verify": "fixed"}  # no start-up profiling: the same plan either way
    ref = _tokens_and_logprobs(LLM(**ENGINE, speculative_config=spec).generate(PROMPTS, GREEDY))
    llm = LLM(**ENGINE, speculative_config=spec, tensor_parallel_size=2)
    try:
        tp = llm.engine.model
        assert tp.config.num_key_value_heads == 1 and tp.config.num_attention_heads == 4
        assert llm.engine.runner.kv_caches[0][0].shape[2] == 1  # the rank's KV heads only
        got = llm.generate(PROMPTS, GREEDY)
        assert sum(o.spec_decode.num_accepted_tokens for o in got) > 0  # the drafter ran, on rank 0
        _assert_same(ref, _tokens_and_logprobs(got))

        os.kill(tp.procs[0].pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(TensorParallelError, match=r"worker rank 1 \(exit code -9\) died"):
            llm.generate(PROMPTS, GREEDY)
        assert time.monotonic() - t0 < 30  # a clear error, not the collective timeout
        with pytest.raises(TensorParallelError, match="stopped after a failure"):
            llm.generate(PROMPTS, GREEDY)
    finally:
        llm.engine.close()
    assert all(p.exitcode is not None for p in tp.procs)
