"""Triton paged attention (``triton_kernels/``, installed as ``sparkserve_triton``): K/V read in place
through the block table, for target steps and drafting alike.

``build_metadata`` turns a step's host lists into four small int tensors on the device once; every
layer's ``forward`` is then one ``kv_store`` launch writing the new K/V into the cache (rows with slot
< 0 skipped) and one attention launch over all rows (decode, prefill chunks and verify blocks mixed,
causal within each sequence). ``graph_metadata`` wraps fixed-shape buffers the CUDA-graph runner owns
and refills before each replay (``runner/cuda_graphs.py``): nothing in ``forward`` syncs with the host
or depends on values, only on shapes and ``max_query_len`` (``graph_draft_metadata``: the same for a
drafter's graphed block forward). Drafting
(``forward_draft``) attends each request's cached context through its table plus the fresh rows straight
from ``k``/``v`` (never written), masked as ``DraftMask`` says. Same semantics as the torch reference
(``torch_backend.py`` + ``torch_draft.py``); fp32 softmax and accumulation.

Needs triton and a CUDA device; on a CPU it runs only under Triton's interpreter (``TRITON_INTERPRET=1``
before the kernels are imported), which is how CI tests it. ``registry.get_backend`` says so.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sparkserve.attention.base import DraftBatch, DraftMask, PagedBatch
from sparkserve.attention.cpu_backend import block_table_tensor  # the same host-side table layout


@dataclass
class TritonAttentionMetadata:
    slot_mapping: torch.Tensor  # [T] int64 cache slot each new token writes
    block_tables: torch.Tensor  # [B, W] int32 physical blocks, padded with 0
    seq_lens: torch.Tensor  # [B] int32 cached + new positions per sequence
    query_start_loc: torch.Tensor  # [B + 1] int32 row offsets of each sequence's new tokens
    max_query_len: int  # the most new tokens of any sequence (sizes the launch grid)


@dataclass
class TritonDraftMetadata:
    block_tables: torch.Tensor  # [R, W] int32, covering each request's context, padded with 0
    context_lens: torch.Tensor  # [R] int32
    max_fresh: int


def check_draft_tables(batch: DraftBatch) -> int:
    """The table width that covers every request's context; raises when a table is too short."""
    bs = batch.block_size
    for r, (length, table) in enumerate(zip(batch.context_lens, batch.block_tables)):
        if len(table) * bs < length:
            raise ValueError(f"draft request {r}: {len(table)} blocks of {bs} cannot hold its {length} "
                             "context positions")
    return -(-max(batch.context_lens, default=0) // bs)


class TritonBackend:
    name = "triton"

    def __init__(self):
        try:
            from sparkserve_triton import draft_attention, kv_store, paged_attention
        except ImportError as e:
            raise ValueError(f"attention backend 'triton' needs triton (pip install -e '.[gpu]'): {e}") from e

        self._paged = paged_attention.paged_attention
        self._draft = draft_attention.draft_attention
        self._store_kv = kv_store.store_kv

    def build_metadata(self, batch: PagedBatch, device: torch.device) -> TritonAttentionMetadata:
        starts = [0]
        for n in batch.query_lens:
            starts.append(starts[-1] + n)
        return TritonAttentionMetadata(
            slot_mapping=torch.tensor(batch.slot_mapping, dtype=torch.long).to(device, non_blocking=True),
            block_tables=block_table_tensor(batch.block_tables).to(device, non_blocking=True),
            seq_lens=torch.tensor(batch.seq_lens, dtype=torch.int32).to(device, non_blocking=True),
            query_start_loc=torch.tensor(starts, dtype=torch.int32).to(device, non_blocking=True),
            max_query_len=max(batch.query_lens, default=0))

    def forward(self, q, k, v, k_cache, v_cache, metadata: TritonAttentionMetadata, scale: float) -> torch.Tensor:
        m = metadata
        self.write_kv(k, v, k_cache, v_cache, m.slot_mapping)
        return self._paged(q, k_cache, v_cache, m.block_tables, m.seq_lens, m.query_start_loc, m.max_query_len, scale)

    def graph_metadata(self, slot_mapping: torch.Tensor, block_tables: torch.Tensor, seq_lens: torch.Tensor,
                       query_start_loc: torch.Tensor, max_query_len: int) -> TritonAttentionMetadata:
        """Metadata over caller-owned fixed-shape device buffers ([T] int64, [B, W] int32, [B] int32,
        [B + 1] int32), valid for every refill of them: what a CUDA graph captures."""
        return TritonAttentionMetadata(slot_mapping, block_tables, seq_lens, query_start_loc, max_query_len)

    def write_kv(self, k, v, k_cache, v_cache, slot_mapping: torch.Tensor) -> None:
        """Store k/v at ``slot_mapping``; rows with a negative slot write nothing (graph padding)."""
        self._store_kv(k, v, k_cache, v_cache, slot_mapping)

    def build_draft_metadata(self, batch: DraftBatch, device: torch.device) -> TritonDraftMetadata:
        width = check_draft_tables(batch)
        return TritonDraftMetadata(block_table_tensor(batch.block_tables, width).to(device),
                                   torch.tensor(batch.context_lens, dtype=torch.int32).to(device), batch.max_fresh)

    def graph_draft_metadata(self, block_tables: torch.Tensor, context_lens: torch.Tensor,
                             max_fresh: int) -> TritonDraftMetadata:
        """Draft metadata over caller-owned fixed-shape device buffers ([R, W] int32, [R] int32), valid for
        every refill of them: what a drafter's CUDA graph captures (``runner/draft_graphs.py``)."""
        return TritonDraftMetadata(block_tables, context_lens, max_fresh)

    def forward_draft(self, q, k, v, k_cache, v_cache, metadata: TritonDraftMetadata, scale: float,
                      mask: DraftMask) -> torch.Tensor:
        if k.shape[1] > metadata.max_fresh:
            raise ValueError(f"{k.shape[1]} fresh rows exceed the metadata's max_fresh {metadata.max_fresh}")
        return self._draft(q, k, v, k_cache, v_cache, metadata.block_tables, metadata.context_lens, scale,
                           mask.causal, mask.window)
