"""Drafting attention in plain torch (``TorchBackend.build_draft_metadata`` / ``forward_draft``).

Once per propose call, every request's context is padded to one rectangle of cache slots with room
for the fresh rows after it: [R, L + max_fresh]. A forward gathers its cache through that index in
one go (kept while the same cache is attended again, as by a chain's steps), copies the fresh K/V
into the tail and runs one SDPA call with a boolean mask over [context; fresh] keys. Masks are
memoised per (Q, F, DraftMask).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sparkserve.attention.base import DraftBatch, DraftMask


@dataclass
class TorchDraftMetadata:
    gather_slots: torch.Tensor  # [R, L + max_fresh] long: slots of positions 0..L-1, then padding (-> 0)
    context_valid: torch.Tensor  # [R, L] bool, position < context_lens[r]
    context_lens: torch.Tensor  # [R] long
    masks: dict[tuple[int, int, DraftMask], torch.Tensor] = field(default_factory=dict)  # -> [R, 1, Q, L + F]
    gathered: tuple | None = None  # (k_cache, v_cache, keys, values [R, L + max_fresh, Hkv, D]) of the last cache

    @property
    def num_context(self) -> int:
        return self.context_valid.shape[1]

    def mask(self, num_query: int, num_fresh: int, pattern: DraftMask) -> torch.Tensor:
        key = (num_query, num_fresh, pattern)
        if key not in self.masks:
            self.masks[key] = draft_mask(self.context_valid, self.context_lens, num_query, num_fresh, pattern)
        return self.masks[key]

    def gather(self, k_cache: torch.Tensor, v_cache: torch.Tensor, dtype: torch.dtype):
        """keys, values [R, L + max_fresh, Hkv, D]: this cache's context rows, then scratch rows."""
        g = self.gathered
        if g is None or g[0] is not k_cache or g[1] is not v_cache or g[2].dtype != dtype:
            index = self.gather_slots.flatten()
            shape = (*self.gather_slots.shape, *k_cache.shape[2:])
            keys = k_cache.view(-1, *k_cache.shape[2:]).index_select(0, index).view(shape).to(dtype)
            values = v_cache.view(-1, *v_cache.shape[2:]).index_select(0, index).view(shape).to(dtype)
            g = self.gathered = (k_cache, v_cache, keys, values)
        return g[2], g[3]


def build_draft_metadata(batch: DraftBatch, device: torch.device) -> TorchDraftMetadata:
    bs = batch.block_size
    for r, (length, table) in enumerate(zip(batch.context_lens, batch.block_tables)):
        if len(table) * bs < length:
            raise ValueError(f"draft request {r}: {len(table)} blocks of {bs} cannot hold its {length} "
                             "context positions")
    max_len = max(batch.context_lens, default=0)
    need = -(-max_len // bs)
    table = torch.tensor([t[:need] + [0] * (need - len(t[:need])) for t in batch.block_tables],
                         dtype=torch.long).view(len(batch.block_tables), need).to(device)  # [R, need]
    lens = torch.tensor(batch.context_lens, dtype=torch.long, device=device)  # [R]
    pos = torch.arange(max_len, device=device)  # [L]
    valid = pos[None] < lens[:, None]  # [R, L]
    slots = (table[:, pos // bs] * bs + pos % bs) * valid
    slots = torch.nn.functional.pad(slots, (0, batch.max_fresh))  # fresh rows' scratch reads slot 0
    return TorchDraftMetadata(slots, valid, lens)


def draft_mask(context_valid: torch.Tensor, context_lens: torch.Tensor, num_query: int, num_fresh: int,
               pattern: DraftMask) -> torch.Tensor:
    """bool [R, 1, Q, L + F] (True = attend) over [context; fresh] keys (``DraftMask`` semantics)."""
    num_req, num_ctx = context_valid.shape
    dev = context_valid.device
    q_fresh = torch.arange(num_fresh - num_query, num_fresh, device=dev)  # [Q] fresh row of each query
    fresh = torch.arange(num_fresh, device=dev)  # [F]
    visible = torch.cat([context_valid[:, None, :].expand(num_req, num_query, num_ctx),
                         torch.ones(num_req, num_query, num_fresh, dtype=torch.bool, device=dev)], dim=2)
    if pattern.causal:
        visible[:, :, num_ctx:] &= fresh[None, None, :] <= q_fresh[None, :, None]
    if pattern.window is not None:
        q_pos = context_lens[:, None] + q_fresh[None]  # [R, Q]
        k_pos = torch.cat([torch.arange(num_ctx, device=dev).expand(num_req, -1),
                           context_lens[:, None] + fresh[None]], dim=1)  # [R, L + F]
        diff = q_pos[:, :, None] - k_pos[:, None, :]
        visible &= diff < pattern.window
        if not pattern.causal:
            visible &= -diff < pattern.window
    return visible[:, None]


def forward_draft(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                  metadata: TorchDraftMetadata, scale: float, mask: DraftMask) -> torch.Tensor:
    num_ctx, num_fresh = metadata.num_context, k.shape[1]
    if num_fresh > metadata.gather_slots.shape[1] - num_ctx:
        raise ValueError(f"{num_fresh} fresh rows exceed the metadata's max_fresh "
                         f"{metadata.gather_slots.shape[1] - num_ctx}")
    keys, values = metadata.gather(k_cache, v_cache, q.dtype)
    keys[:, num_ctx:num_ctx + num_fresh] = k
    values[:, num_ctx:num_ctx + num_fresh] = v
    end = num_ctx + num_fresh
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), keys[:, :end].transpose(1, 2), values[:, :end].transpose(1, 2),
        attn_mask=metadata.mask(q.shape[1], num_fresh, mask), scale=scale,
        enable_gqa=keys.shape[2] != q.shape[2])
    return out.transpose(1, 2)
