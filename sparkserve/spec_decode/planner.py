"""Verify-length planners: how many of each request's pending drafts the target checks this step.

Every planner is a pure function of plain data: per-request confidences ``c_{r,1..}`` (the drafter's
P(d_j accepted | d_1..d_{j-1} accepted)), per-request draft counts, a cost model (``sps(B, R)``, see
``cost_model.py``; R, the requests that draft after the step, is fixed while B varies), and the
step's non-draft token count B0 (anchors + prefill chunk tokens). It
returns verify lengths l_r in [0, draft_lengths[r]]; the target then verifies ``[anchor, d_1..d_l]``.

- ``plan_fixed``: l_r = all drafts (or min(k, drafts)).
- ``plan_threshold``: l_r = index of the first c_{r,j} < threshold (DeepSpec's prefix rule).
- ``plan_causal``: DSpark Algorithm 1 (paper §3.2.2). Survival a_{r,j} = prod_{i<=j} c_{r,i}; all
  (r, j) with a > 0 sorted by a descending (ties: lower j, then lower r, so (r, j-1) always comes
  before (r, j): the admitted set is a prefix per request); admit greedily tracking
  B = B0 + #admitted and tau = tau0 + sum of admitted a; stop at the **first** candidate that does not
  increase Theta = tau * SPS(B, R).
- ``plan_lagged``: the paper's production variant (§5.2): the number K of draft tokens to verify
  comes from a *global* search (no early stop) along the sorted path of *stale* confidences (those of
  an earlier step), then the top-K candidates by *current* survival are admitted.
- ``plan_retrospective``: the global search on the *current* confidences. NOT lossless (Appendix A);
  kept as the counterexample for tests and benchmarks, never offered to the engine.

Why causal and lagged are lossless. Speculative sampling stays exact for any verify length chosen
by a rule that decides "verify d_j?" without looking at d_j or anything drawn after it (a stopping
rule; Leviathan et al. 2023, Chen et al. 2023). Only c_{r,j+1} and later depend on d_{r,j} (the
confidence head reads the previous draft token). In the sorted order a candidate (r, j) is preceded
only by candidates with larger survival, which never include (r, j+1), (r, j+2), ...; so "(r, j) is
admitted" depends on a_{r,<=j} (i.e. on d_{r,<j}), on other requests' values and on the past:
- causal: the walk reaches (r, j) and improves Theta at every candidate up to it, a function of the
  candidates ranked before (r, j) and of (r, j) itself. The search without the early stop instead
  lets a_{r,j+1} (a function of d_{r,j}) decide whether d_{r,j} is verified: selection bias, e.g.
  (0.85, 0.15) instead of (0.7, 0.3) in the paper's Appendix A.
- lagged: K is a function of the stale confidences (drafted and verified before the current block
  was drawn) and of B0, none of which depends on the current drafts; given K, (r, j) is admitted iff
  fewer than K candidates rank before it, again a function of candidates with larger survival only.
Each request's output is therefore distributed exactly as plain decoding from the target. (Like
Algorithm 1, admission couples requests of one batch; the guarantee is per request.)

Objective. tau0 defaults to B0: each anchor emits one token and each prefill token is one unit of
useful work, so a draft only gets in when its expected yield beats the step's average yield per
unit of time (the paper's batches hold decoding requests only, where B0 = tau0 = R).

``Planner`` wraps these for the scheduler's ``verify_planner`` hook (``scheduler/drafts.py``'s
``VerifyPlanner`` protocol; see its docstring).
"""
from __future__ import annotations

import logging
from collections import Counter, deque
from typing import Sequence

from sparkserve.spec_decode.cost_model import StepRate

log = logging.getLogger("sparkserve.spec_decode.planner")

MODES = ("fixed", "threshold", "causal", "lagged")

Confidences = Sequence[Sequence[float]]  # [num_requests][<= num_drafts]


def survival(confidences: Sequence[float]) -> list[float]:
    """a_j = prod_{i<=j} c_i, with c clamped to [0, 1] (NaN -> 0): non-increasing in j."""
    out, a = [], 1.0
    for c in confidences:
        c = float(c)
        c = 0.0 if not c > 0.0 else min(c, 1.0)
        a *= c
        out.append(a)
    return out


def sorted_candidates(confidences: Confidences, draft_lengths: Sequence[int]) -> list[tuple[float, int, int]]:
    """All (a_{r,j}, j, r) with a > 0, j = 1..min(draft_lengths[r], len(confidences[r])), sorted by
    a descending, then j ascending, then r ascending (a prefix order within each request)."""
    keys = []  # (-a, j, r): tuple order is the wanted order
    for r, (conf, n) in enumerate(zip(confidences, draft_lengths)):
        for j, a in enumerate(survival(list(conf)[: max(int(n), 0)]), start=1):
            if a <= 0.0:
                break  # a is non-increasing: the rest are 0 too
            keys.append((-a, j, r))
    keys.sort()
    return [(-neg_a, j, r) for neg_a, j, r in keys]


def plan_fixed(draft_lengths: Sequence[int], k: int | None = None) -> list[int]:
    """Every draft (``k`` None) or the first ``k`` of each block."""
    return [max(int(n), 0) if k is None else max(min(int(n), k), 0) for n in draft_lengths]


def plan_threshold(confidences: Confidences, draft_lengths: Sequence[int], threshold: float) -> list[int]:
    """l_r = number of leading drafts with c >= threshold (all when threshold <= 0; positions without a
    confidence end the prefix)."""
    out = []
    for conf, n in zip(confidences, draft_lengths):
        n = max(int(n), 0)
        if threshold <= 0.0:
            out.append(n)
            continue
        length = 0
        for c in list(conf)[:n]:
            if not float(c) >= threshold:
                break
            length += 1
        out.append(length)
    return out


def plan_causal(confidences: Confidences, draft_lengths: Sequence[int], cost: StepRate,
                num_non_draft_tokens: int, *, base_value: float | None = None,
                max_num_tokens: int | None = None, num_drafting: int = 0) -> list[int]:
    """DSpark Algorithm 1 with its early stop (module docstring). ``base_value`` is tau0 (default B0);
    ``max_num_tokens`` caps B (the step's token budget); ``num_drafting`` is R for the cost model."""
    lengths = [0] * len(draft_lengths)
    if num_non_draft_tokens < 1:
        return lengths
    num_tokens = num_non_draft_tokens
    tau = float(num_non_draft_tokens if base_value is None else base_value)
    best = tau * cost.sps(num_tokens, num_drafting)
    for a, j, r in sorted_candidates(confidences, draft_lengths):
        if max_num_tokens is not None and num_tokens + 1 > max_num_tokens:
            break
        assert lengths[r] == j - 1, "sorted order must respect prefixes"
        num_tokens += 1
        tau += a
        theta = tau * cost.sps(num_tokens, num_drafting)
        if not theta > best:
            break  # the early stop: never look at candidates whose value depends on unverified drafts
        best = theta
        lengths[r] = j
    return lengths


def best_budget(confidences: Confidences, draft_lengths: Sequence[int], cost: StepRate,
                num_non_draft_tokens: int, *, base_value: float | None = None,
                max_num_tokens: int | None = None, num_drafting: int = 0) -> int:
    """K = argmax_k Theta(k) over the whole sorted path (no early stop; the first maximum on ties).
    Safe only on confidences that do not depend on the drafts being planned (see ``plan_lagged``)."""
    if num_non_draft_tokens < 1:
        return 0
    num_tokens = num_non_draft_tokens
    tau = float(num_non_draft_tokens if base_value is None else base_value)
    best, best_k = tau * cost.sps(num_tokens, num_drafting), 0
    for k, (a, _, _) in enumerate(sorted_candidates(confidences, draft_lengths), start=1):
        if max_num_tokens is not None and num_tokens + 1 > max_num_tokens:
            break
        num_tokens += 1
        tau += a
        theta = tau * cost.sps(num_tokens, num_drafting)
        if theta > best:
            best, best_k = theta, k
    return best_k


def plan_top_k(confidences: Confidences, draft_lengths: Sequence[int], k: int) -> list[int]:
    """Admit the first ``k`` candidates of the sorted order (fewer if fewer have a > 0)."""
    lengths = [0] * len(draft_lengths)
    for a, j, r in sorted_candidates(confidences, draft_lengths)[: max(k, 0)]:
        assert lengths[r] == j - 1, "sorted order must respect prefixes"
        lengths[r] = j
    return lengths


def plan_lagged(confidences: Confidences, draft_lengths: Sequence[int], stale_confidences: Confidences,
                cost: StepRate, num_non_draft_tokens: int, *, base_value: float | None = None,
                max_num_tokens: int | None = None, num_drafting: int = 0) -> list[int]:
    """Production variant (paper §5.2): K from a global search on ``stale_confidences`` (one list per
    current request, from an earlier step), then top-K by the current survival."""
    k = best_budget(stale_confidences, draft_lengths, cost, num_non_draft_tokens, base_value=base_value,
                    max_num_tokens=max_num_tokens, num_drafting=num_drafting)
    return plan_top_k(confidences, draft_lengths, k)


def plan_retrospective(confidences: Confidences, draft_lengths: Sequence[int], cost: StepRate,
                       num_non_draft_tokens: int, *, base_value: float | None = None,
                       max_num_tokens: int | None = None) -> list[int]:
    """The global search on the current confidences: NOT lossless (paper Appendix A). Tests only."""
    k = best_budget(confidences, draft_lengths, cost, num_non_draft_tokens, base_value=base_value,
                    max_num_tokens=max_num_tokens)
    return plan_top_k(confidences, draft_lengths, k)


class Planner:
    """Stateful wrapper for the scheduler's ``verify_planner`` hook:
    ``planner(requests, num_other_tokens) -> lengths``.

    ``requests``: objects with ``request_id``, ``draft_token_ids`` and ``draft_confidences`` (the
    scheduler's decoding requests that carry drafts, a ``DraftView``). ``num_other_tokens``: the
    step's non-draft tokens other than these requests' anchors (prefill chunks, anchors of decoding
    requests without drafts). ``cost_table`` may be set or replaced at any time (e.g. after profiling).

    When ``mode`` cannot run it falls back to ``fixed`` (``fixed_k``), logs the reason once and counts
    it in ``fallback_reason``: "no_cost_table" (causal/lagged before a table exists),
    "no_confidences" (a request without confidences: it gets the fixed length; the others are still
    planned), "lagged_warmup" (lagged before ``lag`` calls of history: uses causal instead).
    """

    def __init__(self, mode: str = "fixed", *, cost_table: StepRate | None = None, fixed_k: int | None = None,
                 threshold: float = 0.0, lag: int = 2, max_num_batched_tokens: int | None = None):
        if mode not in MODES:
            raise ValueError(f"verify planner must be one of {MODES}, got {mode!r}")
        if lag < 1:
            raise ValueError(f"lag must be >= 1 step, got {lag}")
        self.mode = mode
        self.cost_table = cost_table
        self.fixed_k = fixed_k
        self.threshold = threshold
        self.lag = lag
        self.max_num_batched_tokens = max_num_batched_tokens
        self.fallback_reason: Counter[str] = Counter()
        self._logged: set[str] = set()
        self._history: deque[dict[str, list[float]]] = deque(maxlen=lag)  # per call: request id -> confidences
        self._stale_entry: dict[str, list[float]] | None = None  # the entry ``lag`` calls before this one
        self.num_calls = 0
        self.last_budget: int | None = None  # lagged: the K of the last call
        self.last_num_verify_tokens = 0

    def _fallback(self, reason: str) -> None:
        self.fallback_reason[reason] += 1
        if reason not in self._logged:
            self._logged.add(reason)
            # the lagged planner's first steps have no two-step-old confidences yet: expected, not a problem
            if reason == "lagged_warmup":
                log.debug("verify planner %r verifies every draft until it has confidences %d steps old",
                          self.mode, self.lag)
            elif reason == "no_confidences":  # e.g. eagle3, ngram: the draft gate still decides whether to draft
                log.info("verify planner %r: this drafter has no confidences; every draft is verified", self.mode)
            else:
                log.warning("verify planner %r falls back (%s)", self.mode, reason)

    def __call__(self, requests: Sequence, num_other_tokens: int = 0) -> list[int]:
        num_prefill = max(int(num_other_tokens), 0)
        self.num_calls += 1
        draft_lengths = [len(r.draft_token_ids) for r in requests]
        confs = [list(r.draft_confidences or []) for r in requests]
        lengths = self._plan(requests, draft_lengths, confs, num_prefill)
        self.last_num_verify_tokens = sum(lengths)
        return lengths

    def _plan(self, requests, draft_lengths, confs, num_prefill) -> list[int]:
        fixed = plan_fixed(draft_lengths, self.fixed_k)
        if self.mode == "fixed":
            return fixed
        missing = {i for i, (c, n) in enumerate(zip(confs, draft_lengths)) if n > 0 and not c}
        if missing:
            self._fallback("no_confidences")
        if self.mode == "threshold":
            planned = plan_threshold(confs, draft_lengths, self.threshold)
            return [fixed[i] if i in missing else n for i, n in enumerate(planned)]
        if self.mode == "lagged":
            self._history_record(requests, confs)
        if self.cost_table is None:
            self._fallback("no_cost_table")
            return fixed
        keep = [i for i in range(len(requests)) if i not in missing]
        # requests without confidences verify their fixed length: count those drafts as given tokens
        num_non_draft = len(requests) + num_prefill + sum(fixed[i] for i in missing)
        sub_confs = [confs[i] for i in keep]
        sub_lengths = [draft_lengths[i] for i in keep]
        # every request carrying drafts drafts again after this step whatever it verifies: R is fixed
        kwargs = dict(max_num_tokens=self.max_num_batched_tokens, num_drafting=len(requests))
        stale = self._stale(requests, keep) if self.mode == "lagged" else None
        if self.mode == "lagged" and stale is None:
            self._fallback("lagged_warmup")
        if stale is None:
            sub = plan_causal(sub_confs, sub_lengths, self.cost_table, num_non_draft, **kwargs)
        else:
            self.last_budget = best_budget(stale, sub_lengths, self.cost_table, num_non_draft, **kwargs)
            sub = plan_top_k(sub_confs, sub_lengths, self.last_budget)
        out = list(fixed)
        for i, n in zip(keep, sub):
            out[i] = n
        return out

    def _history_record(self, requests, confs) -> None:
        """Remember this call's confidences; the entry ``lag`` calls back becomes the stale input."""
        self._stale_entry = self._history[0] if len(self._history) == self.lag else None
        self._history.append({r.request_id: c for r, c in zip(requests, confs) if c})

    def _stale(self, requests, keep) -> list[list[float]] | None:
        """Per kept request: its own confidences from ``lag`` calls ago, else that call's per-position
        mean; None while the history is shorter than ``lag`` or that call had no confidences."""
        entry = self._stale_entry
        if not entry:
            return None
        mean = []
        for j in range(max(len(c) for c in entry.values())):
            column = [c[j] for c in entry.values() if len(c) > j]
            mean.append(sum(column) / len(column))
        return [entry.get(requests[i].request_id, mean) for i in keep]

    def stats(self) -> dict:
        """For /metrics: calls, fallbacks by reason, last K (lagged) and last verified draft count."""
        return {"mode": self.mode, "num_calls": self.num_calls, "fallback_reason": dict(self.fallback_reason),
                "last_budget": self.last_budget, "last_num_verify_tokens": self.last_num_verify_tokens}


def planner_from_spec(spec, *, cost_table: StepRate | None = None,
                      max_num_batched_tokens: int | None = None) -> Planner:
    """A Planner from ``SpecConfig``: ``verify`` is the mode, ``confidence_threshold`` the threshold,
    ``verify_k`` the fixed length (None: all drafts), ``verify_lag`` the lag."""
    return Planner(spec.verify, cost_table=cost_table, fixed_k=spec.verify_k,
                   threshold=float(spec.confidence_threshold), lag=spec.verify_lag,
                   max_num_batched_tokens=max_num_batched_tokens)
