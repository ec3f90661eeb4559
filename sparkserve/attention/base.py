"""Contracts shared by attention backends.

A step's tokens are one flat batch ``[num_tokens]``. Sequence b owns query rows
``query_start_loc[b] : query_start_loc[b+1]`` at positions ``seq_lens[b] - query_len_b .. seq_lens[b]-1``;
each query row attends causally to every cached key of its sequence at a position <= its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class PagedBatch:
    """Host-side description of a step's sequences (plain ints), input to ``build_metadata``."""

    query_lens: list[int]  # new tokens per sequence
    seq_lens: list[int]  # cached + new tokens per sequence (kv length after this step)
    block_tables: list[list[int]]  # physical block ids per sequence
    block_size: int
    slot_mapping: list[int]  # [num_tokens] cache slot each new token writes


class AttentionContext(Protocol):
    """What a model layer calls: attend its new q/k/v ([T, H, D]) and return [T, Hq, D]."""

    def forward(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor: ...


class AttentionBackend(Protocol):
    """A paged attention implementation. ``build_metadata`` runs once per step; ``forward`` per layer."""

    name: str

    def build_metadata(self, batch: PagedBatch, device: torch.device): ...

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor, metadata, scale: float) -> torch.Tensor: ...


class PagedAttentionContext:
    """Binds a backend, its per-step metadata and the per-layer KV caches for one forward."""

    def __init__(self, backend: AttentionBackend, metadata, kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
                 scale: float):
        self.backend, self.metadata, self.kv_caches, self.scale = backend, metadata, kv_caches, scale

    def forward(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        k_cache, v_cache = self.kv_caches[layer_idx]
        return self.backend.forward(q, k, v, k_cache, v_cache, self.metadata, self.scale)


class DenseCausalContext:
    """Training / reference path: ``num_seqs`` equal-length sequences, plain causal attention, no cache."""

    def __init__(self, num_seqs: int, seq_len: int, scale: float):
        self.num_seqs, self.seq_len, self.scale = num_seqs, seq_len, scale

    def forward(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, s = self.num_seqs, self.seq_len
        qh, kh, vh = (x.view(b, s, x.shape[1], x.shape[2]).transpose(1, 2) for x in (q, k, v))
        out = torch.nn.functional.scaled_dot_product_attention(
            qh, kh, vh, is_causal=True, scale=self.scale, enable_gqa=kh.shape[1] != qh.shape[1])
        return out.transpose(1, 2).reshape(b * s, q.shape[1], q.shape[2])
