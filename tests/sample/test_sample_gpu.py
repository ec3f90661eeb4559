"""The same contracts on a CUDA device (skipped without one)."""
from __future__ import annotations

import pytest
import torch

from sparkserve.sample import RequestGenerators, SamplingTensors, Sampler, draw_uniform, processed_logprobs
from sparkserve.step import SamplingMeta

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_processed_logprobs_cuda_matches_cpu():
    logits = torch.randn(8, 1000, generator=torch.Generator().manual_seed(0)) * 3
    metas = [SamplingMeta(temperature=t, top_k=k, top_p=p, min_p=m)
             for t, k, p, m in [(0.0, 0, 1.0, 0.0), (0.7, 50, 0.9, 0.0), (1.0, 0, 0.8, 0.05), (1.3, 5, 1.0, 0.1)] * 2]
    cpu = processed_logprobs(logits, *SamplingTensors.from_metas(metas))
    gpu = processed_logprobs(logits.cuda(), *SamplingTensors.from_metas(metas, device="cuda")).cpu()
    assert torch.equal(cpu > float("-inf"), gpu > float("-inf"))
    torch.testing.assert_close(gpu.exp(), cpu.exp(), atol=1e-5, rtol=1e-4)


def test_seeded_cuda_sampling_repeats_and_ignores_batch():
    logits = torch.randn(3, 1000, device="cuda")
    metas = [SamplingMeta(temperature=0.8, top_p=0.95, seed=7), SamplingMeta(), SamplingMeta(temperature=0.0)]

    def run(rows):
        gens = RequestGenerators(device="cuda", engine_seed=1)
        ids = [f"r{i}" for i in rows]
        return [
            Sampler().sample(logits[rows], [metas[i] for i in rows],
                             [gens.get(r, metas[i].seed) for r, i in zip(ids, rows)]).token_ids[rows.index(0)]
            for _ in range(30)
        ]

    assert run([0]) == run([1, 0, 2]) == run([2, 1, 0])
    assert isinstance(draw_uniform(RequestGenerators(device="cuda").get("u", 3)), float)
