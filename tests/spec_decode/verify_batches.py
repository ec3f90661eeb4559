"""Synthetic verify batches shared by the backend-equality tests (native and Triton verifiers vs torch)."""
from __future__ import annotations

import torch

from sparkserve.spec_decode.verify import VerifyInput
from sparkserve.step import SamplingMeta

SAMPLINGS = [SamplingMeta(temperature=0.7, top_k=20, top_p=0.8), SamplingMeta(top_p=0.8), SamplingMeta(),
             SamplingMeta(temperature=0.0), SamplingMeta(min_p=0.1, top_k=50), SamplingMeta(temperature=1.3, top_k=5)]


def mixed_batch(vocab: int, seed: int, num_requests: int, max_drafts: int, logprobs_every: int = 0):
    """fp32 target logits [sum(l + 1), V] and VerifyInputs whose drafts come from a q near p (a mix of accepts
    and rejects): l in 0..max_drafts (request 0 has none, request 1 the most), tokens with p = 0, q as fp32,
    bf16, None (deterministic drafts) and fp32 with q(d_1) = 0 in turn, the samplings above in turn, and
    logprobs on every ``logprobs_every``-th request (0: none)."""
    g = torch.Generator().manual_seed(seed)
    lengths = [int(n) for n in torch.randint(0, max_drafts + 1, (num_requests,), generator=g)]
    lengths[0], lengths[1] = 0, max_drafts
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
        logprobs = 2 if logprobs_every and i % logprobs_every == 0 else None
        meta = SamplingMeta(**{**vars(SAMPLINGS[i % len(SAMPLINGS)]), "logprobs": logprobs})
        inputs.append(VerifyInput(drafts.tolist(), probs, meta))
        row += n + 1
    return logits, inputs
