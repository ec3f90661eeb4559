"""Prompt-lookup (n-gram) drafting: no model, no state.

For a committed sequence t_0..t_{N-1} (ending with the anchor), try n = ``max_ngram`` down to
``min_ngram``: find the most recent earlier occurrence of the last n tokens, i.e. the largest
j < N-1 with t_{j-n+1..j} == t_{N-n..N-1}, and propose the tokens that followed it,
t_{j+1..j+gamma} (fewer if the sequence ends first). No match: an empty block. Drafts are
deterministic (``probs=None``: verified as one-hot q) and carry no confidences.

One numpy pass per request and step: candidates are the earlier positions holding the anchor
token; each is scored by how many of the preceding tokens also match (up to ``max_ngram``).
"""
from __future__ import annotations

import numpy as np

from sparkserve.spec_decode.types import DraftBlock, ProposeRequest


def ngram_lookup(token_ids, num_tokens: int, max_ngram: int = 4, min_ngram: int = 2) -> list[int]:
    """The continuation of the longest (then most recent) earlier match of the sequence's suffix."""
    seq = np.asarray(token_ids, dtype=np.int64)
    n_seq = seq.shape[0]
    if num_tokens <= 0 or n_seq < min_ngram + 1:
        return []
    cand = np.flatnonzero(seq[:-1] == seq[-1])  # earlier positions j holding the last token
    if cand.size == 0:
        return []
    match = np.ones(cand.size, dtype=np.int64)  # suffix length matched so far, per candidate
    alive = np.ones(cand.size, dtype=bool)
    for d in range(1, min(max_ngram, n_seq - 1)):
        ok = alive & (cand - d >= 0)
        ok[ok] = seq[cand[ok] - d] == seq[n_seq - 1 - d]
        alive = ok
        match += alive
        if not alive.any():
            break
    for n in range(min(max_ngram, n_seq - 1), min_ngram - 1, -1):
        hits = cand[match >= n]
        if hits.size:
            j = int(hits[-1])  # most recent
            return seq[j + 1:j + 1 + num_tokens].tolist()
    return []


class NgramProposer:
    """``Proposer`` without a model. ``num_speculative_tokens`` = gamma."""

    target_layer_ids: tuple[int, ...] = ()
    needs_history = True  # reads ProposeRequest.token_ids (the scheduler only fills them when asked)
    has_confidence = False  # deterministic lookups carry no confidences
    confidence_temperatures: list[float] | None = None

    def __init__(self, num_speculative_tokens: int = 4, max_ngram: int = 4, min_ngram: int = 2):
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram ({min_ngram}) <= max_ngram ({max_ngram})")
        if num_speculative_tokens < 1:
            raise ValueError(f"num_speculative_tokens must be >= 1, got {num_speculative_tokens}")
        self.num_speculative_tokens = num_speculative_tokens
        self.max_ngram, self.min_ngram = max_ngram, min_ngram

    def observe(self, features, input_ids, positions, slot_mapping, next_token_ids) -> None:
        return None

    def propose(self, requests: list[ProposeRequest]) -> list[DraftBlock]:
        if any(r.token_ids is None for r in requests):
            raise ValueError("n-gram drafting needs ProposeRequest.token_ids (the committed sequence); "
                             "the scheduler fills them when the proposer's needs_history is True")
        return [DraftBlock(ngram_lookup(r.token_ids, min(r.max_draft_tokens, self.num_speculative_tokens),
                                        self.max_ngram, self.min_ngram)) for r in requests]
