"""Deferred ``Proposer.observe`` while drafting is off.

A feature-conditioned drafter must see every row the target processes (it keeps a context cache at
the target's slots), even on steps where the draft gate turned drafting off. Feeding it row by row
on those steps costs a few small kernels per step (about 7% of a plain decode step of the demo model
on a CPU); buffering the rows and feeding them in one call right before the next ``propose`` costs
one set of kernels per plain phase.

Equivalence: ``observe`` is row-wise (each row's context entry depends on that row only) and writes
to the row's slot, so observing the concatenation equals observing each step in order, except where
a slot was written twice in the buffered span (a rejected draft's position rewritten, a freed block
reused): the flush keeps only the newest row of each slot, which is what in-order writes leave.
"""
from __future__ import annotations

import torch

MAX_BUFFERED_ROWS = 4096  # flush earlier than the next propose once this many rows wait


class ObserveBuffer:
    def __init__(self, proposer, max_rows: int = MAX_BUFFERED_ROWS):
        self.proposer = proposer
        self.max_rows = max_rows
        self._parts: list[tuple[torch.Tensor, ...]] = []
        self._rows = 0

    def defer(self, features, input_ids, positions, slot_mapping, next_token_ids) -> None:
        if features is None or features.shape[0] == 0:
            return
        self._parts.append((features, input_ids, positions, slot_mapping, next_token_ids))
        self._rows += features.shape[0]
        if self._rows >= self.max_rows:
            self.flush()

    def flush(self) -> None:
        if not self._parts:
            return
        parts, self._parts, self._rows = self._parts, [], 0
        if len(parts) == 1:  # the drafting steps' case: nothing waited
            self.proposer.observe(*parts[0])
            return
        cols = [torch.cat(c) for c in zip(*parts)]  # features, input_ids, positions, slots, next ids
        keep = newest_row_per_slot(cols[3])
        self.proposer.observe(*(c[keep] for c in cols))

    def __len__(self) -> int:
        return self._rows


def newest_row_per_slot(slots: torch.Tensor) -> torch.Tensor:
    """Indices (ascending) of the last row of each distinct slot in ``slots`` [N] (negative slots are
    padding rows and all kept: the proposer drops them)."""
    n = slots.shape[0]
    rows = torch.arange(n, device=slots.device)
    uniq, inverse = torch.unique(slots, return_inverse=True)
    last = torch.full((uniq.shape[0],), -1, dtype=torch.long, device=slots.device)
    last.scatter_reduce_(0, inverse, rows, reduce="amax")
    keep = torch.zeros(n, dtype=torch.bool, device=slots.device)
    keep[last] = True
    keep |= slots < 0
    return keep.nonzero().squeeze(1)
