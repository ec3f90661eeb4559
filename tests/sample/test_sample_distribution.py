"""Statistical tests: the sampler draws from exactly the processed distribution.

Every sampler backend in ``SAMPLERS`` (and weighted-draw primitive in ``DRAWS``) inherits them. Each
test is a G-test (``tests/stats.py``) after an explicit check that no token the filters remove was
drawn; fixed seeds make them deterministic. Power (``test_stated_power``): NUM_SAMPLES = 4000 draws
over <= 12 tokens detect Cohen's w >= 0.095 with 90% power at ALPHA (e.g. moving 1.9% of the mass
from a 20% token to a 5% one; temperature 1.1 instead of 1 on these logits is w = 0.108); the mixed
batch's 1500 draws per row detect w >= 0.16.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sparkserve import native
from sparkserve.sample import Sampler, draw_indices
from sparkserve.step import SamplingMeta
from tests.stats import (
    ALPHA,
    assert_possible,
    check_pvalues,
    cohen_w,
    detectable_w,
    gof_pvalue,
)


class _OnCuda:
    """A GPU sampler on the tests' CPU logits (the CPU generators still draw the uniforms)."""

    def __init__(self, backend: str):
        self.sampler = Sampler(backend=backend)

    def sample(self, logits, metas, generators):
        return self.sampler.sample(logits.cuda(), metas, generators)


SAMPLERS = {  # every sampler backend registers here
    "torch": lambda: Sampler(backend="torch"),
    "native": lambda: Sampler(backend="native"),  # csrc/sampling.cpp
    "triton": lambda: _OnCuda("triton"),  # sparkserve_triton/sampling.py, GPU only (slow in the interpreter)
}
DRAWS = {  # weights [S, V], one generator per row -> indices [S]
    "torch": lambda w, gens: draw_indices(w, gens, backend="torch"),
    "native": lambda w, gens: draw_indices(w, gens, backend="native"),
}
NATIVE = {"native"}  # backends that need sparkserve.native.available()
CUDA = {"triton"}  # backends that need a CUDA GPU here
VOCAB = 12
NUM_SAMPLES = 4000
MIXED_DRAWS_PER_ROW = 1500


def _skip_unavailable(backend: str) -> None:
    if backend in NATIVE and not native.available():
        pytest.skip("native CPU kernels not built here")
    if backend in CUDA and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")


@pytest.fixture(params=list(SAMPLERS))
def sampler(request):
    _skip_unavailable(request.param)
    return SAMPLERS[request.param]()


def _logits(seed: int) -> torch.Tensor:
    return torch.randn(VOCAB, generator=torch.Generator().manual_seed(seed)) * 1.5  # [V]


def _check(token_ids, expected: np.ndarray, name: str = "") -> None:
    """No impossible token, then a G-test at ALPHA."""
    token_ids = np.asarray(token_ids)
    assert_possible(expected[token_ids], f"{name}: sampled a token the filters remove")
    check_pvalues({name: gof_pvalue(np.bincount(token_ids, minlength=len(expected)), expected)})


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
def test_sampler_matches_processed_distribution(sampler, temperature, top_k, top_p, min_p, ref_dist):
    logits = _logits(seed=11)
    meta = SamplingMeta(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    gen = torch.Generator().manual_seed(2024)
    out = sampler.sample(logits.expand(NUM_SAMPLES, VOCAB), [meta] * NUM_SAMPLES, [gen] * NUM_SAMPLES)
    _check(out.token_ids, ref_dist(logits.tolist(), temperature, top_k, top_p, min_p))


def test_mixed_batch_each_row_follows_its_own_distribution(sampler, ref_dist):
    """Different logits and parameters per row, interleaved in one batch, with greedy rows in between;
    every row draws with its own request's generator."""
    configs = [(0.7, 3, 1.0, 0.0, 1), (1.0, 0, 0.8, 0.2, 2), (0.0, 0, 1.0, 0.0, 3), (1.3, 5, 0.9, 0.1, 4)]
    metas = [SamplingMeta(temperature=t, top_k=k, top_p=p, min_p=m) for t, k, p, m, _ in configs]
    logits = torch.stack([_logits(seed) for *_, seed in configs])  # [4, V]
    gens = [torch.Generator().manual_seed(100 + i) for i in range(len(configs))]
    n = MIXED_DRAWS_PER_ROW
    out = sampler.sample(logits.repeat(n, 1), metas * n, gens * n)  # row r of config r % 4
    draws = np.array(out.token_ids).reshape(n, len(configs))
    for row, (t, k, p, m, _) in enumerate(configs):
        _check(draws[:, row], ref_dist(logits[row].tolist(), t, k, p, m), f"row {row}")


def test_top_p_boundary_distribution(sampler):
    """probs [0.5, 0.25, 0.125, 0.125], p = 0.75: exactly tokens {0, 1}, renormalised to [2/3, 1/3]."""
    logits = torch.tensor([0.5, 0.25, 0.125, 0.125]).log()
    gen = torch.Generator().manual_seed(3)
    n = 3000
    out = sampler.sample(logits.expand(n, 4), [SamplingMeta(top_p=0.75)] * n, [gen] * n)
    _check(out.token_ids, np.array([2 / 3, 1 / 3, 0.0, 0.0]))


@pytest.mark.parametrize("draw", list(DRAWS))
def test_draw_from_unnormalised_weights(draw):
    _skip_unavailable(draw)
    weights = torch.tensor([0.0, 2.0, 0.5, 0.0, 1.0, 0.25, 0.25])
    gen = torch.Generator().manual_seed(9)
    drawn = DRAWS[draw](weights.expand(NUM_SAMPLES, -1), [gen] * NUM_SAMPLES)
    _check(drawn.tolist(), (weights / weights.sum()).double().numpy())


def test_stated_power():
    assert detectable_w(VOCAB - 1, NUM_SAMPLES, ALPHA) <= 0.095
    assert cohen_w(torch.softmax(_logits(11) / 1.1, -1).numpy(), torch.softmax(_logits(11), -1).numpy()) > 0.1
    assert detectable_w(VOCAB - 1, MIXED_DRAWS_PER_ROW, ALPHA) <= 0.16
