"""Request arrival times: Poisson or gamma (bursty) gaps at a mean rate, seeded.

``burstiness`` is the gamma shape k: 1 is a Poisson process (exponential gaps), k < 1 burstier,
k > 1 more regular; the mean gap is always ``1 / rate_per_s``. An infinite rate sends everything
at once (closed loop when bounded by a concurrency limit).
"""
from __future__ import annotations

import math

import numpy as np


def arrival_gaps_s(num: int, rate_per_s: float, burstiness: float = 1.0, seed: int = 0) -> np.ndarray:
    """``num`` gaps in seconds: gap i is the wait before request i (the first one included)."""
    if num <= 0:
        return np.zeros(0)
    if math.isinf(rate_per_s):
        return np.zeros(num)
    if rate_per_s <= 0 or burstiness <= 0:
        raise ValueError("rate and burstiness must be > 0")
    rng = np.random.default_rng(seed)
    return rng.gamma(shape=burstiness, scale=1.0 / (rate_per_s * burstiness), size=num)


def arrival_offsets_s(num: int, rate_per_s: float, burstiness: float = 1.0, seed: int = 0) -> np.ndarray:
    """Send times relative to the run's start (cumulative gaps)."""
    return np.cumsum(arrival_gaps_s(num, rate_per_s, burstiness, seed))
