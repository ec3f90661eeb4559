"""The engine on the triton attention backend (interpreted on a CPU): greedy output equals plain
decoding on the torch backend, with DSpark speculation on (so prefill chunks, verify blocks, decode
rows and the drafter's attention all run through the Triton kernels)."""
from __future__ import annotations

import random

import pytest

pytest.importorskip("triton")
pytest.importorskip("transformers")  # builds the tiny target

from sparkserve import LLM, SamplingParams  # noqa: E402
from tests.spec_decode.spec_fixtures import spec_config, target_dir  # noqa: E402


def test_greedy_equality_with_dspark_on_triton(tmp_path, device):
    root = str(tmp_path)
    rng = random.Random(5)
    base = [rng.randrange(3, 300) for _ in range(5)]
    prompts = [base * 4, [rng.randrange(3, 300) for _ in range(9)]]
    greedy = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    reqs = [{"prompt_token_ids": p} for p in prompts]
    want = [o.outputs[0].token_ids for o in LLM(target_dir(root), max_model_len=96, dtype="float32",
                                                 attention_backend="torch", device=device).generate(reqs, greedy)]
    llm = LLM(target_dir(root), max_model_len=96, dtype="float32", attention_backend="triton", device=device,
              max_num_batched_tokens=24, speculative_config=spec_config("dspark", root, gamma=3, verify="fixed"))
    assert llm.engine.runner.backend.name == "triton"
    got = [o.outputs[0].token_ids for o in llm.generate(reqs, greedy)]
    assert got == want
    total = llm.engine.spec_stats.total
    assert total.num_verified_draft_tokens > 0
