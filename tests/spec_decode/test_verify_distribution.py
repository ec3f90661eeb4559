"""Losslessness, statistically: what verify() emits is distributed exactly like plain decoding.

A toy two-step world: the target is a fixed Markov chain over a small vocabulary (logits table
``target_logits[prev]``; its processed distribution P[prev] is what plain decoding samples), and the
drafter is a *different* chain Q (with zeros where P > 0, and mass where P = 0) or a deterministic
n-gram-like table. Each trial decodes from a fixed anchor until it has two tokens: one verify round
with l drafts, and, when only one token came out, a second round from the new anchor, exactly as the
engine would. The first token must follow P[anchor] and the pair (x1, x2) the chain's joint
P[anchor](x1) * P[x1](x2); the rate of accepting d1 must be sum(min(P, Q)).

Fixed seeds make every test deterministic; a correct verifier passes p > 1e-3 for almost every seed,
so a failure means a wrong distribution, not bad luck.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from sparkserve.sample import SamplingTensors, processed_logprobs
from sparkserve.spec_decode.verify import VerifyInput, verify
from sparkserve.step import SamplingMeta

VOCAB = 8
ANCHOR = 0
NUM_TRIALS = 6000
P_MIN = 1e-3




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
    return probs / probs.sum(axis=1, keepdims=True)  # exact sums for the chi-square


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


def _verify_round(anchors: torch.Tensor, lengths: list[int], meta, drafter: str, gen) -> list[list[int]]:
    """One verify step per trial from its anchor; returns the emitted tokens of each trial."""
    chains = _draft_chains(anchors, max(lengths), drafter, gen)  # [N, max_l]
    prefixes = torch.cat([anchors[:, None], chains], dim=1)  # [N, 1 + max_l]: [anchor, d1..]
    inputs, row_tokens = [], []
    for i, n in enumerate(lengths):
        drafts = chains[i, :n].tolist()
        q = DRAFT_Q[prefixes[i, :n]] if drafter == "q" else None  # [n, V]: q_k = Q[d_{k-1}]
        inputs.append(VerifyInput(drafts, q, meta, gen))
        row_tokens.append(prefixes[i, :n + 1])  # target rows score the token after each of these
    logits = TARGET[torch.cat(row_tokens)]  # [sum(l + 1), V]
    return [out.token_ids for out in verify(logits, inputs)]


def _first_two_tokens(meta, drafter: str, lengths: list[int], seed: int):
    gen = torch.Generator().manual_seed(seed)
    anchors = torch.full((len(lengths),), ANCHOR, dtype=torch.long)
    first = _verify_round(anchors, lengths, meta, drafter, gen)
    pairs = [toks[:2] for toks in first]
    again = [i for i, toks in enumerate(first) if len(toks) == 1]
    if again:
        second = _verify_round(torch.tensor([first[i][0] for i in again]), [lengths[i] for i in again],
                               meta, drafter, gen)
        for i, toks in zip(again, second):
            pairs[i].append(toks[0])
    return np.array(pairs), first


def _chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    """Goodness of fit; cells expecting < 5 are merged; a count where p = 0 fails outright."""
    counts, probs = counts.ravel().astype(np.float64), probs.ravel()
    assert counts[probs == 0].sum() == 0, "emitted a token the target gives probability 0"
    expected = probs * counts.sum()
    big = expected >= 5
    obs, exp = list(counts[big]), list(expected[big])
    if (~big).any() and expected[~big].sum() > 0:
        obs.append(counts[~big].sum())
        exp.append(expected[~big].sum())
    return float(stats.chisquare(obs, exp).pvalue) if len(obs) >= 2 else 1.0


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


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_first_two_tokens_follow_the_target_chain(name):
    meta, drafter, length = SCENARIOS[name]
    seed = sum(map(ord, name))
    if length == "ragged":
        lengths = torch.randint(0, 4, (NUM_TRIALS,), generator=torch.Generator().manual_seed(seed)).tolist()
    else:
        lengths = [length] * NUM_TRIALS
    pairs, first_round = _first_two_tokens(meta, drafter, lengths, seed)
    probs = _target_probs(meta)  # [V, V]

    first_counts = np.bincount(pairs[:, 0], minlength=VOCAB)
    p_first = _chi_square(first_counts, probs[ANCHOR])
    assert p_first > P_MIN, (name, p_first, first_counts, np.round(probs[ANCHOR] * NUM_TRIALS, 1))

    joint_counts = np.zeros((VOCAB, VOCAB))
    np.add.at(joint_counts, (pairs[:, 0], pairs[:, 1]), 1)
    joint = probs[ANCHOR][:, None] * probs  # P(x1) * P(x2 | x1)
    p_joint = _chi_square(joint_counts, joint)
    assert p_joint > P_MIN, (name, p_joint)

    # acceptance of d1 (first round, trials with l >= 1): P = sum_x min(p(x), q(x))
    with_draft = [i for i, n in enumerate(lengths) if n >= 1]
    if drafter == "q":
        q_first = DRAFT_Q[ANCHOR].double().numpy()
    else:
        q_first = np.eye(VOCAB)[int((NGRAM if drafter == "ngram" else GREEDY_DRAFTER)[ANCHOR])]
    rate = float(np.minimum(probs[ANCHOR], q_first).sum())
    num_accepted = sum(len(first_round[i]) >= 2 for i in with_draft)
    if 0.0 < rate < 1.0:
        p_rate = stats.binomtest(num_accepted, len(with_draft), rate).pvalue
        assert p_rate > P_MIN, (name, num_accepted / len(with_draft), rate)
    else:
        assert num_accepted == round(rate * len(with_draft))


def test_world_is_adversarial():
    """The draft chain really has zeros where the target has mass, and mass where it has none."""
    probs = _target_probs(SamplingMeta())
    q = DRAFT_Q.double().numpy()
    assert ((q == 0) & (probs > 0)).any(axis=1).all()
    assert ((q > 0) & (probs == 0)).any()
    assert probs[ANCHOR, int(NGRAM[ANCHOR])] < 0.5  # the n-gram's first draft is often rejected
