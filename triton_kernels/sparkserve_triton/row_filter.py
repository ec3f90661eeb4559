"""Row helpers shared by the sampling and verification kernels: the processed distribution of one row.

The rules are ``sparkserve.sample.processing.processed_logprobs``'s (temperature -> top-k -> top-p ->
min-p, renormalised), computed without a sort: every filter keeps ``{i : z_i >= t}``, so each cut is a
threshold found by bisection over the fp32 bit patterns (ordered as ints by ``float_key``), 16 keys per
pass over the row:

- top-k: the largest t with ``#{z >= t} >= k``, i.e. the k-th largest z (ties with it kept);
- top-p: the smallest t among the top-k survivors with ``mass{z > t} / mass{top-k} < top_p - TOP_P_TOL``,
  which is the z of the last token the sorted reference keeps (ties with it kept);
- min-p: ``z - max z >= log(min_p)`` (log taken on the host, as the reference does in torch).

Sums run in another order than torch's, so a top-p cut within fp32 rounding of its bound may fall on
the other side (the same caveat as the native CPU kernels, ``sample/native.py``).
"""
from __future__ import annotations

import triton
import triton.language as tl

FANOUT: tl.constexpr = 16  # keys tested per pass
KEY_ROUNDS: tl.constexpr = 9  # passes: 16^9 > 2^33, the widest key interval


@triton.jit
def float_key(x):
    """fp32 -> int32, ordered as the floats are (-0 just below +0; NaNs outside [-inf, inf])."""
    b = x.to(tl.int32, bitcast=True)
    return b ^ ((b >> 31) & 0x7FFFFFFF)


@triton.jit
def key_float(key):
    """The inverse of ``float_key`` (key: int32)."""
    return (key ^ ((key >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True)


@triton.jit
def load_z(row_ptr, offs, vocab, temperature):
    """Tempered logits z = logits / T (fp32, rounded division as torch's); -inf past the row's end."""
    x = tl.load(row_ptr + offs, mask=offs < vocab, other=float("-inf")).to(tl.float32)
    return tl.math.div_rn(x, tl.full(x.shape, 1.0, tl.float32) * temperature)


@triton.jit
def row_argmax(row_ptr, vocab, BLOCK_V: tl.constexpr):
    """(max, argmax) of the raw row; ties -> the lowest index, as torch.argmax."""
    best = tl.full([], float("-inf"), tl.float32)
    best_idx = tl.full([], 0, tl.int32)
    for start in range(0, vocab, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        x = tl.load(row_ptr + offs, mask=offs < vocab, other=float("-inf")).to(tl.float32)
        tile_max = tl.max(x, axis=0)
        tile_idx = tl.min(tl.where(x == tile_max, offs, vocab), axis=0).to(tl.int32)
        better = tile_max > best
        best_idx = tl.where(better, tile_idx, best_idx)
        best = tl.where(better, tile_max, best)
    return best, best_idx


@triton.jit
def _candidates(lo, hi, FANOUT: tl.constexpr):
    """FANOUT int64 keys spread over (lo, hi], each > lo (so lo itself is never evaluated)."""
    j = tl.arange(0, FANOUT).to(tl.int64) + 1
    return tl.minimum(tl.maximum(lo + (hi - lo) * j // FANOUT, lo + 1), hi)


@triton.jit
def _counts_at_least(row_ptr, vocab, temperature, t, BLOCK_V: tl.constexpr):
    """#{z >= t_j} for every candidate t [F] -> int32 [F]."""
    n = tl.zeros(t.shape, tl.int32)
    for start in range(0, vocab, BLOCK_V):
        z = load_z(row_ptr, start + tl.arange(0, BLOCK_V), vocab, temperature)
        n += tl.sum((z[None, :] >= t[:, None]).to(tl.int32), axis=1)
    return n


@triton.jit
def _masses_above(row_ptr, vocab, temperature, z_max, t_floor, t, BLOCK_V: tl.constexpr):
    """sum of exp(z - z_max) over z > t_j and z >= t_floor, for every candidate t [F] -> fp32 [F]."""
    s = tl.zeros(t.shape, tl.float32)
    for start in range(0, vocab, BLOCK_V):
        z = load_z(row_ptr, start + tl.arange(0, BLOCK_V), vocab, temperature)
        e = tl.where(z >= t_floor, tl.exp(z - z_max), 0.0)
        s += tl.sum(tl.where(z[None, :] > t[:, None], e[None, :], 0.0), axis=1)
    return s


@triton.jit
def row_thresholds(row_ptr, vocab, temperature, top_k, top_p_bound, log_min_p, BLOCK_V: tl.constexpr):
    """(z_max, t, log_norm) of a sampled row: token i is kept iff z_i >= t and z_i - z_max >= log_min_p;
    its processed probability is exp(z_i - z_max - log_norm). ``top_p_bound`` = top_p - TOP_P_TOL (>= 1:
    off); top_k outside 1..vocab-1 is off; log_min_p = -inf is off. Each bisection round tests FANOUT
    keys in one pass, shrinking the key interval FANOUT-fold."""
    z_max = tl.full([], float("-inf"), tl.float32)
    for start in range(0, vocab, BLOCK_V):
        z_max = tl.maximum(z_max, tl.max(load_z(row_ptr, start + tl.arange(0, BLOCK_V), vocab, temperature), axis=0))
    t_k = tl.full([], float("-inf"), tl.float32)
    if (top_k > 0) & (top_k < vocab):  # the largest t with #{z >= t} >= k
        lo = float_key(tl.full([], float("-inf"), tl.float32)).to(tl.int64)  # #{z >= -inf} = vocab >= k
        hi = float_key(z_max).to(tl.int64) + 1  # nothing is above z_max
        for _ in range(KEY_ROUNDS):
            c = _candidates(lo, hi, FANOUT)
            ok = _counts_at_least(row_ptr, vocab, temperature, key_float(c.to(tl.int32)), BLOCK_V) >= top_k
            lo = tl.maximum(lo, tl.max(tl.where(ok, c, lo), axis=0))
            hi = tl.minimum(hi, tl.min(tl.where(ok, hi, c), axis=0))
        t_k = key_float(lo.to(tl.int32))
    t = t_k
    if top_p_bound < 1.0:  # the smallest t >= t_k with mass{z > t} / mass{z >= t_k} < bound
        mass_k = tl.sum(_masses_above(row_ptr, vocab, temperature, z_max, t_k,
                                      tl.full([1], float("-inf"), tl.float32), BLOCK_V), axis=0)
        lo = float_key(t_k).to(tl.int64) - 1
        hi = float_key(z_max).to(tl.int64)  # taken as true: the top token always survives
        for _ in range(KEY_ROUNDS):
            c = _candidates(lo, hi, FANOUT)
            mass = _masses_above(row_ptr, vocab, temperature, z_max, t_k, key_float(c.to(tl.int32)), BLOCK_V)
            ok = mass / mass_k < top_p_bound
            hi = tl.minimum(hi, tl.min(tl.where(ok, c, hi), axis=0))
            lo = tl.maximum(lo, tl.max(tl.where(ok, lo, c), axis=0))
        t = key_float(hi.to(tl.int32))
    total = tl.full([], 0.0, tl.float32)
    for start in range(0, vocab, BLOCK_V):
        z = load_z(row_ptr, start + tl.arange(0, BLOCK_V), vocab, temperature)
        total += tl.sum(tl.where((z >= t) & (z - z_max >= log_min_p), tl.exp(z - z_max), 0.0), axis=0)
    return z_max, t, tl.log(total)


@triton.jit
def kept_probs(z, z_max, t, log_min_p, log_norm):
    """Processed probabilities of a tile of tempered logits z (0 where a filter drops the token)."""
    keep = (z >= t) & (z - z_max >= log_min_p)
    return tl.where(keep, tl.exp(z - z_max - log_norm), 0.0)


def block_v(vocab: int) -> int:
    """Tile width over the vocabulary."""
    return min(512, triton.next_power_of_2(max(vocab, 16)))
