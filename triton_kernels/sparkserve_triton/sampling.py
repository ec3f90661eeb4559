"""Sampling: one token per row from the processed distribution (temperature, top-k, top-p, min-p).

Reference: ``sparkserve.sample.processing.processed_logprobs`` then
``sparkserve.sample.sampler.draw_indices_with_uniforms`` (the inverse-CDF draw with one fp64 uniform per
row); greedy rows (temperature < GREEDY_EPS) take the argmax (lowest index on ties). The uniforms come
from the caller, drawn from the requests' generators exactly as the torch sampler draws them, so a
seeded request gets the same stream on every backend.

One program per row: the thresholds (``row_filter``), then two passes for the draw (the fp64 total,
then the scan for the first cumulative weight above u * total).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from sparkserve_triton import check_device
from sparkserve_triton.row_filter import block_v, kept_probs, load_z, row_argmax, row_thresholds

GREEDY_EPS = 1e-5  # sparkserve.sample.processing.GREEDY_EPS
TOP_P_TOL = 1e-6  # sparkserve.sample.processing.TOP_P_TOL


@triton.jit
def draw_row(row_ptr, q_ptr, q_mode, q_token, vocab, temperature, z_max, t, log_min_p, log_norm, u,
             BLOCK_V: tl.constexpr):
    """Inverse-CDF draw with uniform u (fp64) from weights w = max(p - q, 0) (p where those are all 0).
    q_mode 0: q = 0 (plain p); 1: q = one-hot at q_token; 2: q is the fp32 row at q_ptr."""
    total = tl.full([], 0.0, tl.float64)
    total_p = tl.full([], 0.0, tl.float64)
    for start in range(0, vocab, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        p = kept_probs(load_z(row_ptr, offs, vocab, temperature), z_max, t, log_min_p, log_norm)
        w = _residual(p, offs, q_ptr, q_mode, q_token, vocab)
        total += tl.sum(w.to(tl.float64), axis=0)
        total_p += tl.sum(p.to(tl.float64), axis=0)
    use_p = total <= 0.0  # the residual is all zero (p == q): fall back to p
    target = u * tl.where(use_p, total_p, total)
    running = tl.full([], 0.0, tl.float64)
    first = tl.full([], 0, tl.int32) + vocab
    last_positive = tl.full([], -1, tl.int32)
    for start in range(0, vocab, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        p = kept_probs(load_z(row_ptr, offs, vocab, temperature), z_max, t, log_min_p, log_norm)
        w = tl.where(use_p, p, _residual(p, offs, q_ptr, q_mode, q_token, vocab)).to(tl.float64)
        cum = tl.cumsum(w, axis=0) + running
        first = tl.minimum(first, tl.min(tl.where(cum > target, offs, vocab), axis=0).to(tl.int32))
        last_positive = tl.maximum(last_positive, tl.max(tl.where(w > 0, offs, -1), axis=0).to(tl.int32))
        running += tl.sum(w, axis=0)
    return tl.minimum(first, last_positive)  # guards target == total after rounding


@triton.jit
def _residual(p, offs, q_ptr, q_mode, q_token, vocab):
    q = tl.zeros(p.shape, tl.float32)
    if q_mode == 1:
        q = tl.where(offs == q_token, 1.0, 0.0)
    elif q_mode == 2:
        q = tl.load(q_ptr + offs, mask=offs < vocab, other=0.0).to(tl.float32)
    return tl.maximum(p - q, 0.0)


@triton.jit
def _sample_kernel(logits_ptr, temperature_ptr, top_k_ptr, top_p_bound_ptr, log_min_p_ptr, uniforms_ptr, out_ptr,
                   probs_ptr, vocab, stride_row, WRITE_PROBS: tl.constexpr, BLOCK_V: tl.constexpr):
    row = tl.program_id(0)
    row_ptr = logits_ptr + row.to(tl.int64) * stride_row
    temperature = tl.load(temperature_ptr + row)
    if temperature < 1e-5:  # GREEDY_EPS
        _, token = row_argmax(row_ptr, vocab, BLOCK_V)
    else:
        log_min_p = tl.load(log_min_p_ptr + row)
        z_max, t, log_norm = row_thresholds(row_ptr, vocab, temperature, tl.load(top_k_ptr + row),
                                            tl.load(top_p_bound_ptr + row), log_min_p, BLOCK_V)
        token = draw_row(row_ptr, row_ptr, 0, 0, vocab, temperature, z_max, t, log_min_p, log_norm,
                         tl.load(uniforms_ptr + row), BLOCK_V)
        if WRITE_PROBS:
            for start in range(0, vocab, BLOCK_V):
                offs = start + tl.arange(0, BLOCK_V)
                p = kept_probs(load_z(row_ptr, offs, vocab, temperature), z_max, t, log_min_p, log_norm)
                tl.store(probs_ptr + row.to(tl.int64) * vocab + offs, p, mask=offs < vocab)
    tl.store(out_ptr + row, token.to(tl.int64))


def filter_params(temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor,
                  device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernels' per-row parameters: temperature fp32, top_k int64, top-p bound (top_p - TOP_P_TOL, or 2
    when off) fp32, log(min_p) fp32 (-inf when off, taken with torch.log as the reference does)."""
    temperature = temperature.to(device=device, dtype=torch.float32).contiguous()
    top_p = top_p.to(device=device, dtype=torch.float32)
    bound = torch.where(top_p < 1.0, top_p - TOP_P_TOL, torch.full_like(top_p, 2.0)).contiguous()
    min_p = min_p.to(device=device, dtype=torch.float32)
    log_min_p = torch.where(min_p > 0, torch.log(min_p), torch.full_like(min_p, float("-inf"))).contiguous()
    return temperature, top_k.to(device=device, dtype=torch.int64).contiguous(), bound, log_min_p


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
           min_p: torch.Tensor, uniforms: torch.Tensor, return_probs: bool = False):
    """logits [N, V] (fp32/bf16/fp16); per-row parameters [N] (``SamplingTensors`` fields); uniforms fp64 [N]
    (ignored on greedy rows) -> int64 [N] token ids, and with ``return_probs`` the processed fp32
    probabilities [N, V] of the sampled rows (greedy rows: zeros)."""
    check_device(logits)
    num_rows, vocab = logits.shape
    logits = logits if logits.stride(1) == 1 else logits.contiguous()
    params = filter_params(temperature, top_k, top_p, min_p, logits.device)
    out = torch.empty(num_rows, dtype=torch.int64, device=logits.device)
    probs = torch.zeros(num_rows if return_probs else 1, vocab if return_probs else 1, dtype=torch.float32,
                        device=logits.device)
    if num_rows:
        _sample_kernel[(num_rows,)](logits, *params, uniforms.to(device=logits.device, dtype=torch.float64),
                                    out, probs, vocab, logits.stride(0), WRITE_PROBS=return_probs,
                                    BLOCK_V=block_v(vocab))
    return (out, probs) if return_probs else out
