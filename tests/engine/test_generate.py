"""End-to-end generation through the engine: parity with transformers, batching invariance,
preemption, prefix caching, chunked prefill, seeds, stops, aborts."""
import random

import pytest
import torch

from sparkserve import LLM, SamplingParams
from sparkserve.errors import ContextLengthError

transformers = pytest.importorskip("transformers")
GREEDY = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)


def prompts(n, vocab=320, seed=0):
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(rng.randrange(3, 40))] for _ in range(n)]


def token_ids(outs):
    return [o.outputs[0].token_ids for o in outs]


@pytest.mark.parametrize("which", ["qwen3_dir", "llama_dir"])
def test_greedy_matches_transformers_generate(which, request):
    path = request.getfixturevalue(which)
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    llm = LLM(path, max_model_len=256, dtype="float32")
    ps = prompts(4, seed=1)
    ours = token_ids(llm.generate([{"prompt_token_ids": p} for p in ps], GREEDY))
    for p, got in zip(ps, ours):
        with torch.no_grad():
            ref = hf.generate(torch.tensor([p]), max_new_tokens=24, min_new_tokens=24, do_sample=False,
                              attention_mask=torch.ones(1, len(p), dtype=torch.long), pad_token_id=0)
        assert got == ref[0, len(p):].tolist()


def test_batching_preemption_prefix_cache_and_chunking_do_not_change_greedy_output(qwen3_dir):
    ps = prompts(12, seed=2)
    ps += [ps[0][:20] + [5, 6, 7], ps[0][:20] + [9]]  # shared prefixes for the prefix cache
    reqs = [{"prompt_token_ids": p} for p in ps]
    solo = LLM(qwen3_dir, max_model_len=256, max_num_seqs=1, enable_prefix_caching=False)
    want = [token_ids(solo.generate([r], GREEDY))[0] for r in reqs]
    # a tiny KV cache forces preemption; a tiny token budget forces chunked prefill
    tight = LLM(qwen3_dir, max_model_len=128, max_num_seqs=8, max_num_batched_tokens=16, block_size=4,
                num_kv_blocks=40, enable_prefix_caching=True)
    got = token_ids(tight.generate(reqs, GREEDY))
    assert got == want
    assert tight.engine.scheduler.num_preemptions_total > 0
    assert tight.engine.stats().kv_usage == 0.0


def test_prefix_cache_hit_is_reported_and_exact(qwen3_dir):
    llm = LLM(qwen3_dir, max_model_len=256, block_size=4)
    base = prompts(1, seed=5)[0] + list(range(3, 40))
    first = llm.generate([{"prompt_token_ids": base}], GREEDY)[0]
    second = llm.generate([{"prompt_token_ids": base}], GREEDY)[0]
    assert second.num_cached_tokens >= 4 * ((len(base) - 1) // 4) - 4 and second.num_cached_tokens > 0
    assert first.outputs[0].token_ids == second.outputs[0].token_ids


def test_seeded_sampling_independent_of_batch(qwen3_dir):
    llm = LLM(qwen3_dir, max_model_len=256)
    p = SamplingParams(temperature=1.0, top_p=0.9, seed=1234, max_tokens=16, ignore_eos=True)
    alone = token_ids(llm.generate([{"prompt_token_ids": [5, 6, 7]}], p))[0]
    others = [SamplingParams(temperature=0.8, max_tokens=10, ignore_eos=True)] * 5
    mixed = llm.generate([{"prompt_token_ids": q} for q in prompts(5, seed=9)] + [{"prompt_token_ids": [5, 6, 7]}],
                         others + [p])
    assert mixed[-1].outputs[0].token_ids == alone
    assert token_ids(llm.generate([{"prompt_token_ids": [5, 6, 7]}], p))[0] == alone


def test_n_children_differ_and_are_seeded(qwen3_dir):
    llm = LLM(qwen3_dir, max_model_len=256)
    p = SamplingParams(temperature=1.0, n=3, seed=7, max_tokens=12, ignore_eos=True)
    a = llm.generate([{"prompt_token_ids": [4, 5]}], p)[0]
    b = llm.generate([{"prompt_token_ids": [4, 5]}], p)[0]
    assert [c.token_ids for c in a.outputs] == [c.token_ids for c in b.outputs]
    assert len({tuple(c.token_ids) for c in a.outputs}) == 3


def test_stop_token_ids_max_tokens_and_stop_strings(qwen3_dir):
    llm = LLM(qwen3_dir, max_model_len=256)
    free = llm.generate([{"prompt_token_ids": [9, 10, 11]}], GREEDY)[0].outputs[0]
    stop_tok = free.token_ids[5]
    first = free.token_ids.index(stop_tok)
    out = llm.generate([{"prompt_token_ids": [9, 10, 11]}],
                       SamplingParams(temperature=0, max_tokens=24, stop_token_ids=[stop_tok]))[0].outputs[0]
    assert out.token_ids == free.token_ids[:first + 1] and out.finish_reason == "stop"
    assert out.stop_reason == stop_tok
    text = llm.generate(["the quick"], SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))[0].outputs[0]
    if len(text.text) >= 4:
        stop = text.text[2:4]
        cut = llm.generate(["the quick"], SamplingParams(temperature=0, max_tokens=24, stop=[stop]))[0].outputs[0]
        assert cut.text == text.text[:text.text.index(stop)] and cut.finish_reason == "stop"


def test_abort_frees_blocks(qwen3_dir):
    llm = LLM(qwen3_dir, max_model_len=256)
    eng = llm.engine
    for i in range(6):
        eng.add_request(f"r{i}", {"prompt_token_ids": prompts(1, seed=i)[0]}, GREEDY)
    for _ in range(3):
        eng.step()
    assert eng.stats().kv_usage > 0
    outs = eng.abort([f"r{i}" for i in range(6)])
    assert len(outs) == 6 and all(o.finished and o.seqs[0].finish_reason == "abort" for o in outs)
    assert eng.stats().kv_usage == 0.0 and not eng.has_unfinished()


@pytest.mark.parametrize("kwargs,match", [
    ({"temperature": -1}, "temperature"), ({"top_p": 0.0}, "top_p"), ({"top_k": -5}, "top_k"),
    ({"max_tokens": 0}, "max_tokens"), ({"n": 0}, "n must"), ({"logprobs": 99}, "logprobs"),
    ({"min_p": 2.0}, "min_p"), ({"stop": [""]}, "stop"), ({"seed": "x"}, "seed"),
])
def test_invalid_sampling_params(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)


def test_invalid_prompts(qwen3_dir):
    """The engine's admission is the one place prompts are validated (the scheduler trusts it)."""
    llm = LLM(qwen3_dir, max_model_len=64, block_size=16, num_kv_blocks=3)  # 2 usable blocks: 32 tokens
    with pytest.raises(ContextLengthError, match="maximum context length is 64"):
        llm.generate([{"prompt_token_ids": list(range(3, 70))}], GREEDY)
    with pytest.raises(ValueError, match="KV cache holds only 32 tokens"):
        llm.generate([{"prompt_token_ids": list(range(3, 43))}], SamplingParams(max_tokens=4))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        llm.generate([{"prompt_token_ids": [1, 99999]}], GREEDY)
    with pytest.raises(ValueError, match="empty"):
        llm.generate([{"prompt_token_ids": []}], GREEDY)
    assert llm.generate(["ok"], SamplingParams(max_tokens=2))[0].finished  # still serving
