"""End-to-end losslessness: ``LLM.generate`` with each drafter backend emits tokens distributed exactly
as plain sampling from the target's processed distribution; each drafter draws its drafts from the q
it reports; the verifier accepts each draft with probability sum_x min(p, q)(x) for that q.

The world: an 8-token-vocabulary 4-layer target and randomly initialised drafters (far from the
target: a draft is accepted with probability ~0.65). N requests of one prompt, each with its own
seed, generate ``NUM_TOKENS + 1`` tokens: x1 from the prefill (plain sampling), the rest from verify
steps whose lengths a seeded planner picks at random, independently of the drafts (lossless for any
such choice); per-request draft caps 0..3 make the batches ragged. ``record_verify`` wraps the
runner's verify() call, so the test sees the target logits and the drafter's q of every draft.

Checks (``tests/stats.py``); each family is Bonferroni-combined at ALPHA; the effects they detect
with 90% power at these sample sizes are asserted in ``test_stated_power``:
- no emitted token has probability 0 under its exact conditional (computed from the target itself);
- x2 | x1 per value of x1 (G-tests), and x2, x3, x4 | prefix pooled over prefixes (df = 7 each):
  Cohen's w >= 0.14 at N = 2000;
- every verified draft is distributed as the q its drafter reported (ranks of the drafts under
  their own q, pooled; df = 7 over >= 3000 drafts: w >= 0.12): a drafter that reports softmax(z) but
  draws from softmax(z / T) fails this at p < 1e-18 (T = 0.7);
- acceptance per draft position and pooled against sum min(p, q) for the reported q: a relative
  shift of the acceptance rate of 6.5% is detected (>= 3500 trials).
"""
from __future__ import annotations

import itertools
import os
import random
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from sparkserve import LLM, SamplingParams
from sparkserve.models.loader import load_model
from sparkserve.sample import SamplingTensors, processed_logprobs
from sparkserve.step import SamplingMeta
from tests.models.hf_fixtures import make_hf_model
from tests.stats import (
    ALPHA,
    acceptance_pvalue,
    assert_possible,
    check_pvalues,
    detectable_relative_bias,
    detectable_w,
    grouped_gof_pvalues,
    pooled_conditional_pvalue,
)

DRAFT_METHODS = ("dspark", "dspark-native-markov", "dflash", "eagle3")  # every drafter backend registers here
MARKOV_BACKENDS = {"dspark": "torch", "dspark-native-markov": "native"}  # DSparkProposer.markov_backend
VOCAB, PROMPT, N, NUM_TOKENS, GAMMA = 8, [3, 1, 4, 1, 5], 2000, 4, 3
MIN_DRAFTS, MIN_ACCEPT_TRIALS = 3000, 3500  # what every run here records at least (asserted)
SETTINGS = {"t1": {"temperature": 1.0}, "t07_p09": {"temperature": 0.7, "top_p": 0.9}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("dist"))
    target = make_hf_model(os.path.join(root, "target"), "qwen3", tied=False, seed=21, vocab=VOCAB, layers=4,
                           with_tokenizer=False)
    return root, target


def drafter_dir(world, method: str) -> str:
    from sparkserve.tools.init_drafter import init_drafter

    root, target = world
    path = os.path.join(root, f"drafter-{method}")
    if not os.path.exists(path):
        init_drafter(method, target, path, num_speculative_tokens=GAMMA, seed=5, init_std=0.3)
    return path


def exact_conditionals(target: str, sampling: dict) -> list[np.ndarray]:
    """[P(x1) [V], P(x2 | x1) [V, V], P(x3 | x1, x2) [V, V, V], ...] after PROMPT, float64, from the
    target's own logits and the processed distribution of ``sampling``."""
    model, _ = load_model(target, "float32")
    meta = SamplingMeta(**sampling)
    prefixes = list(itertools.product(range(VOCAB), repeat=NUM_TOKENS - 1))
    with torch.no_grad():
        logits = model.forward_train(torch.tensor([PROMPT + list(p) for p in prefixes]))  # [V^(K-1), S, V]
    rows = logits[:, len(PROMPT) - 1:].reshape(-1, VOCAB)  # [V^(K-1) * K, V]
    lp = processed_logprobs(rows, *SamplingTensors.from_metas([meta] * rows.shape[0]))
    probs = lp.exp().double().view(*(VOCAB,) * (NUM_TOKENS - 1), NUM_TOKENS, VOCAB).numpy()
    out = []
    for k in range(NUM_TOKENS):  # x_{k+1} depends on the first k tokens only: index the rest at 0
        cond = probs[(slice(None),) * k + (0,) * (NUM_TOKENS - 1 - k) + (k,)]
        out.append(cond / cond.sum(axis=-1, keepdims=True))
    return out


@dataclass
class VerifyRecord:
    """Per tested draft: its position j >= 1, sum min(p, q) for the q the drafter reported, accepted."""

    positions: list[int] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    accepted: list[bool] = field(default_factory=list)
    draft_ranks: list[int] = field(default_factory=list)  # rank of each verified draft under its own q
    sorted_q: list[list[float]] = field(default_factory=list)  # that q, sorted descending

    def wrap(self, verify):
        def recording_verify(logits, inputs):
            outs = verify(logits, inputs)
            lengths = [inp.num_draft_tokens for inp in inputs]
            params = SamplingTensors.from_metas([inp.sampling for inp in inputs], device=logits.device,
                                                repeats=[n + 1 for n in lengths])
            probs = processed_logprobs(logits, *params).exp().double()  # [sum(l + 1), V]
            start = 0
            for inp, out, n in zip(inputs, outs, lengths):
                if n and inp.draft_probs is not None:
                    q = inp.draft_probs.double().cpu()  # [n, V]
                    rates = torch.minimum(probs[start:start + n].cpu(), q).sum(-1).tolist()
                    order = torch.argsort(q, dim=-1, descending=True, stable=True)  # [n, V]
                    ranks = (order == torch.tensor(inp.draft_token_ids)[:, None]).int().argmax(-1)
                    self.draft_ranks.extend(ranks.tolist())
                    self.sorted_q.extend(q.gather(1, order).tolist())
                    for j in range(1, min(n, out.num_accepted + 1) + 1):
                        self.positions.append(j)
                        self.rates.append(rates[j - 1])
                        self.accepted.append(j <= out.num_accepted)
                start += n + 1
            return outs
        return recording_verify

    def pvalues(self) -> dict[str, float]:
        pos, rates, acc = np.array(self.positions), np.array(self.rates), np.array(self.accepted)
        out = {f"accept d{j}": acceptance_pvalue(acc[pos == j], rates[pos == j]) for j in np.unique(pos)}
        out["accept pooled"] = acceptance_pvalue(acc, rates)
        out["drafts ~ q"] = pooled_conditional_pvalue(np.array(self.draft_ranks), np.array(self.sorted_q))
        return out


def record_verify(monkeypatch) -> VerifyRecord:
    """Record every verify() the runner makes from now on."""
    from sparkserve.runner import spec_step

    record = VerifyRecord()
    monkeypatch.setattr(spec_step, "verify", record.wrap(spec_step.verify))
    return record


def distribution_pvalues(samples: np.ndarray, conditionals: list[np.ndarray]) -> dict[str, float]:
    """samples [N, K] against the exact conditionals; asserts no impossible token first."""
    n = len(samples)
    per_token = [np.broadcast_to(conditionals[k][tuple(samples[:, :k].T)], (n, VOCAB))
                 for k in range(samples.shape[1])]  # [N, V] each: p(. | x_1..x_k) of every sample
    for k, probs in enumerate(per_token):
        assert_possible(probs[np.arange(n), samples[:, k]], f"x{k + 1}")
    out = grouped_gof_pvalues(samples[:, 0], samples[:, 1], conditionals[1], "x2|x1")
    for k in range(1, samples.shape[1]):
        out[f"x{k + 1}|prefix pooled"] = pooled_conditional_pvalue(samples[:, k], per_token[k])
    return out


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("method", DRAFT_METHODS)
def test_tokens_follow_target(world, method, setting, monkeypatch):
    _, target = world
    if method in MARKOV_BACKENDS:  # the Markov loop in torch, or natively (csrc/markov.cpp)
        from sparkserve import native
        from sparkserve.spec_decode.drafters.dspark import DSparkProposer

        if MARKOV_BACKENDS[method] == "native" and not native.available():
            pytest.skip("native CPU kernels not built here")
        monkeypatch.setattr(DSparkProposer, "markov_backend", MARKOV_BACKENDS[method])
        method = "dspark"
    llm = LLM(target, max_model_len=64, max_num_seqs=256, max_num_batched_tokens=4096,
              speculative_config={"method": method, "model": drafter_dir(world, method),
                                  "num_speculative_tokens": GAMMA})
    rng = random.Random(0)
    llm.engine.scheduler.verify_planner = lambda reqs, _: [rng.randint(1, len(r.draft_token_ids)) for r in reqs]
    record = record_verify(monkeypatch)
    params = [SamplingParams(max_tokens=NUM_TOKENS + 1, ignore_eos=True, seed=1000 + i, **SETTINGS[setting],
                             speculative={"max_draft_tokens": (3, 3, 2, 1, 0)[i % 5]}) for i in range(N)]
    outs = llm.generate([{"prompt_token_ids": PROMPT}] * N, params)
    samples = np.array([o.outputs[0].token_ids[:NUM_TOKENS] for o in outs])  # [N, K]; the last token gives room
    stats = llm.engine.spec_stats.total
    assert stats.num_verified_draft_tokens > N and len(stats.accepted_per_pos) == GAMMA
    assert 0 < stats.num_accepted_tokens < stats.num_verified_draft_tokens  # both paths exercised
    assert len(record.draft_ranks) == stats.num_verified_draft_tokens  # the recorder saw every verify call
    assert len(record.draft_ranks) >= MIN_DRAFTS and len(record.rates) >= MIN_ACCEPT_TRIALS
    check_pvalues(distribution_pvalues(samples, exact_conditionals(target, SETTINGS[setting])))
    check_pvalues(record.pvalues())


def test_stated_power():
    """The effects the module docstring names, at ALPHA over each family's size."""
    assert detectable_w(VOCAB - 1, N, ALPHA / (VOCAB + NUM_TOKENS - 1)) <= 0.14  # x2 | x1 groups + pooled
    num_accept_tests = GAMMA + 2  # per position, pooled, drafts ~ q
    assert detectable_w(VOCAB - 1, MIN_DRAFTS, ALPHA / num_accept_tests) <= 0.12
    assert detectable_relative_bias(np.full(MIN_ACCEPT_TRIALS, 0.65), ALPHA / num_accept_tests) <= 0.065
