"""Reference paged attention in plain torch (CPU and any device).

Sequences are split into a decode group (query length 1) and a multi-token group (prefill chunks,
verification blocks). Each group is padded to a rectangle once per step; every layer then gathers
its keys/values from the paged cache with one index and runs one SDPA call with a boolean mask.
Drafting (``build_draft_metadata`` / ``forward_draft``) works the same way, in ``torch_draft.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sparkserve.attention import torch_draft
from sparkserve.attention.base import DraftBatch, DraftMask, PagedBatch


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


def padded_block_table(tables: list[list[int]]) -> torch.Tensor:
    """[B, max_blocks] int64, padded with the null block 0."""
    width = max(len(t) for t in tables)
    return torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.long)


def _build_group(seqs: list[int], batch: PagedBatch, starts: list[int], device) -> _Group:
    """Vectorised: a handful of tensor ops per step, whatever the number of sequences."""
    bs = batch.block_size
    q_len = torch.tensor([batch.query_lens[i] for i in seqs])  # [B]
    kv_len = torch.tensor([batch.seq_lens[i] for i in seqs])  # [B]
    start = torch.tensor([starts[i] for i in seqs])  # [B]
    max_q, max_kv = int(q_len.max()), int(kv_len.max())
    q_ar, kv_ar = torch.arange(max_q), torch.arange(max_kv)
    q_valid = q_ar[None] < q_len[:, None]  # [B, max_q]
    q_index = (start[:, None] + q_ar[None]) * q_valid
    kv_valid = kv_ar[None] < kv_len[:, None]  # [B, max_kv]
    table = padded_block_table([batch.block_tables[i] for i in seqs])
    blocks = table.gather(1, (kv_ar // bs).clamp(max=table.shape[1] - 1).expand(len(seqs), -1))
    slots = (blocks * bs + kv_ar % bs) * kv_valid
    q_pos = (kv_len - q_len)[:, None] + q_ar[None]  # [B, max_q] absolute positions
    mask = (kv_ar[None, None] <= q_pos[:, :, None]) & kv_valid[:, None]
    mask |= (~q_valid)[:, :, None] & (kv_ar == 0)[None, None]  # padded rows see one key: no NaN
    out_rows = q_index[q_valid]
    return _Group(q_index.to(device), q_valid.to(device), slots.to(device), mask[:, None].to(device),
                  out_rows.to(device))


class TorchBackend:
    name = "torch"

    def build_metadata(self, batch: PagedBatch, device: torch.device) -> TorchAttentionMetadata:
        starts, total = [], 0
        for ql in batch.query_lens:
            starts.append(total)
            total += ql
        decode = [i for i, ql in enumerate(batch.query_lens) if ql == 1]
        multi = [i for i, ql in enumerate(batch.query_lens) if ql > 1]
        groups = [_build_group(g, batch, starts, device) for g in (decode, multi) if g]
        slots = torch.tensor(batch.slot_mapping, dtype=torch.long, device=device)
        return TorchAttentionMetadata(slots, groups, total)

    def forward(self, q, k, v, k_cache, v_cache, metadata: TorchAttentionMetadata, scale: float) -> torch.Tensor:
        num_kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
        self.write_kv(k, v, k_cache, v_cache, metadata.slot_mapping)
        k_flat = k_cache.view(-1, num_kv_heads, head_dim)
        v_flat = v_cache.view(-1, num_kv_heads, head_dim)
        out = torch.empty_like(q)
        for g in metadata.groups:
            qg = q[g.query_index].transpose(1, 2)  # [B, Hq, max_q, D]
            kg = k_flat[g.kv_slots].transpose(1, 2).to(q.dtype)  # [B, Hkv, max_kv, D]
            vg = v_flat[g.kv_slots].transpose(1, 2).to(q.dtype)
            og = torch.nn.functional.scaled_dot_product_attention(
                qg, kg, vg, attn_mask=g.mask, scale=scale, enable_gqa=kg.shape[1] != qg.shape[1])
            out[g.out_rows] = og.transpose(1, 2)[g.query_valid]
        return out

    def write_kv(self, k, v, k_cache, v_cache, slot_mapping: torch.Tensor) -> None:
        k_cache.view(-1, *k_cache.shape[2:])[slot_mapping] = k.to(k_cache.dtype)
        v_cache.view(-1, *v_cache.shape[2:])[slot_mapping] = v.to(v_cache.dtype)

    def build_draft_metadata(self, batch: DraftBatch, device: torch.device) -> torch_draft.TorchDraftMetadata:
        return torch_draft.build_draft_metadata(batch, device)

    def forward_draft(self, q, k, v, k_cache, v_cache, metadata: torch_draft.TorchDraftMetadata, scale: float,
                      mask: DraftMask) -> torch.Tensor:
        return torch_draft.forward_draft(q, k, v, k_cache, v_cache, metadata, scale, mask)
