"""The native sampling kernels (csrc/sampling.cpp) against the torch reference, exactly.

Given the same uniforms the native draw returns the same tokens as ``processed_logprobs`` + the
torch draw; the processed distributions have identical supports and agree to fp32 rounding; the
Sampler consumes the same random numbers either way. Cases: fp32/bf16 logits, V = 8192 and odd V,
ties at the top-k and top-p cuts, p = 0 tokens (-inf logits), greedy rows, an empty batch.
(The statistical tests in test_sample_distribution.py run the native backends too.)
"""
from __future__ import annotations

import pytest
import torch

from sparkserve import native
from sparkserve.sample import Sampler, processed_logprobs
from sparkserve.sample import native as native_sampling
from sparkserve.sample.sampler import draw_indices, draw_indices_with_uniforms
from sparkserve.step import SamplingMeta

pytestmark = pytest.mark.skipif(not native.available(), reason="native CPU kernels not built here")

# (temperature, top_k, top_p, min_p): off, each filter, the demo's sampling, combinations, greedy,
# a large top-k (the selection path) and a top-p that keeps almost everything.
CONFIGS = [(1.0, 0, 1.0, 0.0), (0.7, 20, 0.8, 0.0), (1.0, 0, 0.8, 0.0), (1.0, 0, 1.0, 0.1),
           (0.7, 0, 0.9, 0.05), (1.3, 5, 0.95, 0.1), (0.0, 0, 1.0, 0.0), (0.9, 300, 1.0, 0.0),
           (1.0, 40, 0.999, 0.0), (0.5, 1, 0.5, 0.0)]


def _logits(vocab: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """[len(CONFIGS) + 3, V]: random rows, some -inf tokens, plus three rows built with exact ties at
    the top-k cut (k = 5), at the top-p cut and at the max."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(len(CONFIGS), vocab, generator=g) * 3.0
    rows[torch.rand(rows.shape, generator=g) < 0.1] = float("-inf")  # p = 0 tokens
    tie_k = torch.randn(vocab, generator=g)
    tie_k[[3, 10, 50, vocab - 1]] = 9.0  # 4 tokens tied above the rest...
    tie_k[[7, 20, vocab - 2]] = 8.0  # ...then 3 tied at the 5th largest value: all 3 are kept
    tie_p = torch.full((vocab,), -30.0)
    tie_p[[0, 5, 9, vocab - 1]] = torch.tensor([0.5, 0.25, 0.25, 0.25]).log()  # cut inside the tie
    tie_max = torch.full((vocab,), -1.0)
    tie_max[[2, vocab // 2, vocab - 3]] = 4.0  # argmax ties: the lowest index wins
    return torch.cat([rows, tie_k[None], tie_p[None], tie_max[None]]).to(dtype)


def _params(num_rows: int) -> tuple[torch.Tensor, ...]:
    configs = CONFIGS + [(1.0, 5, 1.0, 0.0), (1.0, 0, 0.6, 0.0), (0.0, 0, 1.0, 0.0)]
    return native_sampling.row_params(*zip(*configs[:num_rows]))


CASES = [(torch.float32, 8192), (torch.bfloat16, 8192), (torch.float32, 1001), (torch.bfloat16, 1001)]


@pytest.mark.parametrize("dtype,vocab", CASES)
def test_processed_probs_match_reference(dtype, vocab):
    logits = _logits(vocab, dtype, seed=vocab)
    params = _params(logits.shape[0])
    ref = processed_logprobs(logits, *params).exp()  # [N, V]
    nat = native_sampling.processed_probs(logits, *params)
    assert torch.equal(nat > 0, ref > 0), "kept token sets differ"
    torch.testing.assert_close(nat, ref, rtol=1e-5, atol=1e-9)
    assert int((nat[-3] > 0).sum()) == 7 and int((nat[-2] > 0).sum()) == 4  # the tie rows kept every tie


@pytest.mark.parametrize("dtype,vocab", CASES)
def test_draws_match_reference_given_uniforms(dtype, vocab):
    logits = _logits(vocab, dtype, seed=vocab + 1)
    reps = 16
    params = [p.repeat(reps) for p in _params(logits.shape[0])]
    batch = logits.repeat(reps, 1)  # [N * reps, V]
    uniforms = torch.rand(batch.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ref = draw_indices_with_uniforms(processed_logprobs(batch, *params).exp(), uniforms)
    nat = native_sampling.sample_tokens(batch, params, uniforms)
    assert torch.equal(nat, ref)
    greedy_rows = params[0] == 0
    assert torch.equal(nat[greedy_rows], batch[greedy_rows].argmax(dim=-1))
    assert len(set(nat[:: logits.shape[0]].tolist())) > 10  # the uniforms really pick different tokens


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sampler_backends_agree_and_consume_the_same_randomness(dtype):
    vocab = 8192
    logits = _logits(vocab, dtype, seed=3).repeat(4, 1)
    metas = [SamplingMeta(temperature=t, top_k=k, top_p=p, min_p=m) for t, k, p, m in CONFIGS]
    metas = (metas + [SamplingMeta(top_k=5), SamplingMeta(top_p=0.6), SamplingMeta(temperature=0.0)]) * 4
    outs, states = {}, {}
    for backend in ("torch", "native"):
        gens = [torch.Generator().manual_seed(100 + i) for i in range(len(metas))]
        outs[backend] = Sampler(backend=backend).sample(logits, metas, gens).token_ids
        states[backend] = [g.get_state() for g in gens]
    assert outs["native"] == outs["torch"]
    assert all(torch.equal(a, b) for a, b in zip(states["native"], states["torch"]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_native_draw_indices_is_bit_identical(dtype):
    g = torch.Generator().manual_seed(8)
    weights = (torch.rand(200, 1001, generator=g) * (torch.rand(200, 1001, generator=g) < 0.3)).to(dtype)
    weights[:, 0] = 0.0
    weights[7] = 0.0
    weights[7, 1000] = 1.0  # one positive weight, at the end
    drawn = {b: draw_indices(weights, [torch.Generator().manual_seed(i) for i in range(200)], backend=b)
             for b in ("torch", "native")}
    assert torch.equal(drawn["native"], drawn["torch"])
    assert bool((weights.gather(1, drawn["native"][:, None]) > 0).all())


def test_empty_batch():
    logits = torch.zeros(0, 8192)
    params = native_sampling.row_params([], [], [], [])
    assert native_sampling.processed_probs(logits, *params).shape == (0, 8192)
    assert native_sampling.sample_tokens(logits, params, torch.zeros(0, dtype=torch.float64)).shape == (0,)
    assert draw_indices(logits, [], backend="native").shape == (0,)
    assert Sampler(backend="native").sample(logits, [], []).token_ids == []
