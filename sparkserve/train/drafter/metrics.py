"""Speculation metrics over verify rounds (DSPARK.md §1.8-1.9).

A *round* is one verification of a draft block: ``verified`` = l drafts sent to the target,
``accepted`` = a of them accepted (a <= l), and, for drafters with a confidence head, the raw
confidence logits z_0..z_{g-1} of the block. Position k (0-based) of a round is *labelled* when
k < l; its label is y_k = [a > k] (drafts 0..k all accepted), and its prediction is the cumulative
product P_k = prod_{i<=k} sigmoid(z_i / T_i) (T = 1 before calibration).

- tau = sum(a + 1) / #rounds: tokens emitted per verify round (the bonus/residual token counts; a round
  ended by an accepted stop token counts a, with l = a = its position + 1, as DeepSpec records it).
- cond@k = #(a > k) / #(a >= k and l > k): the share of rounds that reached draft k and verified it
  which accepted it (the paper's position-wise conditional acceptance).
- ECE: 20 equal-width bins, sum_b n_b |mean P_b - mean y_b| / n. AUROC: the probability that a
  positive outranks a negative (ties count 1/2, exact ranks).
"""
from __future__ import annotations

import torch

NUM_BINS = 20


def tau(emitted: torch.Tensor) -> float:
    """Mean tokens per verify round; emitted [R] = a + 1 (a when a stop token ended the round)."""
    return float(emitted.sum()) / max(int(emitted.numel()), 1)


def cond_accept(verified: torch.Tensor, accepted: torch.Tensor, gamma: int) -> tuple[list[float | None], list[int]]:
    """(cond@k for k < gamma (None where no round reached k), denominators)."""
    out, den = [], []
    for k in range(gamma):
        reach = (accepted >= k) & (verified > k)
        n = int(reach.sum())
        den.append(n)
        out.append(float((accepted[reach] > k).sum()) / n if n else None)
    return out, den


def prefix_labels(verified: torch.Tensor, accepted: torch.Tensor, gamma: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(y [R, gamma] float, labelled [R, gamma] bool) with y_k = [a > k], labelled = k < l."""
    k = torch.arange(gamma)
    return (accepted[:, None] > k).float(), verified[:, None] > k


def cumulative_confidence(logits: torch.Tensor, temperatures=None) -> torch.Tensor:
    """logits [R, gamma] -> P [R, gamma] = cumprod sigmoid(z_k / T_k)."""
    if temperatures is not None:
        t = torch.ones(logits.shape[1], dtype=logits.dtype)
        t[:len(temperatures)] = torch.tensor(list(temperatures)[:logits.shape[1]], dtype=logits.dtype)
        logits = logits / t
    return torch.sigmoid(logits).cumprod(dim=1)


def ece(pred: torch.Tensor, label: torch.Tensor, bins: int = NUM_BINS) -> float:
    """Expected calibration error of predictions [N] in [0, 1] against 0/1 labels [N]."""
    return float(ece_batched(pred[None], label, bins)[0]) if pred.numel() else float("nan")


def ece_batched(pred: torch.Tensor, label: torch.Tensor, bins: int = NUM_BINS) -> torch.Tensor:
    """pred [G, N] (G candidate calibrations of the same N rows), label [N] -> ECE [G] (fp64)."""
    g, n = pred.shape
    pred, label = pred.double(), label.double()
    idx = (pred * bins).long().clamp(0, bins - 1)  # [G, N]
    psum = torch.zeros(g, bins, dtype=torch.float64).scatter_add_(1, idx, pred)
    ysum = torch.zeros(g, bins, dtype=torch.float64).scatter_add_(1, idx, label.expand(g, n))
    return (psum - ysum).abs().sum(1) / max(n, 1)  # sum_b n_b |mean_p - mean_y| / n


def auroc(pred: torch.Tensor, label: torch.Tensor) -> float:
    """Mann-Whitney AUROC with average ranks for ties; nan when one class is missing."""
    pos, n = int(label.sum()), int(label.numel())
    if pos == 0 or pos == n:
        return float("nan")
    order = pred.double().argsort()
    sorted_pred = pred.double()[order]
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[order] = torch.arange(1, n + 1, dtype=torch.float64)
    _, inverse, counts = torch.unique_consecutive(sorted_pred, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    mean_rank = ends - (counts.double() - 1) / 2  # average rank of each tie group
    ranks[order] = mean_rank[inverse]
    rank_sum = ranks[label.bool()].sum()
    return float((rank_sum - pos * (pos + 1) / 2) / (pos * (n - pos)))


def reliability(pred: torch.Tensor, label: torch.Tensor, bins: int = NUM_BINS) -> dict:
    """Per-bin mean prediction, mean label and count (bins with no rows omitted)."""
    idx = (pred.double() * bins).long().clamp(0, bins - 1)
    out = {"mean_pred": [], "mean_label": [], "count": []}
    for b in range(bins):
        sel = idx == b
        c = int(sel.sum())
        if c:
            out["mean_pred"].append(float(pred[sel].double().mean()))
            out["mean_label"].append(float(label[sel].double().mean()))
            out["count"].append(c)
    return out


def calibration_summary(logits: torch.Tensor, verified: torch.Tensor, accepted: torch.Tensor,
                        temperatures=None) -> dict:
    """Per position k: ECE, AUROC, Brier, mean prediction, mean label, count; plus count-weighted totals."""
    gamma = logits.shape[1]
    p = cumulative_confidence(logits, temperatures)
    y, lab = prefix_labels(verified, accepted, gamma)
    per = []
    for k in range(gamma):
        pk, yk = p[:, k][lab[:, k]], y[:, k][lab[:, k]]
        per.append({"ece": ece(pk, yk), "auroc": auroc(pk, yk), "count": int(pk.numel()),
                    "brier": float(((pk - yk) ** 2).mean()) if pk.numel() else float("nan"),
                    "mean_pred": float(pk.mean()) if pk.numel() else float("nan"),
                    "mean_label": float(yk.mean()) if pk.numel() else float("nan")})
    total = sum(r["count"] for r in per)
    weighted = {}
    for m in ("ece", "auroc", "brier"):
        rows = [r for r in per if r["count"] and r[m] == r[m]]  # positions where the metric is defined
        n = sum(r["count"] for r in rows)
        weighted[m] = sum(r[m] * r["count"] for r in rows) / n if n else float("nan")
    pooled_p, pooled_y = p[lab], y[lab]
    return {"per_position": per, "weighted": weighted, "count": total,
            "pooled": {"ece": ece(pooled_p, pooled_y), "auroc": auroc(pooled_p, pooled_y)}}
