"""Sampled output with speculation follows the target's distribution exactly: chi-square of the
joint distribution of the first three generated tokens against the exact target joint, on an
8-token-vocabulary model, for DSpark, DFlash and Eagle3 with varying verify lengths."""
import itertools
import os
import random

import pytest
import torch
from scipy.stats import chisquare

from sparkserve import LLM, SamplingParams
from sparkserve.models.loader import load_model
from sparkserve.sample import SamplingTensors, processed_logprobs
from sparkserve.step import SamplingMeta
from tests.models.hf_fixtures import make_hf_model

VOCAB, PROMPT, N = 8, [3, 1, 4, 1, 5], 2000
SETTINGS = {"t1": dict(temperature=1.0), "t07_p09": dict(temperature=0.7, top_p=0.9)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("dist"))
    target = make_hf_model(os.path.join(root, "target"), "qwen3", tied=False, seed=21, vocab=VOCAB, layers=4,
                           with_tokenizer=False)
    return root, target


def exact_joint(target: str, sampling: dict) -> dict[tuple, float]:
    """P(x1, x2, x3 | PROMPT) under the processed distribution, from the target's own logits."""
    model, _ = load_model(target, "float32")
    meta = SamplingMeta(temperature=sampling["temperature"], top_p=sampling.get("top_p", 1.0))
    seqs = [PROMPT + [a, b] for a, b in itertools.product(range(VOCAB), repeat=2)]
    with torch.no_grad():
        logits = model.forward_train(torch.tensor(seqs))  # [64, S, V]
    rows = torch.stack([logits[:, len(PROMPT) - 1 + k] for k in range(3)], dim=1).reshape(-1, VOCAB)
    lp = processed_logprobs(rows, *SamplingTensors.from_metas([meta] * rows.shape[0])).view(len(seqs), 3, VOCAB)
    probs = lp.exp()
    joint = {}
    for i, (a, b) in enumerate(itertools.product(range(VOCAB), repeat=2)):
        for c in range(VOCAB):
            joint[(a, b, c)] = float(probs[0, 0, a] * probs[i, 1, b] * probs[i, 2, c])
    return joint


def chi2_pvalue(samples: list[tuple], joint: dict[tuple, float]) -> float:
    n = len(samples)
    counts = {}
    for s in samples:
        counts[s] = counts.get(s, 0) + 1
    obs, exp, rest_o, rest_e = [], [], 0, 0.0
    for cell, p in joint.items():
        if p * n >= 5:
            obs.append(counts.get(cell, 0))
            exp.append(p * n)
        else:
            rest_o += counts.get(cell, 0)
            rest_e += p * n
    obs.append(rest_o)
    exp.append(rest_e)
    scale = sum(obs) / sum(exp)
    return float(chisquare(obs, [e * scale for e in exp]).pvalue)


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("method", ["dspark", "dflash", "eagle3"])
def test_first_three_tokens_follow_target(world, method, setting):
    from sparkserve.tools.init_drafter import init_drafter

    root, target = world
    drafter = os.path.join(root, f"drafter-{method}")
    if not os.path.exists(drafter):
        init_drafter(method, target, drafter, num_speculative_tokens=3, seed=5, init_std=0.3)
    llm = LLM(target, max_model_len=64, max_num_seqs=256, max_num_batched_tokens=4096,
              speculative_config={"method": method, "model": drafter, "num_speculative_tokens": 3})
    rng = random.Random(0)
    llm.engine.scheduler.verify_planner = lambda reqs, _: [rng.randint(0, len(r.draft_token_ids)) for r in reqs]
    params = [SamplingParams(max_tokens=5, ignore_eos=True, seed=1000 + i, **SETTINGS[setting],
                             speculative={"max_draft_tokens": i % 4}) for i in range(N)]
    outs = llm.generate([{"prompt_token_ids": PROMPT}] * N, params)
    samples = [tuple(o.outputs[0].token_ids[:3]) for o in outs]  # later tokens only give drafts room
    stats = llm.engine.spec_stats.total
    assert stats.num_verified_draft_tokens > N and len(stats.accepted_per_pos) == 3
    assert 0 < stats.num_accepted_tokens < stats.num_verified_draft_tokens  # both paths exercised
    assert chi2_pvalue(samples, exact_joint(target, SETTINGS[setting])) > 1e-3
