"""Statistical tests: the sampler draws from exactly the processed distribution.

Fixed seeds make every test deterministic; the chi-square threshold (p > 1e-3) is what a correct
sampler passes for almost every seed, so a failure means the distribution is wrong, not bad luck.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sparkserve.sample import Sampler, draw_from_probs
from sparkserve.step import SamplingMeta

VOCAB = 12
NUM_SAMPLES = 4000
P_MIN = 1e-3


def _logits(seed: int) -> torch.Tensor:
    return torch.randn(VOCAB, generator=torch.Generator().manual_seed(seed)) * 1.5  # [V]


def _counts(token_ids, vocab=VOCAB) -> np.ndarray:
    return np.bincount(np.asarray(token_ids), minlength=vocab)


def _check(counts, expected, chi_square):
    assert counts[expected == 0].sum() == 0, "sampled a token the filters remove"
    p_value = chi_square(counts, expected)
    assert p_value > P_MIN, (p_value, counts, np.round(expected * counts.sum(), 1))


@pytest.mark.parametrize(
    "temperature,top_k,top_p,min_p",
    [
        (1.0, 0, 1.0, 0.0),
        (0.7, 0, 1.0, 0.0),
        (1.0, 3, 1.0, 0.0),
        (1.0, 0, 0.8, 0.0),
        (1.0, 0, 1.0, 0.2),
        (0.7, 3, 0.8, 0.0),
        (0.7, 0, 0.8, 0.2),
        (1.3, 5, 0.9, 0.1),
        (2.0, 8, 0.95, 0.05),
    ],
)
def test_sampler_matches_processed_distribution(temperature, top_k, top_p, min_p, ref_dist, chi_square):
    logits = _logits(seed=11)
    meta = SamplingMeta(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    gen = torch.Generator().manual_seed(2024)
    out = Sampler().sample(logits.expand(NUM_SAMPLES, VOCAB), [meta] * NUM_SAMPLES, [gen] * NUM_SAMPLES)
    expected = ref_dist(logits.tolist(), temperature, top_k, top_p, min_p)
    _check(_counts(out.token_ids), expected, chi_square)


def test_mixed_batch_each_row_follows_its_own_distribution(ref_dist, chi_square):
    """Different logits and parameters per row, all in one batch, with a greedy row in between."""
    configs = [(0.7, 3, 1.0, 0.0, 1), (1.0, 0, 0.8, 0.2, 2), (0.0, 0, 1.0, 0.0, 3), (1.3, 5, 0.9, 0.1, 4)]
    metas = [SamplingMeta(temperature=t, top_k=k, top_p=p, min_p=m) for t, k, p, m, _ in configs]
    logits = torch.stack([_logits(seed) for *_, seed in configs])  # [4, V]
    gens = [torch.Generator().manual_seed(100 + i) for i in range(len(configs))]
    draws = [[] for _ in configs]
    sampler = Sampler()
    for _ in range(1500):
        out = sampler.sample(logits, metas, gens)
        for row, token in enumerate(out.token_ids):
            draws[row].append(token)
    for row, (t, k, p, m, _) in enumerate(configs):
        expected = ref_dist(logits[row].tolist(), t, k, p, m)
        _check(_counts(draws[row]), expected, chi_square)


def test_top_p_boundary_distribution(chi_square):
    """probs [0.5, 0.25, 0.125, 0.125], p = 0.75: exactly tokens {0, 1}, renormalised to [2/3, 1/3]."""
    logits = torch.tensor([0.5, 0.25, 0.125, 0.125]).log()
    gen = torch.Generator().manual_seed(3)
    n = 3000
    out = Sampler().sample(logits.expand(n, 4), [SamplingMeta(top_p=0.75)] * n, [gen] * n)
    _check(_counts(out.token_ids, 4), np.array([2 / 3, 1 / 3, 0.0, 0.0]), chi_square)


def test_draw_from_unnormalised_weights(chi_square):
    weights = torch.tensor([0.0, 2.0, 0.5, 0.0, 1.0, 0.25, 0.25])
    gen = torch.Generator().manual_seed(9)
    draws = [draw_from_probs(weights, gen) for _ in range(NUM_SAMPLES)]
    expected = (weights / weights.sum()).double().numpy()
    _check(_counts(draws, len(weights)), expected, chi_square)
