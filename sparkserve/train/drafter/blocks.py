"""DSpark / DFlash training blocks (DSPARK.md §1.6): anchors, block rows, labels and the mask.

For a sequence of S tokens with assistant ``loss_mask``:

- **Anchors**: candidates are positions p <= S-2 with ``loss_mask[p]`` and ``loss_mask[p+1]``; up to
  ``num_anchors`` are drawn uniformly without replacement and sorted. Missing slots are dummy blocks
  at anchor 0 with ``keep`` False (zero loss weight).
- **Block j** holds ids ``[x[a_j], M x (K-1)]`` at positions a_j..a_j+K-1 (K = block size,
  M = mask token). Row k predicts ``x[a_j+k+1]`` (the anchor row predicts too, DeepSpec layout);
  its Markov "previous token" is ``x[a_j+k]`` (teacher forcing) and the target distribution that
  scores it comes from the target's logits at position a_j+k.
- ``valid[j, k]`` = label inside the sequence AND ``loss_mask[label]`` AND the block is kept, with a
  cumulative product over k (a row after an invalid one never counts).
- **Mask**: a query of block j sees the context keys at positions < a_j (strictly before the anchor:
  at serving time the anchor's own target feature does not exist yet) and the keys of its own
  block, bidirectionally. Blocks never see each other.

All functions are pure tensor code (no model), batched over sequences ([B, ...]).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def anchor_candidates(loss_mask: torch.Tensor) -> torch.Tensor:
    """loss_mask [S] (0/1) -> candidate anchor positions [C] (long, ascending)."""
    m = loss_mask.bool()
    ok = m[:-1] & m[1:]  # [S-1]: p and p+1 both carry loss
    return ok.nonzero().squeeze(1)


def sample_anchors(loss_mask: torch.Tensor, num_anchors: int, generator: torch.Generator) -> torch.Tensor:
    """Up to ``num_anchors`` distinct candidate positions, uniformly without replacement, sorted. [n]."""
    cand = anchor_candidates(loss_mask)
    if cand.numel() > num_anchors:
        pick = torch.randperm(cand.numel(), generator=generator)[:num_anchors]
        cand = cand[pick.sort().values]
    return cand


def pad_anchors(anchor_lists: list[torch.Tensor], num: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence anchor lists -> (anchors [B, N] long, keep [B, N] bool); padding = anchor 0, not kept.
    N = ``num`` or the longest list (at least 1)."""
    n = num if num is not None else max([len(a) for a in anchor_lists] + [1])
    anchors = torch.zeros(len(anchor_lists), n, dtype=torch.long)
    keep = torch.zeros(len(anchor_lists), n, dtype=torch.bool)
    for b, a in enumerate(anchor_lists):
        anchors[b, :len(a)] = a
        keep[b, :len(a)] = True
    return anchors, keep


@dataclass
class Blocks:
    """The training blocks of a batch; all [B, N, K] unless noted."""

    input_ids: torch.Tensor  # block ids: [x[a], M, ..., M]
    positions: torch.Tensor  # a + k
    labels: torch.Tensor  # x[a + k + 1] (0 where outside the sequence)
    prev_ids: torch.Tensor  # x[a + k]: the Markov head's teacher-forced previous token
    target_rows: torch.Tensor  # a + k clamped to S - 1: the target logits row that scores row k
    valid: torch.Tensor  # bool, cumulative over k
    anchors: torch.Tensor  # [B, N]
    keep: torch.Tensor  # [B, N]

    @property
    def block_size(self) -> int:
        return self.input_ids.shape[2]


def build_blocks(input_ids: torch.Tensor, loss_mask: torch.Tensor, anchors: torch.Tensor, keep: torch.Tensor,
                 block_size: int, mask_token_id: int) -> Blocks:
    """input_ids, loss_mask [B, S]; anchors, keep [B, N] -> Blocks (module docstring)."""
    b, s = input_ids.shape
    k = torch.arange(block_size, device=input_ids.device)
    pos = anchors[:, :, None] + k  # [B, N, K]
    gather = lambda t, idx: t.gather(1, idx.clamp(max=s - 1).flatten(1)).view(idx.shape)  # noqa: E731
    label_pos = pos + 1
    inside = label_pos < s
    labels = torch.where(inside, gather(input_ids, label_pos), torch.zeros_like(label_pos))
    valid = inside & gather(loss_mask, label_pos).bool() & keep[:, :, None]
    valid = valid.long().cumprod(dim=2).bool()
    ids = torch.full_like(pos, mask_token_id)
    ids[:, :, 0] = gather(input_ids, anchors)
    return Blocks(ids, pos, labels, gather(input_ids, pos), pos.clamp(max=s - 1), valid, anchors, keep)


def loss_weights(valid: torch.Tensor, gamma: float) -> torch.Tensor:
    """w[..., k] = valid * exp(-k / gamma) (DeepSpec: k = 0..K-1, gamma = loss_decay_gamma = 4)."""
    k = torch.arange(valid.shape[-1], dtype=torch.float32, device=valid.device)
    return valid.float() * torch.exp(-k / gamma)


def training_mask(anchors: torch.Tensor, seq_len: int, block_size: int) -> torch.Tensor:
    """Attention mask of the N*K block queries over [context (S); blocks (N*K)] keys.

    anchors [B, N] -> bool [B, 1, N*K, S + N*K] (True = attend): query row (j, k) sees context key
    p iff p < a_j, and block key (j', k') iff j' == j.
    """
    b, n = anchors.shape
    dev = anchors.device
    ctx = torch.arange(seq_len, device=dev)[None, None, :] < anchors[:, :, None]  # [B, N, S]
    ctx = ctx.repeat_interleave(block_size, dim=1)  # [B, N*K, S]
    block_of = torch.arange(n, device=dev).repeat_interleave(block_size)  # [N*K]
    own = (block_of[:, None] == block_of[None, :]).expand(b, -1, -1)  # [B, N*K, N*K]
    return torch.cat([ctx, own], dim=2)[:, None]
