"""Shared helpers for the sampling tests: an independent float64 reference of the processed distribution."""
from __future__ import annotations

import math

import numpy as np
import pytest


def reference_distribution(logits, temperature, top_k=0, top_p=1.0, min_p=0.0) -> np.ndarray:
    """Plain-python float64 statement of the rules in sparkserve/sample/processing.py."""
    logits = [float(x) for x in logits]
    vocab = len(logits)
    if temperature < 1e-5:
        best = min(range(vocab), key=lambda i: (-logits[i], i))
        return np.array([1.0 if i == best else 0.0 for i in range(vocab)])
    z = [x / temperature for x in logits]
    alive = [i for i in range(vocab) if z[i] != -math.inf]
    if 0 < top_k < vocab:
        kth = sorted(z, reverse=True)[top_k - 1]
        alive = [i for i in alive if z[i] >= kth]

    def normalise(ids):
        top = max(z[i] for i in ids)
        weights = {i: math.exp(z[i] - top) for i in ids}
        total = sum(weights.values())
        return {i: w / total for i, w in weights.items()}

    probs = normalise(alive)
    if top_p < 1.0:
        kept, mass = [], 0.0
        for i in sorted(alive, key=lambda i: -probs[i]):
            kept.append(i)
            mass += probs[i]
            if mass >= top_p - 1e-9:
                break
        last = probs[kept[-1]]
        alive = [i for i in alive if probs[i] >= last]  # ties with the last kept token stay
        probs = normalise(alive)
    if min_p > 0.0:
        best = max(probs.values())
        alive = [i for i in alive if probs[i] >= min_p * best]
        probs = normalise(alive)
    return np.array([probs.get(i, 0.0) for i in range(vocab)])


@pytest.fixture
def ref_dist():
    return reference_distribution
