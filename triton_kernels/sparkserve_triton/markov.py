"""DSpark's Markov refinement step: z = b + W2 u for one block position of R requests.

Reference: ``sparkserve.spec_decode.heads.MarkovHead.step`` (and its gated/RNN subclasses). The vanilla
head's u is W1[prev]: the kernel gathers it itself, so a step is one launch reading b [R, V], W2 [V, r]
and R rows of W1. The gated and RNN heads compute their r-wide u (and state) in torch first; the
V-wide part is the same launch. As in the reference, W2 u is rounded to the head's dtype before it is
added to the fp32 base logits.

One program per (tile of BLOCK_V vocabulary rows, tile of BLOCK_R requests).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from sparkserve_triton import check_device
from sparkserve_triton.paged_attention import precision_for

BLOCK_R = 16
BLOCK_V = 64


@triton.jit
def _markov_kernel(base_ptr, u_ptr, prev_ptr, w2_ptr, out_ptr, num_rows, vocab, rank,
                   stride_base, stride_u, stride_w2, stride_out,
                   GATHER: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
                   PRECISION: tl.constexpr):
    vt = tl.program_id(0)
    rt = tl.program_id(1)
    rows = rt * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = vt * BLOCK_V + tl.arange(0, BLOCK_V)
    row_ok = rows < num_rows
    col_ok = cols < vocab
    if GATHER:  # u = W1[prev]
        u_rows = tl.load(prev_ptr + rows, mask=row_ok, other=0).to(tl.int64)
    else:
        u_rows = rows.to(tl.int64)
    acc = tl.zeros([BLOCK_R, BLOCK_V], tl.float32)
    for k0 in range(0, rank, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_ok = k < rank
        u = tl.load(u_ptr + u_rows[:, None] * stride_u + k[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w2_ptr + cols.to(tl.int64)[:, None] * stride_w2 + k[None, :], mask=col_ok[:, None] & k_ok[None, :],
                    other=0.0)
        if PRECISION == "ieee":
            acc += tl.dot(u.to(tl.float32), tl.trans(w.to(tl.float32)), input_precision="ieee")
        else:
            acc += tl.dot(u.to(w.dtype), tl.trans(w))
    mask = row_ok[:, None] & col_ok[None, :]
    base = tl.load(base_ptr + rows.to(tl.int64)[:, None] * stride_base + cols[None, :], mask=mask, other=0.0)
    z = base.to(tl.float32) + acc.to(w2_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + rows.to(tl.int64)[:, None] * stride_out + cols[None, :], z, mask=mask)


def markov_logits(base_logits: torch.Tensor, w2: torch.Tensor, u: torch.Tensor | None = None,
                  w1: torch.Tensor | None = None, prev_ids: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 z [R, V] = base_logits [R, V] + W2 [V, r] @ u, with u [R, r] given, or W1 [V, r] rows at
    prev_ids [R] (the vanilla head)."""
    check_device(base_logits, w2)
    num_rows, vocab = base_logits.shape
    rank = w2.shape[1]
    gather = u is None
    src = (w1 if gather else u).to(w2.dtype)
    if src.stride(-1) != 1:
        src = src.contiguous()
    w2 = w2 if w2.stride(1) == 1 else w2.contiguous()
    base = base_logits if base_logits.stride(1) == 1 else base_logits.contiguous()
    prev = prev_ids.to(device=base.device, dtype=torch.int64) if gather else torch.zeros(1, dtype=torch.int64,
                                                                                         device=base.device)
    out = torch.empty(num_rows, vocab, dtype=torch.float32, device=base.device)
    if num_rows:
        grid = (triton.cdiv(vocab, BLOCK_V), triton.cdiv(num_rows, BLOCK_R))
        _markov_kernel[grid](base, src, prev, w2, out, num_rows, vocab, rank, base.stride(0), src.stride(0),
                             w2.stride(0), out.stride(0), GATHER=gather, BLOCK_R=BLOCK_R, BLOCK_V=BLOCK_V,
                             BLOCK_K=max(16, min(64, triton.next_power_of_2(rank))),
                             PRECISION=precision_for(w2.dtype))
    return out


def markov_step(head, base_logits: torch.Tensor, hidden: torch.Tensor, prev_ids: torch.Tensor, state=None):
    """``MarkovHead.step`` with the V-wide part in the kernel: base_logits [R, V], hidden [R, H],
    prev_ids [R] -> (fp32 logits z [R, V], new state)."""
    from sparkserve.spec_decode.heads import MarkovHead

    w2 = head.markov_w2.weight  # [V, r]
    if type(head) is MarkovHead:  # vanilla: u = W1[prev], gathered in the kernel
        return markov_logits(base_logits, w2, w1=head.markov_w1.weight, prev_ids=prev_ids), state
    emb = head.prev_embeddings(prev_ids).to(hidden.dtype)  # [R, r]
    u, state = head._update(hidden, emb, state)
    return markov_logits(base_logits, w2, u=u), state
