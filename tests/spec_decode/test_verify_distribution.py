"""Losslessness of the verifier, statistically: what verify() emits is distributed exactly like plain
decoding, and it accepts each draft with probability sum_x min(p(x), q(x)).

A toy world: the target is a fixed Markov chain over a small vocabulary (logits table
``TARGET[prev]``; its processed distribution P[prev] is what plain decoding samples), the drafter a
*different* chain Q (zeros where P > 0, mass where P = 0) or a deterministic n-gram-like table. Each
trial decodes from a fixed anchor, one verify round at a time exactly as the engine would, until it
has ``block + 1`` tokens. Checked per scenario (``tests/stats.py``):

- no emitted token has P[prev](x) = 0 (token by token);
- every position's marginal x_k ~ (P^k)[anchor], and every conditional x_k | x_{k-1} = a ~ P[a]
  (the chain is Markov, so that is the full conditional);
- per draft position j, the drafts reaching j are accepted at the rate sum_x min(P[prev], q)(x).

``test_acceptance_rate_has_power`` sizes one batched verify() call so that a 3% relative bias of the
acceptance probability is caught with 90% power. Every verifier backend in ``VERIFIERS`` inherits all
of it. Fixed seeds: deterministic.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from sparkserve import native
from sparkserve.sample import SamplingTensors, processed_logprobs
from sparkserve.spec_decode.verify import VerifyInput, verify
from sparkserve.step import SamplingMeta
from tests.stats import (
    ALPHA,
    acceptance_pvalue,
    assert_possible,
    check_pvalues,
    detectable_relative_bias,
    detectable_w,
    gof_pvalue,
    grouped_gof_pvalues,
)


def _on_cuda(logits, inputs, backend):
    """A GPU verifier on the tests' CPU logits (the CPU generators still draw the uniforms)."""
    return verify(logits.cuda(), inputs, backend=backend)


VERIFIERS = {  # every verifier backend (native, Triton, ...) registers here
    "torch": functools.partial(verify, backend="torch"),
    "native": functools.partial(verify, backend="native"),  # csrc/sampling_verify.cpp
    "triton": functools.partial(_on_cuda, backend="triton"),  # sparkserve_triton/verify.py, GPU only (too slow
}                                                             # for these sample sizes in the interpreter)
NATIVE = {"native"}  # backends that need sparkserve.native.available()
CUDA = {"triton"}  # backends that need a CUDA GPU here
VOCAB = 8
ANCHOR = 0
NUM_TRIALS = 4000


@pytest.fixture(params=list(VERIFIERS))
def verifier(request):
    if request.param in NATIVE and not native.available():
        pytest.skip("native CPU kernels not built here")
    if request.param in CUDA and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return VERIFIERS[request.param]


def _target_logits_table() -> torch.Tensor:
    """[V, V]: row prev holds the target's logits for the next token; some tokens impossible (p = 0)."""
    g = torch.Generator().manual_seed(7)
    table = torch.randn(VOCAB, VOCAB, generator=g) * 1.2
    impossible = torch.rand(VOCAB, VOCAB, generator=g) < 0.2
    impossible[torch.arange(VOCAB), table.argmax(-1)] = False  # every row keeps its argmax
    return table.masked_fill(impossible, float("-inf"))


def _draft_table(target_logits: torch.Tensor) -> torch.Tensor:
    """[V, V] draft chain Q: zeros on some tokens the target likes, mass on tokens it forbids."""
    g = torch.Generator().manual_seed(8)
    q = torch.rand(VOCAB, VOCAB, generator=g) ** 2
    q[torch.rand(VOCAB, VOCAB, generator=g) < 0.3] = 0.0
    q[torch.arange(VOCAB), target_logits.argmax(-1)] = 0.0  # q = 0 on the target's favourite
    q = q + 0.3 * torch.isinf(target_logits)  # q > 0 where p = 0
    return q / q.sum(-1, keepdim=True)


TARGET = _target_logits_table()
DRAFT_Q = _draft_table(TARGET)
NGRAM = torch.tensor([(3 * t + 1) % VOCAB for t in range(VOCAB)])  # deterministic drafter: next = f(prev)
GREEDY_DRAFTER = DRAFT_Q.argmax(-1)  # a greedy drafter under a stochastic target: also deterministic


def _target_probs(meta: SamplingMeta) -> np.ndarray:
    """P [V, V] float64: the processed distribution plain decoding samples, per previous token."""
    params = SamplingTensors.from_metas([meta] * VOCAB)
    probs = processed_logprobs(TARGET, *params).exp().double().numpy()
    return probs / probs.sum(axis=1, keepdims=True)


def _draft_chains(anchors: torch.Tensor, max_len: int, drafter: str, gen: torch.Generator) -> torch.Tensor:
    """[N, max_len] drafts continuing each anchor: sampled from Q, or a deterministic table."""
    prev, out = anchors, []
    for _ in range(max_len):
        if drafter == "q":
            prev = torch.multinomial(DRAFT_Q[prev], 1, generator=gen).squeeze(1)
        else:
            prev = (NGRAM if drafter == "ngram" else GREEDY_DRAFTER)[prev]
        out.append(prev)
    return torch.stack(out, dim=1) if out else torch.empty(len(anchors), 0, dtype=torch.long)


def _verify_round(verifier, anchors: list[int], lengths: list[int], meta, drafter: str, gen):
    """One verify step per trial from its anchor: (outputs, prefixes [N, 1 + max_l] = [anchor, d1..])."""
    max_len = max(lengths)
    chains = _draft_chains(torch.tensor(anchors), max_len, drafter, gen)  # [N, max_l]
    prefixes = torch.cat([torch.tensor(anchors)[:, None], chains], dim=1)  # [N, 1 + max_l]
    q_rows = DRAFT_Q[prefixes[:, :max_len]] if drafter == "q" else None  # [N, max_l, V]: q_k = Q[d_{k-1}]
    chain_lists = chains.tolist()
    inputs = [VerifyInput(chain_lists[i][:n], None if q_rows is None else q_rows[i, :n], meta, gen)
              for i, n in enumerate(lengths)]
    rows = torch.cat([prefixes[i, :n + 1] for i, n in enumerate(lengths)])  # target rows: after each token
    return verifier(TARGET[rows], inputs), prefixes.tolist()


def _decode(verifier, meta, drafter: str, lengths: list[int], num_tokens: int, seed: int):
    """Every trial decodes ``num_tokens`` tokens from ANCHOR with its verify length.

    Returns (tokens [N, num_tokens], acceptance trials [M, 4] = (prev token, draft, position j >= 1,
    accepted)), one acceptance trial per draft that reached the test (d_1..d_{j-1} accepted).
    """
    gen = torch.Generator().manual_seed(seed)
    tokens = [[] for _ in lengths]
    trials = []
    active = list(range(len(lengths)))
    while active:
        anchors = [tokens[i][-1] if tokens[i] else ANCHOR for i in active]
        outs, prefixes = _verify_round(verifier, anchors, [lengths[i] for i in active], meta, drafter, gen)
        for i, out, prefix in zip(active, outs, prefixes):
            tokens[i].extend(out.token_ids)
            for j in range(1, min(lengths[i], out.num_accepted + 1) + 1):
                trials.append((prefix[j - 1], prefix[j], j, j <= out.num_accepted))
        active = [i for i in active if len(tokens[i]) < num_tokens]
    return np.array([t[:num_tokens] for t in tokens]), np.array(trials, dtype=np.int64).reshape(-1, 4)


def _acceptance_rates(probs: np.ndarray, trials: np.ndarray, drafter: str) -> np.ndarray:
    """sum_x min(P[prev], q)(x) per trial: q = Q[prev] (sampled drafts) or one-hot at the draft."""
    prev, draft = trials[:, 0], trials[:, 1]
    if drafter == "q":
        return np.minimum(probs[prev], DRAFT_Q.double().numpy()[prev]).sum(axis=1)
    return probs[prev, draft]


SCENARIOS = {
    # name: (meta, drafter, verify lengths: an int or "ragged")
    "sampled q, T=1": (SamplingMeta(), "q", 2),
    "sampled q, long block": (SamplingMeta(), "q", 4),
    "deterministic n-gram drafts": (SamplingMeta(), "ngram", 2),
    "greedy drafter, stochastic target": (SamplingMeta(temperature=0.9), "greedy", 3),
    "T=0.7 top-k 5 top-p 0.9": (SamplingMeta(temperature=0.7, top_k=5, top_p=0.9), "q", 2),
    "T=1.3 min-p 0.1, top-p 0.95": (SamplingMeta(temperature=1.3, top_p=0.95, min_p=0.1), "q", 2),
    "n-gram drafts with filters": (SamplingMeta(temperature=0.7, top_k=4, min_p=0.05), "ngram", 2),
    "ragged lengths 0..3": (SamplingMeta(top_k=6), "q", "ragged"),
}
# Power (test_stated_power): each marginal x_k is a G-test on NUM_TRIALS samples with df <= V - 1 at
# ALPHA / (number of tests in the family, <= 5 + 4 * 8); it detects Cohen's w >= 0.105 with 90% power.
# The per-prefix conditionals see NUM_TRIALS * P(x_{k-1} = a) samples each (w scales as 1/sqrt(n)).
MARGINAL_W = 0.105


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_tokens_follow_the_target_chain(verifier, name):
    meta, drafter, length = SCENARIOS[name]
    seed = sum(map(ord, name))
    if length == "ragged":
        lengths = torch.randint(0, 4, (NUM_TRIALS,), generator=torch.Generator().manual_seed(seed)).tolist()
    else:
        lengths = [length] * NUM_TRIALS
    num_tokens = max(lengths) + 1
    tokens, trials = _decode(verifier, meta, drafter, lengths, num_tokens, seed)
    probs = _target_probs(meta)  # [V, V]

    prev = np.concatenate([np.full((len(tokens), 1), ANCHOR), tokens[:, :-1]], axis=1)  # [N, K]
    assert_possible(probs[prev, tokens], name)
    pvalues, marginal = {}, np.eye(VOCAB)[ANCHOR]
    for k in range(num_tokens):
        marginal = marginal @ probs  # P(x_{k+1}) = (P^{k+1})[anchor]
        pvalues[f"x{k + 1}"] = gof_pvalue(np.bincount(tokens[:, k], minlength=VOCAB), marginal)
        if k:
            pvalues.update(grouped_gof_pvalues(tokens[:, k - 1], tokens[:, k], probs, f"x{k + 1}|x{k}"))
    check_pvalues(pvalues)

    rates = _acceptance_rates(probs, trials, drafter)
    accepted, position = trials[:, 3], trials[:, 2]
    check_pvalues({f"accept d{j}": acceptance_pvalue(accepted[position == j], rates[position == j])
                   for j in range(1, max(lengths) + 1)})


# ---- acceptance rate with power ---------------------------------------------------------------
# Every draft position sees target p and draft q below (iid rows), so each draft is accepted with
# probability sum min(p, q) = 0.85, all of it from tokens where p < q / 1.05: scaling the acceptance
# probability min(1, p/q) by 1 + eps (eps <= 5%) raises the rate by exactly eps. Token 2 (q = 0) is
# only reachable as a recovered token, token 3 (p = 0) only as a rejected draft.
ACCEPT_P = np.array([0.5, 0.35, 0.15, 0.0])
ACCEPT_Q = np.array([0.56, 0.40, 0.0, 0.04])
ACCEPT_BLOCK = 4
ACCEPT_ROWS = 2500  # -> ~8000 acceptance trials: a relative bias >= 2.4% is caught with 90% power (3%: 99.6%)
ACCEPT_DETECTS = 0.025


def test_acceptance_rate_has_power(verifier):
    """One batched verify() of ACCEPT_ROWS blocks of ACCEPT_BLOCK drafts: the acceptance rate per
    position and pooled against sum min(p, q) (a 2.5% relative bias is caught with >= 90% power, see
    test_stated_power), plus the emitted tokens per position: accepted drafts, recovered from
    max(p - q, 0), bonus from p; never token 3."""
    gen = torch.Generator().manual_seed(2025)
    q = torch.tensor(ACCEPT_Q, dtype=torch.float32)
    drafts = torch.multinomial(q.expand(ACCEPT_ROWS, -1), ACCEPT_BLOCK, replacement=True, generator=gen)  # [R, L]
    meta = SamplingMeta()
    inputs = [VerifyInput(d, q.expand(ACCEPT_BLOCK, -1), meta, gen) for d in drafts.tolist()]
    logits = torch.tensor(ACCEPT_P).log().float().expand(ACCEPT_ROWS * (ACCEPT_BLOCK + 1), -1)
    outs = verifier(logits, inputs)
    num_accepted = np.array([o.num_accepted for o in outs])  # [R]

    rate = float(np.minimum(ACCEPT_P, ACCEPT_Q).sum())
    pvalues, reached_all = {}, []
    for j in range(1, ACCEPT_BLOCK + 1):
        reached = num_accepted >= j - 1  # d_1..d_{j-1} accepted: d_j is tested
        pvalues[f"d{j}"] = acceptance_pvalue(num_accepted[reached] >= j, np.full(reached.sum(), rate))
        reached_all.append(num_accepted[reached] >= j)
    pooled = np.concatenate(reached_all)
    pvalues["pooled"] = acceptance_pvalue(pooled, np.full(len(pooled), rate))
    check_pvalues(pvalues)

    emitted = np.array([o.token_ids + [-1] * (ACCEPT_BLOCK + 1 - len(o.token_ids)) for o in outs])  # [R, L+1]
    assert not (emitted == 3).any(), "emitted token 3, which the target gives probability 0"
    check_pvalues({f"x{k + 1}": gof_pvalue(np.bincount(emitted[emitted[:, k] >= 0, k], minlength=4), ACCEPT_P)
                   for k in range(ACCEPT_BLOCK + 1)})


def test_stated_power():
    """The detectable effects named above hold at the sample sizes used."""
    num_tests = 5 + 4 * VOCAB
    assert detectable_w(VOCAB - 1, NUM_TRIALS, ALPHA / num_tests) <= MARGINAL_W
    rate = float(np.minimum(ACCEPT_P, ACCEPT_Q).sum())
    assert rate == pytest.approx(0.85)
    # the exact effect of scaling min(1, p/q) by 1.03: +3.0% relative
    scaled = float((ACCEPT_Q * np.minimum(1.0, 1.03 * np.divide(ACCEPT_P, ACCEPT_Q, out=np.zeros(4),
                                                                  where=ACCEPT_Q > 0))).sum())
    assert scaled / rate - 1.0 == pytest.approx(0.03, abs=1e-9)
    expected_trials = ACCEPT_ROWS * sum(rate ** j for j in range(ACCEPT_BLOCK))  # E[#drafts tested]
    assert detectable_relative_bias(np.full(int(expected_trials), rate), ALPHA / (ACCEPT_BLOCK + 1)) <= ACCEPT_DETECTS


def test_world_is_adversarial():
    """The draft chain really has zeros where the target has mass, and mass where it has none."""
    probs = _target_probs(SamplingMeta())
    q = DRAFT_Q.double().numpy()
    assert ((q == 0) & (probs > 0)).any(axis=1).all()
    assert ((q > 0) & (probs == 0)).any()
    assert probs[ANCHOR, int(NGRAM[ANCHOR])] < 0.5  # the n-gram's first draft is often rejected
