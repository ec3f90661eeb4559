"""Fused block verification: accept/reject every request's drafts and draw its recovered or bonus token.

Reference: ``sparkserve.spec_decode.verify.verify(..., backend="torch")`` (rules and randomness in its
module docstring). Request b owns logits rows ``row_start[b] .. row_start[b] + l_b`` ([anchor, d1..dl]);
draft k is accepted iff ``u_k * q_k(d_k) < p_k(d_k)`` (greedy: iff d_k is the raw row's argmax), up to
the first rejection; then one inverse-CDF draw with the request's fp64 uniform from max(p - q, 0) at
the rejected row (p where that is all zero), or from p at the bonus row. p is the processed
distribution (``row_filter``); q is the draft's row of ``draft_probs`` or one-hot at d_k.

``verify`` draws the uniforms exactly as the torch verifier does (per stochastic request, in batch
order: l uniforms; then one fp64 uniform each), so per-request seeds give the same tokens on every
backend and leave the generators in the same state. One program per request; rows after a rejection
are never read.
"""
from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from sparkserve_triton import check_device
from sparkserve_triton.row_filter import block_v, kept_probs, load_z, row_argmax, row_thresholds
from sparkserve_triton.sampling import GREEDY_EPS, draw_row, filter_params


@triton.jit
def _verify_kernel(logits_ptr, row_start_ptr, num_drafts_ptr, draft_start_ptr, q_mode_ptr, draft_ids_ptr,
                   draft_probs_ptr, u_accept_ptr, u_final_ptr, temperature_ptr, top_k_ptr, top_p_bound_ptr,
                   log_min_p_ptr, num_accepted_ptr, token_ptr, vocab, stride_row, stride_q,
                   BLOCK_V: tl.constexpr):
    req = tl.program_id(0)
    row0 = tl.load(row_start_ptr + req)
    num_drafts = tl.load(num_drafts_ptr + req)
    d0 = tl.load(draft_start_ptr + req)
    q_mode = tl.load(q_mode_ptr + req)  # 1: one-hot drafts, 2: draft_probs rows
    temperature = tl.load(temperature_ptr + req)
    top_k = tl.load(top_k_ptr + req)
    bound = tl.load(top_p_bound_ptr + req)
    log_min_p = tl.load(log_min_p_ptr + req)
    greedy = temperature < 1e-5  # GREEDY_EPS
    a = tl.full([], 0, tl.int32)
    go = num_drafts > 0
    while go:
        row_ptr = logits_ptr + (row0 + a).to(tl.int64) * stride_row
        draft = tl.load(draft_ids_ptr + d0 + a).to(tl.int32)
        if greedy:
            _, best = row_argmax(row_ptr, vocab, BLOCK_V)
            accept = best == draft
        else:
            z_max, t, log_norm = row_thresholds(row_ptr, vocab, temperature, top_k, bound, log_min_p, BLOCK_V)
            p_d = tl.sum(kept_probs(load_z(row_ptr, draft + tl.arange(0, 1), vocab, temperature), z_max, t,
                                    log_min_p, log_norm), axis=0)
            q_d = tl.full([], 1.0, tl.float32)
            if q_mode == 2:
                q_d = tl.load(draft_probs_ptr + (d0 + a).to(tl.int64) * stride_q + draft).to(tl.float32)
            u = tl.load(u_accept_ptr + d0 + a)
            accept = (q_d > 0) & (u * q_d < p_d)
        a += accept.to(tl.int32)
        go = accept & (a < num_drafts)
    row_ptr = logits_ptr + (row0 + a).to(tl.int64) * stride_row
    if greedy:
        _, token = row_argmax(row_ptr, vocab, BLOCK_V)
    else:
        z_max, t, log_norm = row_thresholds(row_ptr, vocab, temperature, top_k, bound, log_min_p, BLOCK_V)
        rejected = a < num_drafts
        mode = tl.where(rejected, q_mode, 0)  # the bonus row draws from p itself
        draft = tl.load(draft_ids_ptr + d0 + a, mask=rejected, other=0).to(tl.int32)
        q_row = draft_probs_ptr + (d0 + a).to(tl.int64) * stride_q
        token = draw_row(row_ptr, q_row, mode, draft, vocab, temperature, z_max, t, log_min_p, log_norm,
                         tl.load(u_final_ptr + req), BLOCK_V)
    tl.store(num_accepted_ptr + req, a.to(tl.int64))
    tl.store(token_ptr + req, token.to(tl.int64))


def verify_blocks(target_logits: torch.Tensor, num_drafts: torch.Tensor, draft_ids: torch.Tensor,
                  draft_probs: torch.Tensor | None, has_probs: torch.Tensor, u_accept: torch.Tensor,
                  u_final: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                  min_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel on tensors. target_logits [sum(l_b + 1), V]; num_drafts [B]; draft_ids [D] (D = sum l_b);
    draft_probs [D, V] (rows of requests without probs are ignored) or None; has_probs [B] bool;
    u_accept fp32 [D] (ignored on greedy requests); u_final fp64 [B]; per-request sampling parameters [B]
    -> (num_accepted int64 [B], emitted token int64 [B])."""
    check_device(target_logits)
    device = target_logits.device
    num_req, vocab = num_drafts.shape[0], target_logits.shape[1]
    logits = target_logits if target_logits.stride(1) == 1 else target_logits.contiguous()
    lengths = num_drafts.to(device=device, dtype=torch.int64)
    draft_start = torch.cumsum(lengths, 0) - lengths  # [B]
    row_start = draft_start + torch.arange(num_req, device=device)  # [B]: l_b + 1 rows each
    q_mode = torch.where(has_probs.to(device), 2, 1).to(torch.int32)
    if draft_probs is None or draft_probs.numel() == 0:
        draft_probs = torch.zeros(1, vocab, dtype=torch.float32, device=device)
    elif draft_probs.stride(1) != 1:
        draft_probs = draft_probs.contiguous()
    num_accepted = torch.empty(num_req, dtype=torch.int64, device=device)
    tokens = torch.empty(num_req, dtype=torch.int64, device=device)
    if num_req:
        _verify_kernel[(num_req,)](
            logits, row_start, lengths, draft_start, q_mode, _nonempty(draft_ids.to(device=device, dtype=torch.int64)),
            draft_probs.to(device), _nonempty(u_accept.to(device=device, dtype=torch.float32)),
            u_final.to(device=device, dtype=torch.float64), *filter_params(temperature, top_k, top_p, min_p, device),
            num_accepted, tokens, vocab, logits.stride(0), draft_probs.stride(0), BLOCK_V=block_v(vocab))
    return num_accepted, tokens


def _nonempty(t: torch.Tensor) -> torch.Tensor:
    return t if t.numel() else torch.zeros(1, dtype=t.dtype, device=t.device)


def verify(target_logits: torch.Tensor, inputs: Sequence) -> tuple[list[int], list[int]]:
    """``spec_decode.verify.VerifyInput``s -> (num_accepted [B], recovered/bonus token [B]), drawing the
    uniforms from each request's generator in the torch verifier's order (module docstring)."""
    from sparkserve.sample import draw_uniforms
    from sparkserve.sample.sampler import draw_uniform_doubles

    device = target_logits.device
    stochastic = [inp.sampling.temperature >= GREEDY_EPS for inp in inputs]  # [B]
    u_accept = [draw_uniforms(inp.generator, inp.num_draft_tokens).to(device) if s and inp.num_draft_tokens
                else torch.zeros(inp.num_draft_tokens, device=device) for inp, s in zip(inputs, stochastic)]
    u_final = torch.zeros(len(inputs), dtype=torch.float64, device=device)
    stoch_ids = [i for i, s in enumerate(stochastic) if s]
    if stoch_ids:
        u_final[stoch_ids] = draw_uniform_doubles([inputs[i].generator for i in stoch_ids], device).to(device)
    vocab = target_logits.shape[1]
    with_probs = [inp.draft_probs is not None and s for inp, s in zip(inputs, stochastic)]  # [B]
    probs = None  # [D, V]: the kernel reads only the rows of requests with probs (others: left unset)
    if any(with_probs):
        probs = torch.cat([inp.draft_probs.to(device=device, dtype=torch.float32) if w
                           else torch.empty(inp.num_draft_tokens, vocab, device=device)
                           for inp, w in zip(inputs, with_probs)])
    has_probs = torch.tensor(with_probs, dtype=torch.bool)
    metas = [inp.sampling for inp in inputs]
    num_accepted, tokens = verify_blocks(
        target_logits, torch.tensor([inp.num_draft_tokens for inp in inputs]),
        torch.tensor([t for inp in inputs for t in inp.draft_token_ids], dtype=torch.int64),
        probs, has_probs, torch.cat(u_accept) if u_accept else
        torch.zeros(0), u_final, torch.tensor([m.temperature for m in metas], dtype=torch.float32),
        torch.tensor([m.top_k for m in metas]), torch.tensor([m.top_p for m in metas]),
        torch.tensor([m.min_p for m in metas]))
    return num_accepted.tolist(), tokens.tolist()
