"""verify()'s accept/emit step on the native kernel (``csrc/sampling_verify.cpp``,
``torch.ops.sparkserve.verify_block``).

Same rules as the torch path in ``verify.py``, per request in one call: accept d_k iff
u_k * q_k(d_k) < p_k(d_k) (greedy: iff d_k is the argmax), then the recovered token from
max(p - q, 0) (p where that is all zero) or the bonus token from p_{l+1}. The kernel processes only
the rows it reads: the rows up to the first rejection and the emitting row.

Randomness is drawn here, in Python, exactly as the torch path draws it (verify.py's docstring):
first ``draw_uniforms(generator, l)`` for every stochastic request with l > 0, in batch order, then
one fp64 uniform per stochastic request, in batch order. Generator states afterwards are therefore
identical with native on and off, and so are the outputs up to ``sample.native``'s rounding note.
"""
from __future__ import annotations

from typing import Sequence

import torch

from sparkserve.sample import draw_uniforms
from sparkserve.sample import native as native_sampling
from sparkserve.sample.sampler import draw_uniform_doubles

_Q_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def verify_native(target_logits: torch.Tensor, inputs: Sequence) -> tuple[list[int], list[int]]:
    """(num_accepted [B], emitted recovered/bonus token [B]) for ``VerifyInput``s over CPU logits
    [sum(l_i + 1), V] (fp32/bf16/fp16). Inputs are already checked by ``verify``."""
    if not inputs:
        return [], []
    cpu = torch.device("cpu")
    stochastic = [not inp.is_greedy for inp in inputs]  # [B]
    u_accept = []  # per request [l_i] fp32; zeros where nothing is drawn
    for inp, stoch in zip(inputs, stochastic):
        n = inp.num_draft_tokens
        if stoch and n > 0:
            u_accept.append(draw_uniforms(inp.generator, n).to(cpu))
        elif n > 0:
            u_accept.append(torch.zeros(n))
    u_final = torch.zeros(len(inputs), dtype=torch.float64)  # [B]
    stoch_ids = [i for i, s in enumerate(stochastic) if s]
    if stoch_ids:
        u_final[stoch_ids] = draw_uniform_doubles([inputs[i].generator for i in stoch_ids], cpu).to(cpu)
    metas = [inp.sampling for inp in inputs]
    params = native_sampling.row_params([m.temperature if s else 0.0 for m, s in zip(metas, stochastic)],
                                        [m.top_k for m in metas], [m.top_p for m in metas],
                                        [m.min_p for m in metas])
    draft_ids = torch.tensor([t for inp in inputs for t in inp.draft_token_ids], dtype=torch.int64)  # [D]
    draft_probs = [_q_tensor(inp.draft_probs) if s else None for inp, s in zip(inputs, stochastic)]
    out = torch.ops.sparkserve.verify_block(
        target_logits.contiguous(), *params,
        torch.tensor([inp.num_draft_tokens for inp in inputs], dtype=torch.int64),
        draft_ids, draft_probs,
        torch.cat(u_accept) if u_accept else torch.zeros(0), u_final,
    )  # [B, 2]
    num_accepted, tokens = out.t().tolist()
    return num_accepted, tokens


def _q_tensor(draft_probs: torch.Tensor | None) -> torch.Tensor | None:
    """The draft distribution as the kernel reads it: CPU, contiguous, fp32/bf16/fp16 (others to fp32,
    which is what the torch path reads them as)."""
    if draft_probs is None:
        return None
    q = draft_probs.to("cpu")
    if q.dtype not in _Q_DTYPES:
        q = q.float()
    return q.contiguous()
