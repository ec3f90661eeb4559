"""The Triton block verifier against the torch path of verify(), exactly.

With identically seeded per-request generators both accept the same drafts, emit the same token and
leave every generator in the same state. Cases: sampled drafts (q as fp32 / bf16), deterministic drafts
(q = None), a draft with q(d) = 0, tokens with p = 0, greedy requests, l = 0, bonus and residual draws.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from sparkserve_triton.verify import verify  # noqa: E402

from sparkserve.spec_decode.verify import VerifyInput  # noqa: E402
from sparkserve.spec_decode.verify import verify as torch_verify  # noqa: E402
from sparkserve.step import SamplingMeta  # noqa: E402
from tests.spec_decode.verify_batches import mixed_batch  # noqa: E402


def _batch(vocab: int, seed: int, num_requests: int = 12):
    return mixed_batch(vocab, seed, num_requests, max_drafts=5)


def _with_generators(inputs, seed):
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(inputs))]
    for inp, gen in zip(inputs, gens):
        inp.generator = gen
    return gens


def test_verify_equals_torch_verifier(device):
    accepted = rejected = 0
    for seed in range(1):  # the interpreter runs ~0.1 s per processed row: one batch of 12 requests
        logits, inputs = _batch(256, seed)
        ref_gens = _with_generators(inputs, seed)
        ref = torch_verify(logits, inputs, backend="torch")
        gens = _with_generators(inputs, seed)
        num_accepted, tokens = verify(logits.to(device), inputs)
        assert num_accepted == [r.num_accepted for r in ref]
        assert tokens == [r.token_ids[-1] for r in ref]
        assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(gens, ref_gens))
        accepted += sum(num_accepted)
        rejected += sum(a < inp.num_draft_tokens for a, inp in zip(num_accepted, inputs))
    assert accepted >= 8 and rejected >= 4  # both branches (accept, residual draw) ran


def test_greedy_ties_take_the_first_argmax(device):
    logits = torch.full((3, 64), -1.0)
    logits[:, [5, 9]] = 2.0
    inputs = [VerifyInput([5, 9], None, SamplingMeta(temperature=0.0))]
    assert verify(logits.to(device), inputs) == ([1], [5])
