"""The native verifier (csrc/sampling_verify.cpp) against the torch path of verify(), exactly.

With identically seeded generators both backends accept the same drafts, emit the same tokens and
leave every generator in the same state. Cases: fp32/bf16 logits, V = 8192 and odd V, sampled drafts
(q as fp32 / bf16 tensors) and deterministic ones (q = None), drafts on p = 0 tokens, drafts with
q(d) = 0, greedy requests, l = 0, the demo's sampling and top-p only, logprobs, an empty batch.
(The statistical tests in test_verify_distribution.py run the native verifier too.)
"""
from __future__ import annotations

import pytest
import torch

from sparkserve import native
from sparkserve.spec_decode.verify import VerifyInput, verify
from sparkserve.step import SamplingMeta
from tests.spec_decode.verify_batches import mixed_batch

pytestmark = pytest.mark.skipif(not native.available(), reason="native CPU kernels not built here")



def _batch(vocab: int, dtype: torch.dtype, seed: int, num_requests: int = 18):
    """Target logits and VerifyInputs whose drafts come from a q near p: a mix of accepts and rejects."""
    logits, inputs = mixed_batch(vocab, seed, num_requests, max_drafts=7, logprobs_every=5)
    return logits.to(dtype), inputs


def _run(backend: str, logits, inputs, seed: int):
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(inputs))]
    for inp, gen in zip(inputs, gens):
        inp.generator = gen
    outs = verify(logits, inputs, backend=backend)
    return outs, [g.get_state() for g in gens]


@pytest.mark.parametrize("dtype,vocab", [(torch.float32, 8192), (torch.bfloat16, 8192),
                                         (torch.float32, 1001), (torch.bfloat16, 1001)])
def test_native_verify_equals_torch(dtype, vocab):
    accepted = rejected = 0
    for seed in range(3):
        logits, inputs = _batch(vocab, dtype, seed=10 * vocab + seed)
        ref, ref_states = _run("torch", logits, inputs, seed)
        nat, nat_states = _run("native", logits, inputs, seed)
        for r, n in zip(ref, nat):
            assert (n.token_ids, n.num_accepted, n.logprobs) == (r.token_ids, r.num_accepted, r.logprobs)
        assert all(torch.equal(a, b) for a, b in zip(nat_states, ref_states))
        accepted += sum(o.num_accepted for o in nat)
        rejected += sum(o.num_accepted < inp.num_draft_tokens for o, inp in zip(nat, inputs))
    assert accepted > 20 and rejected > 20  # both branches (accept, residual draw) really ran


def test_greedy_rows_take_the_first_argmax():
    logits = torch.full((3, 64), -1.0)
    logits[:, [5, 9]] = 2.0  # a tie at the max in every row
    inputs = [VerifyInput([5, 9], None, SamplingMeta(temperature=0.0))]
    for backend in ("torch", "native"):
        out = verify(logits, inputs, backend=backend)[0]
        assert (out.token_ids, out.num_accepted) == ([5, 5], 1)


def test_empty_batch():
    assert verify(torch.zeros(0, 8192), [], backend="native") == []
