"""Speculative decoding inside the engine: greedy output equals plain greedy output token for
token, whatever the drafter, batch size, verify lengths, chunking, preemption and aborts."""
import random

import pytest

from sparkserve import LLM, SamplingParams
from sparkserve.sampling_params import SpeculativeParams
from tests.spec_decode.spec_fixtures import METHODS, spec_config, target_dir

MAX_TOKENS = 24


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("spec"))


def make_prompts(n, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        base = [rng.randrange(3, 300) for _ in range(rng.randrange(2, 8))]
        out.append((base * rng.randrange(1, 5))[:40] if i % 2 else [rng.randrange(3, 300) for _ in range(rng.randrange(3, 30))])
    return out


@pytest.fixture(scope="module")
def baseline(root):
    llm = LLM(target_dir(root), max_model_len=192)
    prompts = make_prompts(20)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True))
    return prompts, [o.outputs[0].token_ids for o in outs]


def run_spec(llm, prompts, abort_every=0, seed=0):
    """Drive the engine by hand: varied per-request draft caps, a random verify planner, aborts."""
    eng = llm.engine
    rng = random.Random(seed)
    eng.scheduler.verify_planner = lambda reqs: [rng.randint(0, len(r.draft_token_ids)) for r in reqs]
    gamma = eng.num_speculative_tokens
    ids = []
    for i, p in enumerate(prompts):
        cap = None if i % 3 == 0 else i % (gamma + 1)
        params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True,
                                speculative=SpeculativeParams(max_draft_tokens=cap))
        ids.append(eng.add_request(f"r{i}", {"prompt_token_ids": p}, params))
    done, aborted, step = {}, set(), 0
    while eng.has_unfinished():
        for out in eng.step():
            if out.finished:
                done[out.request_id] = out
        step += 1
        if abort_every and step == 3:
            victims = [i for i in ids[::abort_every] if i not in done]
            for out in eng.abort(victims):
                done[out.request_id] = out
            aborted.update(victims)
    assert eng.stats()["kv_usage"] == 0.0
    return done, aborted


@pytest.mark.parametrize("method", METHODS)
def test_greedy_equality_tight_cache(method, root, baseline):
    prompts, want = baseline
    llm = LLM(target_dir(root), max_model_len=192, max_num_seqs=32, max_num_batched_tokens=48, block_size=4,
              num_kv_blocks=60, speculative_config=spec_config(method, root))
    done, aborted = run_spec(llm, prompts, abort_every=5)
    assert aborted
    for i, toks in enumerate(want):
        rid = f"r{i}"
        if rid in aborted:
            assert done[rid].outputs[0].finish_reason == "abort"
            continue
        assert done[rid].outputs[0].token_ids == toks, f"{method} request {i} differs"
    assert llm.engine.scheduler.num_preemptions_total > 0
    total = llm.engine.spec_stats.total
    assert total.num_verified_draft_tokens > 0


@pytest.mark.parametrize("method", METHODS)
def test_greedy_equality_batch_one(method, root, baseline):
    prompts, want = baseline
    llm = LLM(target_dir(root), max_model_len=192, max_num_seqs=1,
              speculative_config=spec_config(method, root))
    done, _ = run_spec(llm, prompts[:6], seed=1)
    for i in range(6):
        assert done[f"r{i}"].outputs[0].token_ids == want[i]


def test_ngram_accepts_on_repetitive_text(root, baseline):
    prompts, want = baseline
    llm = LLM(target_dir(root), max_model_len=192, speculative_config=spec_config("ngram", root))
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True))
    assert [o.outputs[0].token_ids for o in outs] == want
    accepted = sum(o.spec_decode.num_accepted_tokens for o in outs)
    assert accepted > 0
    s = outs[1].spec_decode
    assert s.num_verified_draft_tokens >= s.num_accepted_tokens and s.mean_acceptance_length >= 1.0


def test_disable_and_cap_per_request(root):
    llm = LLM(target_dir(root), max_model_len=192, speculative_config=spec_config("ngram", root))
    p = [5, 6, 7, 8] * 6
    off = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, speculative={"disable": True})
    two = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, speculative={"max_draft_tokens": 2})
    a, b = llm.generate([{"prompt_token_ids": p}] * 2, [off, two])
    assert a.spec_decode.num_verified_draft_tokens == 0 and a.spec_decode.num_draft_tokens == 0
    assert b.spec_decode.num_verified_draft_tokens > 0
    assert b.spec_decode.num_verified_draft_tokens <= 2 * b.spec_decode.num_drafts
    assert a.outputs[0].token_ids == b.outputs[0].token_ids
