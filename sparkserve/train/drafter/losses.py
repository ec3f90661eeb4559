"""Training forwards and losses of the three drafters, written against the serving modules (the same
``DSparkDraftModel.block_hidden`` and ``Eagle3DraftModel`` pieces the proposers run), so a trained
checkpoint computes at serving time exactly what it was trained to compute.

Every loss returns *sums* over its valid rows plus the matching weight sums; the trainer divides by
the weight sums all-reduced over ranks and micro-batches (DSPARK.md §1.6: each term is normalised by
its global weight sum), so data-parallel training equals single-process training on the same global
batch.

**DSpark / DFlash** (DSPARK.md §1.6, §2): rows with weight w_k = valid * exp(-k/gamma):
- CE of the (Markov-corrected) draft logits z_k against the hard label;
- TV-L1 = ||p_d - p_t||_1 with p_d = softmax(z_k), p_t = softmax(target logits at a + k), no temperature;
- confidence BCE-with-logits against the detached soft target clamp(1 - ||p_d - p_t||_1 / 2, 0, 1);
- total = ce_alpha * CE + l1_alpha * L1 + conf_alpha * Conf (DSpark 0.1 / 0.9 / 1.0; DFlash 1 / 0 / 0).

**Eagle3 test-time training** (DSPARK.md §3): step s = 0..T-1 feeds row i the token x[i+1+s] and the
previous step's output (step 0: fc(features_i)) at RoPE position i+s; its queries see step 0's keys at
rows <= i and every later step's key at row i (the chain that row i roots); row i of step s predicts
x[i+2+s] and is scored by soft CE against the target's distribution at position i+1+s, weight
decay**s, normalised per step by the number of valid rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sparkserve.spec_decode.drafters.common import attend
from sparkserve.train.drafter.blocks import Blocks, training_mask


@dataclass(frozen=True)
class LossWeights:
    ce: float = 0.1
    l1: float = 0.9
    conf: float = 1.0
    gamma: float = 4.0  # loss_decay_gamma

    @classmethod
    def for_method(cls, method: str, gamma: float = 4.0) -> "LossWeights":
        return cls(1.0, 0.0, 0.0, gamma) if method == "dflash" else cls(0.1, 0.9, 1.0, gamma)


def block_hidden(model, rotary, feats: torch.Tensor, blocks: Blocks) -> torch.Tensor:
    """Post-norm hidden states of every block row. feats [B, S, n*H] -> [B, N, K, H]."""
    b, n, k = blocks.input_ids.shape
    s = feats.shape[1]
    ctx = model.hidden_norm(model.fc(feats))  # [B, S, H], shared by all layers
    ctx_pos = torch.arange(s, device=feats.device).expand(b, s)
    x = model.embed_tokens(blocks.input_ids.flatten(1)).to(ctx.dtype)  # [B, N*K, H]
    mask = training_mask(blocks.anchors, s, k)  # [B, 1, N*K, S + N*K]

    def context(i):
        return model.layers[i].self_attn.key_value(ctx, ctx_pos, rotary)

    h = model.block_hidden(x, blocks.positions.flatten(1), rotary, context, [mask] * len(model.layers))
    return h.view(b, n, k, -1)


def dspark_loss(model, hidden: torch.Tensor, blocks: Blocks, target_logits: torch.Tensor | None,
                weights: torch.Tensor, lw: LossWeights) -> tuple[torch.Tensor, dict]:
    """hidden [B, N, K, H]; target_logits [B, S, V] (only needed for L1 / confidence); weights [B, N, K].

    Returns (weighted numerator sum_k w_k * (ce_a CE + l1_a L1 + conf_a Conf), stats) where stats
    holds detached sums: ce, l1, conf, weight, and per-position (correct, count) of argmax z == label.
    """
    sel = blocks.valid[:, :, 0]  # [B, N]: blocks with at least one row in the loss
    h = hidden[sel]  # [M, K, H]
    w = weights[sel]  # [M, K]
    labels, prev = blocks.labels[sel], blocks.prev_ids[sel]
    z = model.lm_head(h).float()  # [M, K, V]
    markov, conf_head = model.markov_head, model.confidence_head
    if markov is not None:
        z = markov.teacher_forced(z, h, prev)
    ce = F.cross_entropy(z.flatten(0, 1), labels.flatten(), reduction="none").view(w.shape)
    total = lw.ce * (w * ce).sum()
    stats = {"ce": float((w * ce).detach().sum()), "weight": float(w.sum())}
    need_target = lw.l1 > 0 or (conf_head is not None and lw.conf > 0)
    if need_target:
        rows = blocks.target_rows[sel]  # [M, K]
        batch = torch.arange(hidden.shape[0], device=h.device)[:, None, None].expand_as(blocks.target_rows)[sel]
        p_t = torch.softmax(target_logits[batch, rows].float(), dim=-1)  # [M, K, V]
        tv = (torch.softmax(z, dim=-1) - p_t).abs().sum(-1)  # [M, K]: ||p_d - p_t||_1
        total = total + lw.l1 * (w * tv).sum()
        stats["l1"] = float((w * tv).detach().sum())
        if conf_head is not None and lw.conf > 0:
            emb = markov.prev_embeddings(prev) if conf_head.with_markov else None
            logits = conf_head(h, emb)  # [M, K]
            soft = (1 - 0.5 * tv).clamp(0, 1).detach()
            bce = F.binary_cross_entropy_with_logits(logits, soft, reduction="none")
            total = total + lw.conf * (w * bce).sum()
            stats["conf"] = float((w * bce).detach().sum())
    valid = blocks.valid[sel]
    correct = (z.argmax(-1) == labels) & valid
    stats["correct"] = correct.sum(0).tolist()
    stats["count"] = valid.sum(0).tolist()
    return total, stats


def ttt_mask(seq_len: int, step: int, device=None) -> torch.Tensor:
    """Eagle3 TTT mask of step ``step``'s queries over [step-0 keys; step-1 keys; ...; step-s keys].

    bool [S, (step + 1) * S]: causal over step 0, the diagonal (same row) over every later step.
    """
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
    diag = torch.eye(seq_len, dtype=torch.bool, device=device)
    return torch.cat([causal] + [diag] * step, dim=1)


def shift_left(ids: torch.Tensor, n: int, fill: int = 0) -> torch.Tensor:
    """[B, S] -> out[:, i] = ids[:, i + n] (``fill`` past the end)."""
    out = torch.full_like(ids, fill)
    if n < ids.shape[1]:
        out[:, :ids.shape[1] - n] = ids[:, n:]
    return out


def ttt_steps(model, rotary, feats: torch.Tensor, input_ids: torch.Tensor, ttt_length: int):
    """Eagle3 test-time-training forward: yields (step, hidden [B, S, H]) for step = 0..T-1, where
    row i of step s is the chain rooted at position i after s + 1 draft steps (module docstring)."""
    b, s = input_ids.shape
    attn = model.layers[0].self_attn
    scale = model.config.model.head_dim ** -0.5
    hidden = model.fc(feats)  # [B, S, H]
    base_pos = torch.arange(s, device=feats.device).expand(b, s)
    keys, values = [], []
    for step in range(ttt_length):
        tokens = shift_left(input_ids, step + 1)  # row i reads x[i+1+step]
        pos = base_pos + step
        x = model.layer_input(tokens, hidden)  # [B, S, 2H]
        q = attn.query(x, pos, rotary)
        k, v = attn.key_value(x, pos, rotary)
        keys.append(k)
        values.append(v)
        mask = ttt_mask(s, step, feats.device)[None, None]
        out = attend(q, torch.cat(keys, 1), torch.cat(values, 1), mask, scale)
        hidden = model.finish(out, hidden)  # the next step's hidden input
        yield step, hidden


def eagle3_ttt_loss(model, rotary, feats: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor,
                    target_logits: torch.Tensor, ttt_length: int) -> tuple[list[torch.Tensor], dict]:
    """feats [B, S, n*H], input_ids / loss_mask [B, S], target_logits [B, S, V].

    Returns (per-step soft-CE sums [T] (tensors), stats with per-step valid counts and argmax matches).
    """
    s = input_ids.shape[1]
    sums, counts, correct = [], [], []
    for step, hidden in ttt_steps(model, rotary, feats, input_ids, ttt_length):
        valid = shift_left(loss_mask, step + 2).bool()  # predicted token x[i+2+step] carries loss
        if not bool(valid.any()):
            sums.append(hidden.sum() * 0.0)
            counts.append(0)
            correct.append(0)
            continue
        logits = model.logits(hidden[valid])  # [M, V] fp32
        rows = (torch.arange(s, device=feats.device) + step + 1).clamp(max=s - 1)  # target row i+1+step
        p_t = torch.softmax(target_logits[:, rows][valid].float(), dim=-1)
        sums.append(-(p_t * torch.log_softmax(logits, dim=-1)).sum())
        counts.append(int(valid.sum()))
        correct.append(int((logits.argmax(-1) == shift_left(input_ids, step + 2)[valid]).sum()))
    return sums, {"count": counts, "correct": correct}
