"""The distribution plain decoding samples from: temperature -> top-k -> top-p -> min-p.

``processed_logprobs`` is the one definition of that distribution. The sampler draws from it and
the speculative verifier scores drafts against it at every verify row (DSPARK.md §4: p must be the
target's *processed* distribution), so the two agree by construction. Rules, per row, in fp32:

- **greedy** (temperature < ``GREEDY_EPS``): one-hot at ``argmax(logits)`` (logprob 0 there, -inf
  elsewhere; ties -> lowest index, as ``torch.argmax``). The other parameters are ignored.
- **temperature** T: ``z = logits / T``.
- **top-k** (k in 1..V-1; k <= 0 or k >= V is off): keep tokens with ``z >=`` the k-th largest z.
  Tokens tied with the k-th value are kept too, so the kept set never depends on token order.
- **top-p** (p < 1; p = 1 is off): on the top-k survivors, renormalised, keep the smallest set of
  most probable tokens whose mass reaches p, plus every token tied with the least probable member
  of that set. Sort-based and exact except that a cumulative mass within ``TOP_P_TOL`` below p
  counts as reaching p (so a boundary that is exact in real arithmetic survives fp32 rounding).
- **min-p** (m > 0; 0 is off): keep tokens with ``prob >= m * max prob``. The max survives every
  filter and renormalisation keeps ratios, so this is ``z - max z >= log m``.
- The survivors are renormalised: ``log_softmax`` of z with dropped entries at -inf.

Every filter is a threshold on z, so the kept set is always ``{i : z_i >= t}`` for some t, and it
always contains the argmax. A filter costs nothing when no row uses it; top-k/top-p sort only the
rows that use them: ``topk`` of the k largest (plus ties) when every such row has a top-k, a full sort
only when some row uses top-p without top-k.
"""
from __future__ import annotations

import torch

GREEDY_EPS = 1e-5  # temperature below this is greedy (vLLM's _SAMPLING_EPS)
TOP_P_TOL = 1e-6  # cumulative mass this close below top_p counts as reaching it

_NEG_INF = float("-inf")


def is_greedy(temperature: torch.Tensor) -> torch.Tensor:
    """Which rows are greedy. ``temperature`` [N] -> bool [N]."""
    return temperature < GREEDY_EPS


def greedy_logprobs(logits: torch.Tensor) -> torch.Tensor:
    """One-hot logprobs at the argmax: logits [N, V] -> fp32 [N, V] (0 at argmax, -inf elsewhere)."""
    out = torch.full(logits.shape, _NEG_INF, dtype=torch.float32, device=logits.device)  # [N, V]
    return out.scatter_(1, logits.argmax(dim=-1, keepdim=True), 0.0)


def processed_logprobs(
    logits: torch.Tensor,  # [N, V], any float dtype
    temperature: torch.Tensor,  # [N] float
    top_k: torch.Tensor,  # [N] int, <= 0: off
    top_p: torch.Tensor,  # [N] float in (0, 1], 1: off
    min_p: torch.Tensor,  # [N] float in [0, 1], 0: off
) -> torch.Tensor:
    """fp32 log-probabilities [N, V] of the processed distribution (module docstring); dropped tokens are -inf."""
    device = logits.device
    temperature = temperature.to(device=device, dtype=torch.float32)
    greedy = is_greedy(temperature)  # [N]
    if bool(greedy.all()):
        return greedy_logprobs(logits)
    sampled = ~greedy  # [N]
    temp = torch.where(greedy, torch.ones_like(temperature), temperature)  # [N], no division by 0
    z = logits.float() / temp[:, None]  # [N, V], a fresh tensor we may edit in place
    z = _apply_top_k_top_p(z, top_k.to(device), top_p.to(device=device, dtype=torch.float32), sampled)
    z = _apply_min_p(z, min_p.to(device=device, dtype=torch.float32), sampled)
    logprobs = torch.log_softmax(z, dim=-1)  # [N, V]
    if bool(greedy.any()):
        logprobs[greedy] = greedy_logprobs(logits[greedy])
    return logprobs


def _apply_top_k_top_p(
    z: torch.Tensor,  # [N, V] tempered logits
    top_k: torch.Tensor,  # [N] int
    top_p: torch.Tensor,  # [N] fp32
    active: torch.Tensor,  # [N] bool: rows the filters may touch
) -> torch.Tensor:
    vocab = z.shape[1]
    use_k = active & (top_k > 0) & (top_k < vocab)  # [N]
    use_p = active & (top_p < 1.0)  # [N]
    rows = (use_k | use_p).nonzero().squeeze(1)  # [R]
    if rows.numel() == 0:
        return z
    zr = z[rows]  # [R, V]
    k = torch.where(use_k[rows], top_k[rows], vocab).long()  # [R]; V keeps everything
    row_use_p = use_p[rows]  # [R]
    any_p = bool(row_use_p.any())
    all_k = bool(use_k[rows].all())
    sorted_z = _sorted_head(zr, int(k.max()), full=any_p and not all_k)  # [R, m], descending
    thresh = sorted_z.gather(1, (k - 1)[:, None])  # [R, 1], the k-th largest z
    if any_p:
        if all_k:  # top-p reads only the top-k survivors: make sure ties with the k-th are all there
            survivors = int((zr >= thresh).sum(dim=-1).max())
            if survivors > sorted_z.shape[1]:
                sorted_z = _sorted_head(zr, survivors, full=False)
        sorted_z = sorted_z.masked_fill(sorted_z < thresh, _NEG_INF)  # top-k first
        sorted_probs = sorted_z.softmax(dim=-1)  # [R, m], renormalised over the top-k survivors
        cum = sorted_probs.cumsum(dim=-1)  # [R, m], non-decreasing
        cum_before = torch.cat([torch.zeros_like(cum[:, :1]), cum[:, :-1]], dim=1)  # [R, m]
        # Rows without top-p get a bound no mass reaches, so they keep everything.
        bound = torch.where(row_use_p, top_p[rows] - TOP_P_TOL, torch.full_like(top_p[rows], 2.0))  # [R]
        keep = cum_before < bound[:, None]  # [R, m], a prefix of the sorted order
        keep[:, 0] = True  # the most probable token always survives
        num_keep = keep.sum(dim=-1)  # [R]
        p_thresh = sorted_z.gather(1, (num_keep - 1)[:, None])  # [R, 1]; ties with it are kept
        thresh = torch.maximum(thresh, p_thresh)
    z[rows] = zr.masked_fill(zr < thresh, _NEG_INF)
    return z


def _sorted_head(zr: torch.Tensor, m: int, full: bool) -> torch.Tensor:
    """The m largest values of each row of zr [R, V] (all V when ``full``), descending. Top-p only
    reads the top-k survivors, so with a top-k on every row it never needs the full sort (8192-vocab
    rows: topk(20) is ~30x cheaper than a sort on this CPU)."""
    if full:
        return zr.sort(dim=-1, descending=True).values
    return zr.topk(m, dim=-1).values


def _apply_min_p(
    z: torch.Tensor,  # [N, V] tempered (and filtered) logits
    min_p: torch.Tensor,  # [N] fp32
    active: torch.Tensor,  # [N] bool
) -> torch.Tensor:
    use = active & (min_p > 0)  # [N]
    if not bool(use.any()):
        return z
    rows = use.nonzero().squeeze(1)  # [R]
    zr = z[rows]  # [R, V]
    z_max = zr.max(dim=-1, keepdim=True).values  # [R, 1]
    log_ratio = zr - z_max  # [R, V], log(p_i / p_max)
    z[rows] = zr.masked_fill(log_ratio < torch.log(min_p[rows])[:, None], _NEG_INF)
    return z
