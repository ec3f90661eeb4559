"""Flatten a StepPlan into the tensors one forward needs."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sparkserve.attention.base import PagedBatch
from sparkserve.step import StepPlan


@dataclass
class FlatBatch:
    input_ids: torch.Tensor  # [num_tokens]
    positions: torch.Tensor  # [num_tokens]
    slot_mapping: torch.Tensor  # [num_tokens] paged-cache slot of each token
    paged: PagedBatch
    query_start: list[int]  # [num_seqs + 1] row offsets of each sequence


def flatten(plan: StepPlan, block_size: int, device: torch.device) -> FlatBatch:
    ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    query_start = [0]
    query_lens, seq_lens, tables = [], [], []
    for s in plan.seqs:
        n, start, table = len(s.token_ids), s.num_computed_tokens, s.block_ids
        ids.extend(s.token_ids)
        pos = range(start, start + n)
        positions.extend(pos)
        slots.extend(table[p // block_size] * block_size + p % block_size for p in pos)
        query_start.append(query_start[-1] + n)
        query_lens.append(n)
        seq_lens.append(start + n)
        tables.append(table)
    return FlatBatch(
        input_ids=torch.tensor(ids, dtype=torch.long, device=device),
        positions=torch.tensor(positions, dtype=torch.long, device=device),
        slot_mapping=torch.tensor(slots, dtype=torch.long, device=device),
        paged=PagedBatch(query_lens, seq_lens, tables, block_size, slots),
        query_start=query_start,
    )
