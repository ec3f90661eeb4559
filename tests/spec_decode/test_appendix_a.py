"""DSpark paper Appendix A as a test: a global (retrospective) search is biased, the early stop is not.

The two-token world: one request, gamma = 2, vocabulary {A, B}; target p_t = (0.7, 0.3) and draft
p_d = (0.5, 0.5) at both positions; the confidence of the first draft is 0.8 (= sum min(p_t, p_d)),
the second draft's confidence depends on the first draft token (0.9 after A, 0 after B); SPS(1) =
1.0, SPS(2) = 0.5, SPS(3) = 0.45. Every round draws the drafts, lets a planner choose the verify
length, and verifies with the real ``sparkserve.spec_decode.verify.verify``; the first emitted token must
follow p_t. Without the early stop the scheduler verifies x1 only when x1 = A, which yields
(0.85, 0.15); Algorithm 1 (``causal``) and the production ``lagged`` variant yield (0.7, 0.3).

On the paper's table Algorithm 1 never verifies a draft (Theta1 < Theta0). ``THREE_DRAFTS`` is a
world where it verifies 1, 2 or 3 and stops early at a cliff that the global search climbs over:
there both the first and the second emitted token are checked. Fixed seeds: deterministic.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from sparkserve.spec_decode.cost_model import CostTable
from sparkserve.spec_decode.planner import Planner, plan_causal, plan_retrospective
from sparkserve.spec_decode.verify import VerifyInput, verify
from sparkserve.step import SamplingMeta
from tests.stats import gof_pvalue

A, B = 0, 1
P_T = np.array([0.7, 0.3])
P_D = np.array([0.5, 0.5])
PAPER_SPS = {1: 1.0, 2: 0.5, 3: 0.45}
N = 12000




def confidences(drafts: list[int]) -> list[float]:
    """The paper's: c1 = 0.8, c2 = 0.9 after A else 0."""
    return [0.8, 0.9 if drafts[0] == A else 0.0]


# Three drafts, c_j reads d_{j-1}: c = (0.9, 0.95 after A else 0.5, 0.95 after A else 0.05) on SPS
# (1, 0.6, 0.45, 0.44). Algorithm 1 verifies 2 or 3 drafts after d1 = A (3 iff d2 = A) and exactly 1
# after d1 = B (Theta2 < Theta1: the early stop). The global search also verifies 3 after d1 = B when
# d2 = A (c3 lifts Theta3 over Theta1): d2 is verified because of its own value, and the second
# emitted token (rounds that accepted d1) is A with probability 0.756 instead of 0.7.
THREE_DRAFT_SPS = {1: 1.0, 2: 0.6, 3: 0.45, 4: 0.44}


def three_draft_confidences(drafts: list[int]) -> list[float]:
    return [0.9, 0.95 if drafts[0] == A else 0.5, 0.95 if drafts[1] == A else 0.05]


def run_world(plan, seed: int, num_rounds: int = N, num_drafts: int = 2, conf=confidences):
    """(emitted tokens per round [N] lists, verify length per round [N]); ``plan(round, drafts, conf)``."""
    rng = np.random.default_rng(seed)
    drafts = rng.choice(2, size=(num_rounds, num_drafts), p=P_D).tolist()  # [N, num_drafts] drawn from p_d
    lengths = np.array([plan(i, d, conf(d)) for i, d in enumerate(drafts)])
    gen = torch.Generator().manual_seed(seed)
    meta = SamplingMeta(temperature=1.0)
    q = torch.tensor(P_D, dtype=torch.float32).expand(num_drafts, 2)  # [num_drafts, V]
    logit_row = torch.tensor(np.log(P_T), dtype=torch.float32)
    inputs = [VerifyInput(d[:n], q[:n], meta, gen) for d, n in zip(drafts, lengths)]
    logits = logit_row.expand(int(lengths.sum()) + num_rounds, 2).contiguous()  # [sum(l + 1), V]
    return [out.token_ids for out in verify(logits, inputs)], lengths


def pvalue(tokens) -> float:
    return gof_pvalue(np.bincount(np.asarray(tokens), minlength=2), P_T)


def first_and_second(emitted: list[list[int]]) -> tuple[list[int], list[int]]:
    """The first emitted token of every round; the second of rounds that accepted d1."""
    return [t[0] for t in emitted], [t[1] for t in emitted if len(t) >= 2]


def test_paper_thetas():
    cost = CostTable.from_sps(PAPER_SPS)
    assert plan_retrospective([confidences([A, A])], [2], cost, 1) == [2]  # Theta2 = 1.134 > 1.0
    assert plan_retrospective([confidences([B, A])], [2], cost, 1) == [0]
    assert plan_causal([confidences([A, A])], [2], cost, 1) == [0]  # Theta1 = 0.9 < 1.0: stop
    assert plan_causal([confidences([B, A])], [2], cost, 1) == [0]


def test_retrospective_search_is_biased():
    cost = CostTable.from_sps(PAPER_SPS)
    emitted, lengths = run_world(lambda i, d, c: plan_retrospective([c], [2], cost, 1)[0], seed=1)
    first, _ = first_and_second(emitted)
    assert set(lengths.tolist()) == {0, 2}
    assert abs(np.mean(np.array(first) == A) - 0.85) < 0.015
    assert pvalue(first) < 1e-6


THREE_DRAFT_ROUNDS = 6000  # ~4800 second tokens: a shift of P(A) by 0.03 is detected with 90% power


def three_draft_world(plan, seed: int):
    """(first, second) emitted tokens of the 3-draft world planned one request at a time by ``plan``
    (``plan_causal`` or ``plan_retrospective``); asserts every verify length 1..3 was chosen."""
    cost = CostTable.from_sps(THREE_DRAFT_SPS)
    emitted, lengths = run_world(lambda i, d, c: plan([c], [3], cost, 1)[0], seed=seed,
                                 num_rounds=THREE_DRAFT_ROUNDS, num_drafts=3, conf=three_draft_confidences)
    assert set(lengths.tolist()) == {1, 2, 3}
    return first_and_second(emitted)


def test_causal_is_lossless():
    """Algorithm 1 verifying 1, 2 and 3 drafts: the first and second emitted tokens follow p_t."""
    first, second = three_draft_world(plan_causal, seed=2)
    assert pvalue(first) > 1e-3 and pvalue(second) > 1e-3


def test_retrospective_search_is_biased_after_an_admitted_draft():
    """The same world without the early stop: the second token is biased (the world has power)."""
    first, second = three_draft_world(plan_retrospective, seed=5)
    assert pvalue(first) > 1e-3
    assert abs(np.mean(np.array(second) == A) - 0.756) < 0.03 and pvalue(second) < 1e-6


def test_causal_is_lossless_when_it_admits():
    """SPS(2) = 0.6 makes Theta1 = 1.08 > 1: x1 is always admitted, x2 only after A (a2 > 0)."""
    cost = CostTable.from_sps({1: 1.0, 2: 0.6, 3: 0.45})
    emitted, lengths = run_world(lambda i, d, c: plan_causal([c], [2], cost, 1)[0], seed=3)
    assert set(lengths.tolist()) == {1, 2}
    first, second = first_and_second(emitted)
    assert pvalue(first) > 1e-3 and pvalue(second) > 1e-3


def test_lagged_is_lossless():
    """K comes from the confidences two calls back (a past x1), so it is 2 or 0 at random but never
    because of the current x1: the first token still follows p_t, and half the rounds verify drafts."""
    planner = Planner("lagged", cost_table=CostTable.from_sps(PAPER_SPS), lag=2)

    def plan(i, drafts, conf):
        return planner([SimpleNamespace(request_id="r", draft_token_ids=drafts, draft_confidences=conf)], 0)[0]

    emitted, lengths = run_world(plan, seed=4)
    first, _ = first_and_second(emitted)
    assert planner.fallback_reason["lagged_warmup"] == 2
    assert 0.4 < np.mean(lengths > 0) < 0.6
    assert pvalue(first) > 1e-3
