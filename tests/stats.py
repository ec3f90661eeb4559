"""Statistics shared by the losslessness tests (verifier, sampler, drafters, planners end to end).

A lossless implementation emits every token from the exact conditional distribution the target
defines. The tests check that in four ways, all with fixed seeds (a correct implementation passes
deterministically; ``ALPHA`` is the false-alarm rate a *new* backend, drawing different random
numbers, faces per family of tests):

- ``assert_possible``: no emitted token has probability 0 (checked token by token, never pooled);
- ``gof_pvalue``: G-test of counts against one distribution (a marginal, or a conditional given a
  prefix group); cells with expected count < 5 are pooled into one "rare" cell of *possible* tokens;
- ``pooled_conditional_pvalue``: one test of a position whose conditional differs per sample
  (O - E summed over samples, E from each sample's own p, with the exact multinomial covariance);
  df = V - 1 whatever the number of prefixes, so it keeps its power where per-prefix groups are thin;
- ``acceptance_pvalue``: drafts accepted vs the expected sum of per-trial rates sum_x min(p, q)
  (Poisson-binomial, normal approximation).

``check_pvalues`` combines a family with Bonferroni. Sample sizes come from ``detectable_w`` (Cohen's
w = sqrt(sum (p1 - p0)^2 / p0) a goodness-of-fit test detects with probability ``POWER``; noncentral
chi-square with lambda = n w^2) and ``detectable_relative_bias`` (the relative shift of an acceptance
rate the z-test detects with probability ``POWER``).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import optimize, stats

ALPHA = 1e-3  # per family of p-values (Bonferroni inside the family)
POWER = 0.9
MIN_EXPECTED = 5.0  # goodness-of-fit cells expecting fewer are pooled (possible tokens only)


def assert_possible(probs_of_emitted: np.ndarray, what: str = "") -> None:
    """Every emitted token had probability > 0 under its own conditional ([N] array of p(x_i))."""
    probs_of_emitted = np.asarray(probs_of_emitted, dtype=np.float64)
    bad = np.flatnonzero(probs_of_emitted <= 0.0)
    assert bad.size == 0, f"{what}: {bad.size} emitted token(s) have target probability 0 (first at {bad[:5]})"


def gof_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    """G-test of ``counts`` [V] against ``probs`` [V] (sums to 1). A count on a p = 0 cell is an
    assertion error (an impossible token), not a small p-value."""
    counts = np.asarray(counts, dtype=np.float64).ravel()
    probs = np.asarray(probs, dtype=np.float64).ravel()
    assert_possible(np.where(counts > 0, probs, 1.0), "goodness of fit")
    n = counts.sum()
    if n == 0:
        return 1.0
    possible = probs > 0
    expected = probs[possible] / probs[possible].sum() * n
    observed = counts[possible]
    big = expected >= MIN_EXPECTED
    obs, exp = list(observed[big]), list(expected[big])
    if (~big).any():
        obs.append(observed[~big].sum())
        exp.append(expected[~big].sum())
    if len(obs) < 2:
        return 1.0
    return float(stats.power_divergence(obs, exp, lambda_="log-likelihood").pvalue)


def grouped_gof_pvalues(groups: np.ndarray, tokens: np.ndarray, probs_by_group: np.ndarray,
                        name: str) -> dict[str, float]:
    """One G-test per group g (e.g. the previous token): tokens with ``groups == g`` against
    ``probs_by_group[g]`` [G, V]. Groups without samples are skipped."""
    out = {}
    for g in np.unique(groups):
        sel = tokens[groups == g]
        out[f"{name}|{int(g)}"] = gof_pvalue(np.bincount(sel, minlength=probs_by_group.shape[1]), probs_by_group[g])
    return out


def pooled_conditional_pvalue(tokens: np.ndarray, probs: np.ndarray) -> float:
    """Tokens [N] each drawn from its own distribution probs [N, V]: D = sum_i (onehot(x_i) - p_i),
    Cov(D) = sum_i diag(p_i) - p_i p_i^T, statistic D^T Cov^+ D ~ chi2(rank Cov) under H0."""
    tokens = np.asarray(tokens)
    probs = np.asarray(probs, dtype=np.float64)
    assert_possible(probs[np.arange(len(tokens)), tokens], "pooled conditional")
    observed = np.bincount(tokens, minlength=probs.shape[1]).astype(np.float64)
    diff = observed - probs.sum(axis=0)
    cov = np.diag(probs.sum(axis=0)) - probs.T @ probs
    eigval, eigvec = np.linalg.eigh(cov)
    keep = eigval > 1e-9 * max(eigval.max(), 1e-300)
    if not keep.any():
        return 1.0
    proj = eigvec[:, keep].T @ diff
    statistic = float((proj ** 2 / eigval[keep]).sum())
    return float(stats.chi2.sf(statistic, int(keep.sum())))


def acceptance_pvalue(accepted: np.ndarray, rates: np.ndarray) -> float:
    """Two-sided z-test of accepted [M] bools against per-trial acceptance probabilities rates [M].
    A trial with rate 0 (or 1) that was accepted (or rejected) is an assertion error."""
    accepted = np.asarray(accepted, dtype=np.float64)
    rates = np.asarray(rates, dtype=np.float64)
    assert not (accepted[rates <= 0.0] > 0).any(), "accepted a draft with acceptance probability 0"
    assert (accepted[rates >= 1.0] > 0).all(), "rejected a draft with acceptance probability 1"
    var = float((rates * (1.0 - rates)).sum())
    if var == 0.0:
        return 1.0
    z = (accepted.sum() - rates.sum()) / np.sqrt(var)
    return float(2.0 * stats.norm.sf(abs(z)))


def check_pvalues(pvalues: Mapping[str, float], alpha: float = ALPHA) -> None:
    """Bonferroni over one family: every p-value must exceed alpha / len(family)."""
    threshold = alpha / max(len(pvalues), 1)
    failed = {k: v for k, v in pvalues.items() if not v > threshold}
    assert not failed, f"{len(failed)} of {len(pvalues)} tests below {threshold:.2g}: {failed}"


# ---- power ---------------------------------------------------------------------------------------
def detectable_w(df: int, n: float, alpha: float, power: float = POWER) -> float:
    """Smallest Cohen's w a level-``alpha`` chi-square/G test with ``df`` degrees of freedom and ``n``
    samples detects with probability ``power`` (noncentrality n w^2)."""
    critical = stats.chi2.isf(alpha, df)
    lam = optimize.brentq(lambda x: stats.ncx2.sf(critical, df, x) - power, 1e-9, 1e6)
    return float(np.sqrt(lam / n))


def cohen_w(p1: np.ndarray, p0: np.ndarray) -> float:
    """Effect size of emitting from p1 when p0 is right (p0 > 0 where p1 > 0)."""
    p1, p0 = np.asarray(p1, dtype=np.float64), np.asarray(p0, dtype=np.float64)
    live = p0 > 0
    return float(np.sqrt(((p1[live] - p0[live]) ** 2 / p0[live]).sum()))


def detectable_relative_bias(rates: np.ndarray, alpha: float, power: float = POWER) -> float:
    """Smallest relative shift eps (every rate r -> r (1 + eps)) of an acceptance rate that the
    two-sided level-``alpha`` z-test over trials with these rates detects with probability ``power``."""
    rates = np.asarray(rates, dtype=np.float64)
    z = stats.norm.isf(alpha / 2) + stats.norm.isf(1.0 - power)
    return float(z * np.sqrt((rates * (1.0 - rates)).sum()) / rates.sum())
