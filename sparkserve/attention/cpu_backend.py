"""Native CPU paged attention (``csrc/attention.cpp``): K/V read in place through the block table.

``build_metadata`` turns a step's host lists into four small int tensors once; every layer's
``forward`` is then one native call that writes the new K/V at their slots and attends all rows
(decode, prefill chunks and verify blocks mixed) causally within their sequences: no gather of
the cache, no padding, no mask. Drafting is native too: ``forward_draft`` attends each request's
cached context through its table plus the fresh rows straight from ``k``/``v`` (never written),
masked as ``DraftMask`` says. fp32 or bf16 caches and activations, fp32 softmax and accumulation.

Needs the native kernels (``sparkserve.native.available()``); ``registry.get_backend`` only hands
this backend out when they are there (``auto`` falls back to the torch backend otherwise).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sparkserve.attention.base import DraftBatch, DraftMask, PagedBatch


@dataclass
class CpuAttentionMetadata:
    slot_mapping: torch.Tensor  # [T] int64 cache slot each new token writes
    block_tables: torch.Tensor  # [B, W] int32 physical blocks, padded with 0
    seq_lens: torch.Tensor  # [B] int32 cached + new positions per sequence
    query_start_loc: torch.Tensor  # [B + 1] int32 row offsets of each sequence's new tokens


@dataclass
class CpuDraftMetadata:
    block_tables: torch.Tensor  # [R, W] int32, covering each request's context, padded with 0
    context_lens: torch.Tensor  # [R] int32
    max_fresh: int


def block_table_tensor(tables: list[list[int]], width: int | None = None) -> torch.Tensor:
    """[len(tables), width] int32 (default width: the longest table), rows cut or padded with block 0."""
    width = max((len(t) for t in tables), default=0) if width is None else width
    return torch.tensor([t[:width] + [0] * (width - len(t[:width])) for t in tables],
                        dtype=torch.int32).view(len(tables), width)


class CpuNativeBackend:
    name = "cpu"

    def __init__(self):
        from sparkserve import native

        native.require()
        self._ops = torch.ops.sparkserve

    def build_metadata(self, batch: PagedBatch, device: torch.device) -> CpuAttentionMetadata:
        starts = [0]
        for n in batch.query_lens:
            starts.append(starts[-1] + n)
        return CpuAttentionMetadata(
            slot_mapping=torch.tensor(batch.slot_mapping, dtype=torch.long),
            block_tables=block_table_tensor(batch.block_tables),
            seq_lens=torch.tensor(batch.seq_lens, dtype=torch.int32),
            query_start_loc=torch.tensor(starts, dtype=torch.int32))

    def forward(self, q, k, v, k_cache, v_cache, metadata: CpuAttentionMetadata, scale: float) -> torch.Tensor:
        m = metadata
        return self._ops.paged_attention(q, k, v, k_cache, v_cache, m.slot_mapping, m.block_tables, m.seq_lens,
                                         m.query_start_loc, scale)

    def write_kv(self, k, v, k_cache, v_cache, slot_mapping: torch.Tensor) -> None:
        self._ops.paged_attention_write_kv(k, v, k_cache, v_cache, slot_mapping.to(torch.long))

    def build_draft_metadata(self, batch: DraftBatch, device: torch.device) -> CpuDraftMetadata:
        bs = batch.block_size
        for r, (length, table) in enumerate(zip(batch.context_lens, batch.block_tables)):
            if len(table) * bs < length:
                raise ValueError(f"draft request {r}: {len(table)} blocks of {bs} cannot hold its {length} "
                                 "context positions")
        need = -(-max(batch.context_lens, default=0) // bs)
        return CpuDraftMetadata(block_table_tensor(batch.block_tables, need),
                                torch.tensor(batch.context_lens, dtype=torch.int32), batch.max_fresh)

    def forward_draft(self, q, k, v, k_cache, v_cache, metadata: CpuDraftMetadata, scale: float,
                      mask: DraftMask) -> torch.Tensor:
        if k.shape[1] > metadata.max_fresh:
            raise ValueError(f"{k.shape[1]} fresh rows exceed the metadata's max_fresh {metadata.max_fresh}")
        return self._ops.paged_attention_draft(q, k, v, k_cache, v_cache, metadata.block_tables,
                                               metadata.context_lens, scale, mask.causal, mask.window or 0)
