"""Contracts shared by attention backends.

Target steps (``PagedBatch``, ``build_metadata``, ``forward``): a step's tokens are one flat batch
``[num_tokens]``. Sequence b owns query rows ``query_start_loc[b] : query_start_loc[b+1]`` at positions
``seq_lens[b] - query_len_b .. seq_lens[b]-1``; their K/V are written to the cache at ``slot_mapping``
and each query row attends causally to every cached key of its sequence at a position <= its own.

Drafting (``DraftBatch``, ``build_draft_metadata``, ``forward_draft``, ``write_kv``): a drafter keeps its
own paged K/V cache with the target's block tables and slots. Its context rows are written with
``write_kv``; a propose call then runs blocks of *fresh* rows whose K/V are attended but never
written (``forward_draft``), one metadata build per call, reused by every draft layer and step.
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


@dataclass
class DraftBatch:
    """Host-side description of one propose call (plain ints), input to ``build_draft_metadata``.

    Request r's cached context is positions ``0 .. context_lens[r]-1``, read through
    ``block_tables[r]`` (which must cover them). Its fresh rows sit right after the context, at
    positions ``context_lens[r] + j``; their count F (the same for every request, at most
    ``max_fresh``) is given per ``forward_draft`` call, so a chain drafter can grow them step by step
    under one metadata. The context must not be written while the metadata is in use (a backend may
    read it once and reuse it for every forward on the same cache).
    """

    context_lens: list[int]  # [R] cached positions each request attends
    block_tables: list[list[int]]  # [R] physical block ids per request
    block_size: int
    max_fresh: int  # the most fresh rows any forward_draft with this metadata passes


@dataclass(frozen=True)
class DraftMask:
    """Visibility of a draft layer's keys. A query at position qp sees its request's context keys
    (positions < context_len) and its fresh keys; ``causal``: only fresh keys at positions <= qp;
    ``window`` (sliding layers): only keys with qp - kp < window (and kp - qp < window when not causal)."""

    causal: bool = False
    window: int | None = None


class AttentionContext(Protocol):
    """What a model layer calls: attend its new q/k/v ([T, H, D]) and return [T, Hq, D]."""

    def forward(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor: ...


class AttentionBackend(Protocol):
    """A paged attention implementation. Caches are [num_blocks, block_size, Hkv, D]; position p of a
    sequence lives at slot ``block_table[p // block_size] * block_size + p % block_size``.

    ``build_metadata`` runs once per target step, ``forward`` per layer. ``build_draft_metadata`` runs
    once per propose call, ``forward_draft`` per draft layer (and chain step).
    """

    name: str

    def build_metadata(self, batch: PagedBatch, device: torch.device): ...

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor, metadata, scale: float) -> torch.Tensor:
        """q [T, Hq, D], k/v [T, Hkv, D] (written at the batch's slot_mapping first) -> [T, Hq, D]."""

    def write_kv(self, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                 slot_mapping: torch.Tensor) -> None:
        """Store k/v [N, Hkv, D] at cache slots slot_mapping [N] (long, on the cache's device)."""

    def build_draft_metadata(self, batch: DraftBatch, device: torch.device): ...

    def forward_draft(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                      v_cache: torch.Tensor, metadata, scale: float, mask: DraftMask) -> torch.Tensor:
        """Attention of R requests' fresh rows over their cached context plus the fresh rows themselves.

        q [R, Q, Hq, D]; k/v [R, F, Hkv, D] with Q <= F: request r's fresh row j is at position
        ``context_lens[r] + j`` and its queries are the last Q fresh rows (query i at fresh row F-Q+i).
        Keys are the request's cached context (read from k_cache/v_cache, not modified) and its F fresh
        rows, visible as ``mask`` says. Returns [R, Q, Hq, D] in q's dtype.

        A fused backend may plan its paged kernel once per metadata and compute the context part
        (paged, no causal mask) and the fresh part (ragged, ``mask``) separately, merging them by their
        log-sum-exp; or append the fresh K/V to scratch pages and discard them after the call.
        """


class PagedAttentionContext:
    """Binds a backend, its per-step metadata and the per-layer KV caches for one forward."""

    def __init__(self, backend: AttentionBackend, metadata, kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
                 scale: float):
        self.backend, self.metadata, self.kv_caches, self.scale = backend, metadata, kv_caches, scale

    def forward(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        k_cache, v_cache = self.kv_caches[layer_idx]
        return self.backend.forward(q, k, v, k_cache, v_cache, self.metadata, self.scale)


class DraftAttentionContext:
    """Binds a backend, its per-propose-call draft metadata and the drafter's per-layer KV caches."""

    def __init__(self, backend: AttentionBackend, metadata, kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
                 scale: float):
        self.backend, self.metadata, self.kv_caches, self.scale = backend, metadata, kv_caches, scale

    def forward(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                mask: DraftMask) -> torch.Tensor:
        """q [R, Q, Hq, D], fresh k/v [R, F, Hkv, D] -> [R, Q, Hq, D] (``AttentionBackend.forward_draft``)."""
        k_cache, v_cache = self.kv_caches[layer_idx]
        return self.backend.forward_draft(q, k, v, k_cache, v_cache, self.metadata, self.scale, mask)


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
