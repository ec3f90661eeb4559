"""Arrival processes: Poisson gaps pass a KS test against the exponential; gamma keeps its mean."""
import math

import numpy as np
from scipy import stats

from sparkserve.benchmark.arrivals import arrival_gaps_s, arrival_offsets_s


def test_poisson_gaps_pass_a_ks_test():
    rate = 4.0
    gaps = arrival_gaps_s(2000, rate, burstiness=1.0, seed=7)
    assert stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue > 0.01
    # and a wrong rate is rejected, so the test has power
    assert stats.kstest(gaps, "expon", args=(0, 1 / (1.25 * rate))).pvalue < 1e-4


def test_gamma_burstiness_shape_and_mean():
    gaps = arrival_gaps_s(4000, 2.0, burstiness=0.5, seed=3)
    assert stats.kstest(gaps, "gamma", args=(0.5, 0, 1 / (2.0 * 0.5))).pvalue > 0.01
    assert abs(gaps.mean() - 0.5) < 0.05
    assert gaps.std() / gaps.mean() > 1.2  # burstier than Poisson (CV of gamma k=0.5 is sqrt(2))


def test_seeded_and_infinite_rate():
    assert np.array_equal(arrival_gaps_s(50, 3.0, seed=1), arrival_gaps_s(50, 3.0, seed=1))
    assert not np.array_equal(arrival_gaps_s(50, 3.0, seed=1), arrival_gaps_s(50, 3.0, seed=2))
    assert not arrival_offsets_s(5, math.inf).any()
    offs = arrival_offsets_s(5, 1.0, seed=0)
    assert np.all(np.diff(offs) > 0) and offs[0] > 0
