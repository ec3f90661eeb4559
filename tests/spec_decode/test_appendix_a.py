"""DSpark paper Appendix A as a test: a global (retrospective) search is biased, the early stop is not.

The two-token world: one request, gamma = 2, vocabulary {A, B}; target p_t = (0.7, 0.3) and draft
p_d = (0.5, 0.5) at both positions; the confidence of the first draft is 0.8 (= sum min(p_t, p_d)),
the second draft's confidence depends on the first draft token (0.9 after A, 0 after B); SPS(1) =
1.0, SPS(2) = 0.5, SPS(3) = 0.45. Every round draws the drafts, lets a planner choose the verify
length, and verifies with the real ``sparkserve.spec_decode.verify.verify``; the first emitted token must
follow p_t. Without the early stop the scheduler verifies x1 only when x1 = A, which yields
(0.85, 0.15); Algorithm 1 (``causal``) and the production ``lagged`` variant yield (0.7, 0.3).
Fixed seeds: deterministic.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from scipy.stats import chisquare

from sparkserve.spec_decode.cost_model import CostTable
from sparkserve.spec_decode.planner import Planner, plan_causal, plan_retrospective
from sparkserve.spec_decode.verify import VerifyInput, verify
from sparkserve.step import SamplingMeta

A, B = 0, 1
P_T = np.array([0.7, 0.3])
P_D = np.array([0.5, 0.5])
PAPER_SPS = {1: 1.0, 2: 0.5, 3: 0.45}
N = 12000




def confidences(x1: int) -> list[float]:
    return [0.8, 0.9 if x1 == A else 0.0]


def run_world(plan, seed: int, num_rounds: int = N) -> tuple[np.ndarray, np.ndarray]:
    """(first emitted token per round [N], verify length per round [N]); ``plan(round, drafts, conf)``."""
    rng = np.random.default_rng(seed)
    drafts = rng.choice(2, size=(num_rounds, 2), p=P_D)  # [N, 2] drawn from p_d
    lengths = np.array([plan(i, list(map(int, d)), confidences(int(d[0]))) for i, d in enumerate(drafts)])
    gen = torch.Generator().manual_seed(seed)
    meta = SamplingMeta(temperature=1.0)
    q = torch.tensor(P_D, dtype=torch.float32).expand(2, 2)  # [2, V]
    logit_row = torch.tensor(np.log(P_T), dtype=torch.float32)
    inputs = [VerifyInput([int(t) for t in d[:n]], q[:n], meta, gen) for d, n in zip(drafts, lengths)]
    logits = logit_row.expand(int(lengths.sum()) + num_rounds, 2).contiguous()  # [sum(l + 1), V]
    first = np.array([out.token_ids[0] for out in verify(logits, inputs)])
    return first, lengths


def pvalue(first: np.ndarray) -> float:
    counts = np.bincount(first, minlength=2)
    return float(chisquare(counts, P_T * len(first)).pvalue)


def test_paper_thetas():
    cost = CostTable.from_sps(PAPER_SPS)
    assert plan_retrospective([confidences(A)], [2], cost, 1) == [2]  # Theta2 = 1.134 > 1.0
    assert plan_retrospective([confidences(B)], [2], cost, 1) == [0]
    assert plan_causal([confidences(A)], [2], cost, 1) == [0]  # Theta1 = 0.9 < 1.0: stop
    assert plan_causal([confidences(B)], [2], cost, 1) == [0]


def test_retrospective_search_is_biased():
    cost = CostTable.from_sps(PAPER_SPS)
    first, lengths = run_world(lambda i, d, c: plan_retrospective([c], [2], cost, 1)[0], seed=1)
    assert set(lengths.tolist()) == {0, 2}
    assert abs(np.mean(first == A) - 0.85) < 0.015
    assert pvalue(first) < 1e-6


def test_causal_is_lossless():
    cost = CostTable.from_sps(PAPER_SPS)
    first, _ = run_world(lambda i, d, c: plan_causal([c], [2], cost, 1)[0], seed=2)
    assert pvalue(first) > 1e-3


def test_causal_is_lossless_when_it_admits():
    """SPS(2) = 0.6 makes Theta1 = 1.08 > 1: x1 is always admitted, x2 only after A (a2 > 0)."""
    cost = CostTable.from_sps({1: 1.0, 2: 0.6, 3: 0.45})
    first, lengths = run_world(lambda i, d, c: plan_causal([c], [2], cost, 1)[0], seed=3)
    assert set(lengths.tolist()) == {1, 2}
    assert pvalue(first) > 1e-3


def test_lagged_is_lossless():
    """K comes from the confidences two calls back (a past x1), so it is 2 or 0 at random but never
    because of the current x1: the first token still follows p_t, and half the rounds verify drafts."""
    planner = Planner("lagged", cost_table=CostTable.from_sps(PAPER_SPS), lag=2)

    def plan(i, drafts, conf):
        return planner([SimpleNamespace(request_id="r", draft_token_ids=drafts, draft_confidences=conf)], 0)[0]

    first, lengths = run_world(plan, seed=4)
    assert planner.fallback_reason["lagged_warmup"] == 2
    assert 0.4 < np.mean(lengths > 0) < 0.6
    assert pvalue(first) > 1e-3
