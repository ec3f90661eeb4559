"""Reference paged attention in plain torch (CPU and any device).

Sequences are split into a decode group (query length 1) and a multi-token group (prefill chunks,
verification blocks). Each group is padded to a rectangle once per step; every layer then gathers
its keys/values from the paged cache with one index and runs one SDPA call with a boolean mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sparkserve.attention.base import PagedBatch


@dataclass
class _Group:
    """One padded rectangle of sequences."""

    query_index: torch.Tensor  # [B, max_q] rows of the flat batch (padding -> 0)
    query_valid: torch.Tensor  # [B, max_q] bool
    kv_slots: torch.Tensor  # [B, max_kv] cache slots (padding -> 0)
    mask: torch.Tensor  # [B, 1, max_q, max_kv] bool, True = attend
    out_rows: torch.Tensor  # [n_valid] flat rows produced, in query_index[query_valid] order


@dataclass
class TorchAttentionMetadata:
    slot_mapping: torch.Tensor  # [num_tokens] cache slot each new token writes
    groups: list[_Group]
    num_tokens: int


def _build_group(seqs: list[int], batch: PagedBatch, starts: list[int], device) -> _Group:
    bs = batch.block_size
    max_q = max(batch.query_lens[i] for i in seqs)
    max_kv = max(batch.seq_lens[i] for i in seqs)
    qi = torch.zeros(len(seqs), max_q, dtype=torch.long)
    qv = torch.zeros(len(seqs), max_q, dtype=torch.bool)
    slots = torch.zeros(len(seqs), max_kv, dtype=torch.long)
    mask = torch.zeros(len(seqs), 1, max_q, max_kv, dtype=torch.bool)
    kv_pos = torch.arange(max_kv)
    for row, i in enumerate(seqs):
        ql, sl = batch.query_lens[i], batch.seq_lens[i]
        qi[row, :ql] = torch.arange(starts[i], starts[i] + ql)
        qv[row, :ql] = True
        table = torch.tensor(batch.block_tables[i], dtype=torch.long)
        pos = kv_pos[:sl]
        slots[row, :sl] = table[pos // bs] * bs + pos % bs
        q_pos = torch.arange(sl - ql, sl).unsqueeze(1)  # [ql, 1]
        mask[row, 0, :ql, :sl] = kv_pos[:sl].unsqueeze(0) <= q_pos
        mask[row, 0, ql:, 0] = True  # padded query rows attend to one key (avoids NaN); discarded
    return _Group(qi.to(device), qv.to(device), slots.to(device), mask.to(device), qi[qv].to(device))


class TorchBackend:
    name = "torch"

    def build_metadata(self, batch: PagedBatch, device: torch.device) -> TorchAttentionMetadata:
        starts, total = [], 0
        slot_mapping = []
        bs = batch.block_size
        for ql, sl, table in zip(batch.query_lens, batch.seq_lens, batch.block_tables):
            starts.append(total)
            total += ql
            for pos in range(sl - ql, sl):
                slot_mapping.append(table[pos // bs] * bs + pos % bs)
        decode = [i for i, ql in enumerate(batch.query_lens) if ql == 1]
        multi = [i for i, ql in enumerate(batch.query_lens) if ql > 1]
        groups = [_build_group(g, batch, starts, device) for g in (decode, multi) if g]
        return TorchAttentionMetadata(torch.tensor(slot_mapping, dtype=torch.long, device=device), groups, total)

    def forward(self, q, k, v, k_cache, v_cache, metadata: TorchAttentionMetadata, scale: float) -> torch.Tensor:
        num_kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
        k_flat = k_cache.view(-1, num_kv_heads, head_dim)
        v_flat = v_cache.view(-1, num_kv_heads, head_dim)
        k_flat[metadata.slot_mapping] = k.to(k_flat.dtype)
        v_flat[metadata.slot_mapping] = v.to(v_flat.dtype)
        out = torch.empty_like(q)
        for g in metadata.groups:
            qg = q[g.query_index].transpose(1, 2)  # [B, Hq, max_q, D]
            kg = k_flat[g.kv_slots].transpose(1, 2).to(q.dtype)  # [B, Hkv, max_kv, D]
            vg = v_flat[g.kv_slots].transpose(1, 2).to(q.dtype)
            og = torch.nn.functional.scaled_dot_product_attention(
                qg, kg, vg, attn_mask=g.mask, scale=scale, enable_gqa=kg.shape[1] != qg.shape[1])
            out[g.out_rows] = og.transpose(1, 2)[g.query_valid]
        return out
