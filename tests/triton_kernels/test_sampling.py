"""The Triton sampling kernel against the torch sampler (processed distribution and draw)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from sparkserve.sample import SamplingTensors, processed_logprobs  # noqa: E402
from sparkserve.sample.sampler import draw_indices_with_uniforms  # noqa: E402
from sparkserve.step import SamplingMeta  # noqa: E402
from sparkserve_triton.sampling import sample  # noqa: E402

METAS = [SamplingMeta(temperature=0.0), SamplingMeta(temperature=1.0), SamplingMeta(temperature=0.7, top_k=20),
         SamplingMeta(temperature=1.0, top_p=0.8), SamplingMeta(temperature=0.7, top_k=20, top_p=0.8),
         SamplingMeta(temperature=1.3, min_p=0.05), SamplingMeta(temperature=0.9, top_k=5, top_p=0.9, min_p=0.1),
         SamplingMeta(temperature=1.0, top_k=1)]


def _logits(num_rows, vocab, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_rows, vocab, generator=g) * 3
    logits[:, 7] = logits[:, 3]  # ties
    if num_rows > 1 and vocab > 110:
        logits[1, 100:110] = float("-inf")  # masked tokens
    return logits.to(dtype), g


@pytest.mark.parametrize("vocab,dtype", [(300, torch.float32), (1500, torch.bfloat16)])
def test_sample_matches_torch_sampler(device, vocab, dtype):
    logits, g = _logits(len(METAS), vocab, 0, dtype)
    logits = logits.to(device)
    params = SamplingTensors.from_metas(METAS, device=device)
    uniforms = torch.rand(len(METAS), dtype=torch.float64, generator=g).to(device)
    tokens, probs = sample(logits, *params, uniforms, return_probs=True)

    ref_probs = processed_logprobs(logits, *params).exp()
    greedy = params.temperature < 1e-5
    sampled = ~greedy
    assert torch.equal(probs[sampled] > 0, ref_probs[sampled] > 0)  # the same kept sets
    torch.testing.assert_close(probs[sampled], ref_probs[sampled], atol=1e-6, rtol=1e-5)
    expected = draw_indices_with_uniforms(ref_probs, uniforms)
    expected[greedy] = logits[greedy].argmax(dim=-1)
    assert tokens.tolist() == expected.tolist()


def test_draws_follow_uniforms(device):
    # many uniforms on one top-p/top-k row: every draw is the reference's inverse-CDF index
    logits, g = _logits(1, 64, 1)
    row = logits.expand(12, -1).contiguous().to(device)
    meta = SamplingMeta(temperature=0.8, top_k=30, top_p=0.95)
    params = SamplingTensors.from_metas([meta] * 12, device=device)
    uniforms = torch.rand(12, dtype=torch.float64, generator=g).to(device)
    ref = draw_indices_with_uniforms(processed_logprobs(row, *params).exp(), uniforms)
    assert sample(row, *params, uniforms).tolist() == ref.tolist()
