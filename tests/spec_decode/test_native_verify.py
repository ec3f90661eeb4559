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

pytestmark = pytest.mark.skipif(not native.available(), reason="native CPU kernels not built here")

SAMPLINGS = [SamplingMeta(temperature=0.7, top_k=20, top_p=0.8), SamplingMeta(top_p=0.8), SamplingMeta(),
             SamplingMeta(temperature=0.0), SamplingMeta(min_p=0.1, top_k=50), SamplingMeta(temperature=1.3, top_k=5)]


def _batch(vocab: int, dtype: torch.dtype, seed: int, num_requests: int = 18):
    """Target logits and VerifyInputs whose drafts come from a q near p: a mix of accepts and rejects."""
    g = torch.Generator().manual_seed(seed)
    lengths = [int(n) for n in torch.randint(0, 8, (num_requests,), generator=g)]
    lengths[0], lengths[1] = 0, 7
    logits = torch.randn(sum(lengths) + num_requests, vocab, generator=g) * 2.5
    logits[torch.rand(logits.shape, generator=g) < 0.05] = float("-inf")  # p = 0 tokens
    inputs, row = [], 0
    for i, n in enumerate(lengths):
        rows = logits[row:row + n]  # [n, V]: p_1..p_n's logits
        q = torch.softmax(rows.nan_to_num(neginf=-5.0) * 1.5 + 0.3 * torch.randn(n, vocab, generator=g), dim=-1)
        drafts = torch.multinomial(q, 1, generator=g).squeeze(1) if n else torch.zeros(0, dtype=torch.long)
        kind = i % 4  # q as fp32, bf16, None (deterministic drafts), fp32 with q(d_1) = 0
        probs = [q, q.to(torch.bfloat16), None, q.clone()][kind]
        if kind == 3 and n:
            probs[0, drafts[0]] = 0.0
        if kind == 2 and n:
            drafts = rows.argmax(dim=-1)  # a good deterministic drafter: mostly accepted
            drafts[-1] = (drafts[-1] + 1) % vocab
        meta = SamplingMeta(**{**vars(SAMPLINGS[i % len(SAMPLINGS)]), "logprobs": 2 if i % 5 == 0 else None})
        inputs.append(VerifyInput(drafts.tolist(), probs, meta))
        row += n + 1
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
