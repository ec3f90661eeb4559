"""Per-layer paged KV tensors and their sizing."""
from __future__ import annotations

import torch

from sparkserve.config import CacheConfig, SchedulerConfig


def bytes_per_block(num_layers: int, block_size: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
    return 2 * num_layers * block_size * num_kv_heads * head_dim * torch.tensor([], dtype=dtype).element_size()


def num_kv_blocks(cache: CacheConfig, sched: SchedulerConfig, per_block_bytes: int) -> int:
    """Blocks to allocate: the explicit count, else what the memory budget allows, but never more
    than every sequence slot at full context could use (+1 reserved null block)."""
    if cache.num_blocks is not None:
        return cache.num_blocks
    by_memory = cache.kv_cache_memory_bytes // per_block_bytes
    blocks_per_seq = -(-sched.max_model_len // cache.block_size)
    by_need = sched.max_num_seqs * blocks_per_seq + 1
    blocks = min(by_memory, by_need)
    if blocks < blocks_per_seq + 1:
        raise ValueError(f"KV cache budget of {cache.kv_cache_memory_bytes} bytes holds {by_memory} blocks, fewer "
                         f"than one full-length sequence needs ({blocks_per_seq + 1}); raise kv_cache_memory_bytes "
                         "or lower max_model_len")
    return int(blocks)


def allocate_kv_caches(num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
                       dtype: torch.dtype, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(k [num_blocks, block_size, Hkv, D], v [same])] per layer, zero-filled (no NaN garbage)."""
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    return [(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
            for _ in range(num_layers)]
