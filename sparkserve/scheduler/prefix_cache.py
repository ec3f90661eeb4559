"""Chained content hashes of full KV blocks, the keys of the prefix cache.

``hash_0 = sha256(ROOT_HASH || tokens of block 0)``, ``hash_i = sha256(hash_{i-1} || tokens of
block i)``. A block hash therefore names the block's tokens *and* every token before them, so two
sequences share a cached block only when their whole prefixes agree. Token ids are packed as
little-endian signed 64-bit ints, so hashes are the same on every machine and every run. Only full
blocks are hashed: a partial block's content is still growing.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

from sparkserve.request import Request
from sparkserve.scheduler.token_view import token_slice

ROOT_HASH = bytes(32)  # the "parent" of block 0


def hash_block_tokens(parent_hash: bytes | None, token_ids: Sequence[int]) -> bytes:
    """SHA-256 of ``parent_hash`` (32 bytes; ROOT_HASH for the first block) then the packed tokens."""
    digest = hashlib.sha256(parent_hash if parent_hash is not None else ROOT_HASH)
    digest.update(struct.pack(f"<{len(token_ids)}q", *token_ids))
    return digest.digest()


def extend_block_hashes(
    block_hashes: list[bytes], request: Request, block_size: int, num_full_blocks: int
) -> list[bytes]:
    """Append hashes to ``block_hashes`` (in place) until it holds ``num_full_blocks`` of them.

    ``block_hashes`` must already be the first hashes of ``request``'s blocks (or empty), and the
    request must know at least ``num_full_blocks * block_size`` tokens. Returns the same list.
    """
    if request.num_tokens < num_full_blocks * block_size:
        raise ValueError("not enough tokens to hash the requested number of full blocks")
    for block_index in range(len(block_hashes), num_full_blocks):
        parent = block_hashes[-1] if block_hashes else None
        start = block_index * block_size
        block_hashes.append(hash_block_tokens(parent, token_slice(request, start, start + block_size)))
    return block_hashes
