"""DSpark's sequential heads: Markov heads (vanilla, gated, RNN) and the confidence head.

A draft block's backbone produces, per row k, a post-``norm`` hidden state ``h_k`` [H] and base
logits ``b_k`` [V]. The Markov head adds a low-rank transition bias that depends on the previous
token of the block (``prev_0`` = the anchor, ``prev_k`` = draft k-1), so drafting is sequential over
k and batched over requests (DSPARK.md §1.5 step 5; paper eq. 4-6)::

    e_k   = W1[prev_k]                                   # markov_w1: nn.Embedding(V, r)
    vanilla: u_k = e_k
    gated:   u_k = e_k * sigmoid(gate_proj([h_k; e_k]))   # gate_proj: Linear(H + r -> r), bias
    rnn:     y_k = [s_{k-1}; e_k; h_k]; g, c, o = split(joint_proj(y_k), r)   # Linear(2r + H -> 3r)
             s_k = sigmoid(g) * s_{k-1} + (1 - sigmoid(g)) * tanh(c);  s_{-1} = 0
             u_k = tanh(o)
    z_k = b_k + W2 u_k                                   # markov_w2: Linear(r -> V), no bias

The confidence head predicts P(draft k accepted | drafts < k accepted):
``c_k = sigmoid(proj([h_k; e_k]))`` with ``proj``: Linear(H + r -> 1), or ``sigmoid(proj(h_k))``
(Linear(H -> 1)) when ``confidence_head_with_markov`` is off (DSPARK.md §1.5 step 7).

Choices where the sources are silent [unverified against DeepSpec's markov_head.py, which is not in
our corpus]: the gated and RNN heads read the same post-norm ``h_k`` as the confidence head; the
RNN's ``joint_proj`` output is split in the paper's order (gate, candidate, output) and its input
concatenated in the paper's order (state, W1[prev], h). Each head offers ``step`` (one k for R
requests at once, for inference) and ``teacher_forced`` (all k at once from given previous tokens,
for training); both compute the same function.
"""
from __future__ import annotations

import torch
from torch import nn

MARKOV_HEAD_TYPES = ("vanilla", "gated", "rnn")


class MarkovHead(nn.Module):
    """The vanilla head: z_k = b_k + W2 W1[prev_k]. Subclasses change ``_update``."""

    def __init__(self, vocab_size: int, hidden_size: int, rank: int):
        super().__init__()
        self.rank = rank
        self.markov_w1 = nn.Embedding(vocab_size, rank)
        self.markov_w2 = nn.Linear(rank, vocab_size, bias=False)

    def prev_embeddings(self, prev_ids: torch.Tensor) -> torch.Tensor:
        """W1[prev]: prev_ids [...] -> [..., r]."""
        return self.markov_w1(prev_ids)

    def init_state(self, num_rows: int, device, dtype) -> torch.Tensor | None:
        """Recurrent state before step 0 (None: the head is memoryless)."""
        return None

    def _update(self, hidden: torch.Tensor, emb: torch.Tensor, state):
        """(hidden [..., H], W1[prev] [..., r], state) -> (u [..., r], new state)."""
        return emb, state

    def step(self, base_logits: torch.Tensor, hidden: torch.Tensor, prev_ids: torch.Tensor, state=None):
        """One block position for R requests.

        base_logits [R, V], hidden [R, H], prev_ids [R] -> (fp32 logits z [R, V], new state).
        """
        emb = self.prev_embeddings(prev_ids).to(hidden.dtype)  # [R, r]
        u, state = self._update(hidden, emb, state)
        return base_logits.float() + self.markov_w2(u).float(), state

    def teacher_forced(self, base_logits: torch.Tensor, hidden: torch.Tensor, prev_ids: torch.Tensor) -> torch.Tensor:
        """All K positions at once from known previous tokens (training).

        base_logits [N, K, V], hidden [N, K, H], prev_ids [N, K] (prev_ids[:, 0] = anchor) -> fp32 [N, K, V].
        """
        emb = self.prev_embeddings(prev_ids).to(hidden.dtype)  # [N, K, r]
        u, _ = self._update(hidden, emb, None)
        return base_logits.float() + self.markov_w2(u).float()


class GatedMarkovHead(MarkovHead):
    """u_k = W1[prev_k] * sigmoid(gate_proj([h_k; W1[prev_k]]))."""

    def __init__(self, vocab_size: int, hidden_size: int, rank: int):
        super().__init__(vocab_size, hidden_size, rank)
        self.gate_proj = nn.Linear(hidden_size + rank, rank, bias=True)

    def _update(self, hidden, emb, state):
        gate = torch.sigmoid(self.gate_proj(torch.cat([hidden, emb], dim=-1)))  # [..., r]
        return emb * gate, state


class RNNMarkovHead(MarkovHead):
    """A GRU-like state over the block (paper eq. 6); ``joint_proj`` gives gate, candidate, output."""

    def __init__(self, vocab_size: int, hidden_size: int, rank: int):
        super().__init__(vocab_size, hidden_size, rank)
        self.joint_proj = nn.Linear(2 * rank + hidden_size, 3 * rank, bias=True)

    def init_state(self, num_rows: int, device, dtype) -> torch.Tensor:
        return torch.zeros(num_rows, self.rank, device=device, dtype=dtype)  # [R, r]

    def _update(self, hidden, emb, state):
        if state is None:
            state = self.init_state(hidden.shape[0], hidden.device, hidden.dtype)
        gate, cand, out = self.joint_proj(torch.cat([state, emb, hidden], dim=-1)).split(self.rank, dim=-1)
        gate = torch.sigmoid(gate)
        return torch.tanh(out), gate * state + (1 - gate) * torch.tanh(cand)

    def teacher_forced(self, base_logits, hidden, prev_ids):
        # the recurrence is sequential in k by definition; the inputs are all known, so no sampling
        state = None
        out = []
        for k in range(hidden.shape[1]):
            z, state = self.step(base_logits[:, k], hidden[:, k], prev_ids[:, k], state)
            out.append(z)
        return torch.stack(out, dim=1)  # [N, K, V]


_HEADS = {"vanilla": MarkovHead, "gated": GatedMarkovHead, "rnn": RNNMarkovHead}


def build_markov_head(head_type: str, vocab_size: int, hidden_size: int, rank: int) -> MarkovHead | None:
    """The configured head, or None when ``rank`` is 0 (DFlash: independent drafts)."""
    if rank <= 0:
        return None
    if head_type not in _HEADS:
        raise ValueError(f"unknown markov_head_type {head_type!r}; expected one of {list(_HEADS)}")
    return _HEADS[head_type](vocab_size, hidden_size, rank)


class ConfidenceHead(nn.Module):
    """c_k logit = proj([h_k; W1[prev_k]]) (or proj(h_k) when ``markov_rank`` is 0)."""

    def __init__(self, hidden_size: int, markov_rank: int = 0):
        super().__init__()
        self.with_markov = markov_rank > 0
        self.proj = nn.Linear(hidden_size + markov_rank, 1, bias=True)

    def forward(self, hidden: torch.Tensor, prev_emb: torch.Tensor | None = None) -> torch.Tensor:
        """hidden [..., H], prev_emb [..., r] (required iff with_markov) -> fp32 logits [...]."""
        if self.with_markov:
            if prev_emb is None:
                raise ValueError("this confidence head reads W1[prev]; pass prev_emb")
            hidden = torch.cat([hidden, prev_emb.to(hidden.dtype)], dim=-1)
        return self.proj(hidden).squeeze(-1).float()
