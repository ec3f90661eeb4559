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
    paged: PagedBatch
    query_start: list[int]  # [num_seqs + 1] row offsets of each sequence


def flatten(plan: StepPlan, block_size: int, device: torch.device) -> FlatBatch:
    ids: list[int] = []
    positions: list[int] = []
    query_start = [0]
    query_lens, seq_lens, tables = [], [], []
    for s in plan.seqs:
        n = len(s.token_ids)
        ids.extend(s.token_ids)
        positions.extend(range(s.num_computed_tokens, s.num_computed_tokens + n))
        query_start.append(query_start[-1] + n)
        query_lens.append(n)
        seq_lens.append(s.num_computed_tokens + n)
        tables.append(s.block_ids)
    return FlatBatch(
        input_ids=torch.tensor(ids, dtype=torch.long, device=device),
        positions=torch.tensor(positions, dtype=torch.long, device=device),
        paged=PagedBatch(query_lens, seq_lens, tables, block_size),
        query_start=query_start,
    )
