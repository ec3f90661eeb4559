"""A fixed pool of paged-KV blocks: ref counts, an eviction-ordered free queue, a prefix-hash index."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from sparkserve.scheduler.errors import NoFreeBlocksError

NULL_BLOCK_ID = 0  # reserved, never allocated: the runner may point padding slots/table entries at it


class BlockPool:
    """``num_blocks`` KV blocks, ids ``0 .. num_blocks - 1``; block 0 is the reserved null block.

    Contract:
      * A block is *in use* while its ref count is > 0 (one count per request whose block table
        holds it; prefix sharing gives counts > 1) and *free* at 0. Free blocks wait in one queue.
      * ``allocate`` pops blocks from the head of the free queue; a popped block loses its hash
        (it is evicted from the prefix cache) and starts with ref count 1.
      * ``free`` drops one count per id. At zero a block that carries a prefix hash goes to the
        *tail* of the queue (so cached blocks are evicted least-recently-freed first) and keeps its
        hash: ``lookup`` can still find it and ``touch`` revives it. A block without a hash goes to
        the *head*: it holds nothing worth keeping and is reused before any cached block.
      * ``cache_block`` registers a full block's hash; one block per hash (a duplicate stays plain).
      * Null block 0 is never in the queue, never counted and has ref count 0 forever.
    """

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 2:
            raise ValueError(f"BlockPool needs >= 2 blocks (block 0 is reserved), got {num_blocks}")
        self.num_blocks = num_blocks
        self._ref_counts = [0] * num_blocks
        self._block_hashes: list[bytes | None] = [None] * num_blocks
        self._free_queue: OrderedDict[int, None] = OrderedDict.fromkeys(range(1, num_blocks))
        self._hash_to_block: dict[bytes, int] = {}

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def num_usable_blocks(self) -> int:
        """Blocks that can ever be allocated (all but the null block)."""
        return self.num_blocks - 1

    @property
    def num_free_blocks(self) -> int:
        """Blocks with ref count 0, cached ones included (they are evictable)."""
        return len(self._free_queue)

    @property
    def usage(self) -> float:
        """Fraction of usable blocks in use, 0..1."""
        return 1.0 - self.num_free_blocks / self.num_usable_blocks

    def ref_count(self, block_id: int) -> int:
        return self._ref_counts[block_id]

    def block_hash(self, block_id: int) -> bytes | None:
        return self._block_hashes[block_id]

    @property
    def num_cached_blocks(self) -> int:
        """Blocks currently findable by hash (in use or free)."""
        return len(self._hash_to_block)

    # ---- allocation --------------------------------------------------------------------------
    def allocate(self, num_blocks: int) -> list[int]:
        """Pop ``num_blocks`` blocks (ref count 1 each), evicting their cached hashes.

        Raises NoFreeBlocksError when fewer are free (nothing is allocated then).
        """
        if num_blocks > len(self._free_queue):
            raise NoFreeBlocksError(f"asked for {num_blocks} blocks, {len(self._free_queue)} free")
        block_ids = []
        for _ in range(num_blocks):
            block_id, _ = self._free_queue.popitem(last=False)
            self._evict(block_id)
            self._ref_counts[block_id] = 1
            block_ids.append(block_id)
        return block_ids

    def free(self, block_ids: Iterable[int]) -> None:
        """Drop one reference per id, in the given order (pass a table reversed to evict its tail first)."""
        for block_id in block_ids:
            count = self._ref_counts[block_id]
            if count <= 0 or block_id == NULL_BLOCK_ID:
                raise ValueError(f"double free of block {block_id}")
            self._ref_counts[block_id] = count - 1
            if count == 1:
                self._free_queue[block_id] = None
                if self._block_hashes[block_id] is None:
                    self._free_queue.move_to_end(block_id, last=False)

    def touch(self, block_ids: Iterable[int]) -> None:
        """Add one reference per id to cached blocks being reused, taking free ones off the queue."""
        for block_id in block_ids:
            if self._ref_counts[block_id] == 0:
                del self._free_queue[block_id]
            self._ref_counts[block_id] += 1

    # ---- prefix cache ------------------------------------------------------------------------
    def lookup(self, block_hash: bytes) -> int | None:
        """The block holding the content named by ``block_hash``, in use or free; None on a miss."""
        return self._hash_to_block.get(block_hash)

    def cache_block(self, block_id: int, block_hash: bytes) -> bool:
        """Register an in-use, full block under ``block_hash``; False if that hash has a block already."""
        if self._ref_counts[block_id] <= 0:
            raise ValueError(f"cannot cache free block {block_id}")
        if self._block_hashes[block_id] is not None or block_hash in self._hash_to_block:
            return False
        self._block_hashes[block_id] = block_hash
        self._hash_to_block[block_hash] = block_id
        return True

    def reset_prefix_cache(self) -> bool:
        """Forget every cached hash; only when no block is in use (returns False otherwise)."""
        if self.num_free_blocks != self.num_usable_blocks:
            return False
        for block_id in self._hash_to_block.values():
            self._block_hashes[block_id] = None
        self._hash_to_block.clear()
        return True

    def _evict(self, block_id: int) -> None:
        block_hash = self._block_hashes[block_id]
        if block_hash is not None:
            self._block_hashes[block_id] = None
            if self._hash_to_block.get(block_hash) == block_id:
                del self._hash_to_block[block_hash]
