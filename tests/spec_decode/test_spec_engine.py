"""Speculative decoding inside the engine: greedy output equals plain greedy output token for
token, whatever the drafter, batch size, verify lengths, chunking, preemption and aborts, with drafts
both accepted and rejected (so the accept-and-rollback path runs for every drafter)."""
import os
import random

import pytest
import torch
from safetensors.torch import load_file, save_file

from sparkserve import LLM, SamplingParams
from sparkserve.engine.llm import OutputAccumulator
from sparkserve.sampling_params import SpeculativeParams
from tests.spec_decode.spec_fixtures import METHODS, spec_config, target_dir

MAX_TOKENS = 24


def copy_anchor_eagle3(root: str, gamma: int = 4) -> dict:
    """An Eagle3 drafter whose every draft is the anchor token. The tiny tied-embedding target
    repeats its last token ~80% of the time under greedy decoding, so these drafts are mostly
    accepted and sometimes rejected (a random-init Eagle3 accepts none).

    Construction (one layer; H = 64, Hkv * D = 32): embed[t] = [code_t; 1...1] with unit-norm random
    codes [V, Hkv*D], lm_head[t] = [code_t; 0], so argmax lm_head(norm(code_t)) = t. q_proj/k_proj read
    only the constant ones (a positive multiple of a fixed vector u), so after q_norm/k_norm q and k are
    constant and the scores depend only on the RoPE distance; u on the first coordinate of every
    rotation pair and norm weights 12 give the row itself a score >= 37 above any other distance
    < 600. v carries the code, o_proj puts it back in the first Hkv*D dims; fc, hidden_norm and the
    MLP's down_proj are 0, so the chain's hidden state only ever holds the code."""
    path = os.path.join(root, "drafter-eagle3-copy-anchor")
    if os.path.exists(os.path.join(path, "config.json")):
        return {"method": "eagle3", "model": path, "num_speculative_tokens": gamma}
    from sparkserve.tools.init_drafter import init_drafter

    init_drafter("eagle3", target_dir(root), path, num_speculative_tokens=gamma, seed=3)
    sd = {k: torch.zeros(v.shape) for k, v in load_file(os.path.join(path, "model.safetensors")).items()}
    vocab, hidden = sd["embed_tokens.weight"].shape
    attn = "layers.0.self_attn."
    head_dim = sd[attn + "q_norm.weight"].shape[0]
    num_q, num_kv = sd[attn + "q_proj.weight"].shape[0] // head_dim, sd[attn + "k_proj.weight"].shape[0] // head_dim
    width = num_kv * head_dim
    code = torch.nn.functional.normalize(torch.randn(vocab, width, generator=torch.Generator().manual_seed(0)), dim=-1)
    sd["embed_tokens.weight"] = torch.cat([code, torch.ones(vocab, hidden - width)], 1)
    sd["lm_head.weight"][:, :width] = code
    for name in ("norm.weight", "layers.0.input_layernorm.weight", "layers.0.post_attention_layernorm.weight"):
        sd[name].fill_(1.0)
    u = torch.zeros(head_dim)
    u[: head_dim // 2] = 1.0
    for proj, heads in (("q", num_q), ("k", num_kv)):
        sd[attn + f"{proj}_proj.weight"][:, width:hidden] = u.repeat(heads)[:, None]
        sd[attn + f"{proj}_norm.weight"].fill_(12.0)
    sd[attn + "v_proj.weight"][:, :width] = torch.eye(width)
    group = num_q // num_kv  # q head h * group + i reads kv head h
    for h in range(num_kv):
        col = h * group * head_dim
        sd[attn + "o_proj.weight"][h * head_dim:(h + 1) * head_dim, col:col + head_dim] = torch.eye(head_dim)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()}, os.path.join(path, "model.safetensors"))
    return {"method": "eagle3", "model": path, "num_speculative_tokens": gamma}


def engine_spec_config(method: str, root: str) -> dict:
    return copy_anchor_eagle3(root) if method == "eagle3" else spec_config(method, root)


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
    eng.scheduler.verify_planner = lambda reqs, _: [rng.randint(0, len(r.draft_token_ids)) for r in reqs]
    gamma = eng.num_speculative_tokens
    ids = []
    for i, p in enumerate(prompts):
        cap = None if i % 3 == 0 else i % (gamma + 1)
        params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True,
                                speculative=SpeculativeParams(max_draft_tokens=cap))
        ids.append(eng.add_request(f"r{i}", {"prompt_token_ids": p}, params))
    done, aborted, step, acc = {}, set(), 0, OutputAccumulator()
    while eng.has_unfinished():
        for out in acc.update(eng.step()):
            done[out.request_id] = out
        step += 1
        if abort_every and step == 3:
            victims = [i for i in ids[::abort_every] if i not in done]
            for out in acc.update(eng.abort(victims)):
                done[out.request_id] = out
            aborted.update(victims)
    assert eng.stats().kv_usage == 0.0
    return done, aborted


@pytest.mark.parametrize("method", METHODS)
def test_greedy_equality_tight_cache(method, root, baseline):
    prompts, want = baseline
    llm = LLM(target_dir(root), max_model_len=192, max_num_seqs=32, max_num_batched_tokens=48, block_size=4,
              num_kv_blocks=60, speculative_config=engine_spec_config(method, root))
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
    assert 0 < total.num_accepted_tokens < total.num_verified_draft_tokens, f"{method}: {total}"


@pytest.mark.parametrize("method", METHODS)
def test_greedy_equality_batch_one(method, root, baseline):
    prompts, want = baseline
    llm = LLM(target_dir(root), max_model_len=192, max_num_seqs=1,
              speculative_config=engine_spec_config(method, root))
    done, _ = run_spec(llm, prompts[:6], seed=1)
    for i in range(6):
        assert done[f"r{i}"].outputs[0].token_ids == want[i], f"{method} request {i} differs"
    total = llm.engine.spec_stats.total
    assert 0 < total.num_accepted_tokens < total.num_verified_draft_tokens, f"{method}: {total}"


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
