"""Per-request block tables over one BlockPool, with prefix-cache lookup and commit."""
from __future__ import annotations

from collections.abc import Sequence

from sparkserve.request import Request
from sparkserve.scheduler.block_pool import BlockPool
from sparkserve.scheduler.prefix_cache import extend_block_hashes


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


class KVCacheManager:
    """Maps request id -> block table (list of block ids; table[i] holds positions
    ``[i * block_size, (i + 1) * block_size)``).

    Invariants kept for every request holding blocks:
      * the table covers exactly the positions the request's KV needs: after ``allocate_slots(r, n)``
        ``len(table) == cdiv(r.num_computed_tokens + n, block_size)``, after ``truncate(r, t)`` at
        most ``cdiv(t, block_size)``;
      * a block is registered in the prefix cache (``cache_full_blocks``) only once all its
        positions are below ``num_computed_tokens`` and are positions of ``all_token_ids``, so its
        KV is computed and its tokens are verified (never unverified drafts);
      * the first ``_num_committed[r]`` blocks of a table are the registered (or hit) ones;
        ``truncate`` never goes below them because it never goes below ``num_computed_tokens``.
    """

    def __init__(self, block_size: int, num_blocks: int, enable_prefix_caching: bool = True) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.pool = BlockPool(num_blocks)
        self._tables: dict[str, list[int]] = {}
        self._block_hashes: dict[str, list[bytes]] = {}  # hashes of the request's full blocks so far
        self._num_committed: dict[str, int] = {}

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free_blocks

    @property
    def num_usable_blocks(self) -> int:
        return self.pool.num_usable_blocks

    @property
    def usage(self) -> float:
        return self.pool.usage

    def num_blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to hold ``num_tokens`` positions."""
        return cdiv(num_tokens, self.block_size)

    def num_free_slots(self, request: Request) -> int:
        """Positions from ``num_computed_tokens`` on that the request could cover right now: the
        rest of its table plus every free block (what ``allocate_slots`` would accept)."""
        num_table_slots = len(self._tables.get(request.request_id, ())) * self.block_size
        return num_table_slots + self.pool.num_free_blocks * self.block_size - request.num_computed_tokens

    def block_ids(self, request_id: str) -> list[int]:
        """The request's block table (the live list: copy it before handing it out)."""
        return self._tables.get(request_id, [])

    # ---- prefix cache ------------------------------------------------------------------------
    def get_computed_blocks(self, request: Request) -> tuple[list[int], int]:
        """Longest cached prefix of ``request``'s full blocks: (block ids, number of tokens they hold).

        For a request that holds no blocks. At most ``(num_tokens - 1) // block_size`` blocks, so
        at least one token is left to compute (its logits give the next token). The blocks are not
        referenced yet: pass them to ``allocate_slots`` right away.
        """
        if not self.enable_prefix_caching or request.request_id in self._tables:
            return [], 0
        max_blocks = (request.num_tokens - 1) // self.block_size
        hashes = self._hashes(request, max_blocks)
        hit_block_ids = []
        for block_hash in hashes[:max_blocks]:
            block_id = self.pool.lookup(block_hash)
            if block_id is None:
                break
            hit_block_ids.append(block_id)
        return hit_block_ids, len(hit_block_ids) * self.block_size

    def cache_full_blocks(self, request: Request) -> None:
        """Register the hashes of blocks that became full and computed since the last call."""
        table = self._tables.get(request.request_id)
        if not self.enable_prefix_caching or not table:
            return
        num_full = min(request.num_computed_tokens, request.num_tokens) // self.block_size
        num_full = min(num_full, len(table))
        num_committed = self._num_committed.get(request.request_id, 0)
        if num_full <= num_committed:
            return
        hashes = self._hashes(request, num_full)
        for block_index in range(num_committed, num_full):
            self.pool.cache_block(table[block_index], hashes[block_index])
        self._num_committed[request.request_id] = num_full

    def _hashes(self, request: Request, num_full_blocks: int) -> list[bytes]:
        hashes = self._block_hashes.setdefault(request.request_id, [])
        return extend_block_hashes(hashes, request, self.block_size, num_full_blocks)

    # ---- allocation --------------------------------------------------------------------------
    def allocate_slots(
        self, request: Request, num_new_tokens: int, new_computed_block_ids: Sequence[int] = ()
    ) -> bool:
        """Grow the table to cover positions ``< num_computed + num_new_tokens``; False if blocks run out.

        ``num_computed`` is ``request.num_computed_tokens`` plus the tokens of
        ``new_computed_block_ids`` (prefix-cache hits from ``get_computed_blocks``, only for a
        request that holds no blocks yet; the caller then advances ``num_computed_tokens`` by
        ``len(new_computed_block_ids) * block_size``). On False nothing changed.
        """
        request_id = request.request_id
        table = self._tables.get(request_id)
        if new_computed_block_ids and table:
            raise ValueError("prefix-cache hits can only start a request's block table")
        num_current = len(table) if table else 0
        num_covered_tokens = request.num_computed_tokens + len(new_computed_block_ids) * self.block_size
        num_required = self.num_blocks_for(num_covered_tokens + num_new_tokens)
        num_new_blocks = max(0, num_required - num_current - len(new_computed_block_ids))
        num_revived = sum(1 for b in new_computed_block_ids if self.pool.ref_count(b) == 0)
        if num_new_blocks + num_revived > self.pool.num_free_blocks:
            return False
        if table is None:
            table = self._tables[request_id] = []
        if new_computed_block_ids:
            self.pool.touch(new_computed_block_ids)  # before allocate: allocate may evict free hits
            table.extend(new_computed_block_ids)
            self._num_committed[request_id] = len(new_computed_block_ids)
        if num_new_blocks:
            table.extend(self.pool.allocate(num_new_blocks))
        return True

    def truncate(self, request: Request, num_tokens: int) -> None:
        """Free the blocks beyond those ``num_tokens`` positions need (rejected-draft rollback)."""
        table = self._tables.get(request.request_id)
        num_keep = self.num_blocks_for(num_tokens)
        if not table or len(table) <= num_keep:
            return
        tail = table[num_keep:]
        del table[num_keep:]
        self.pool.free(reversed(tail))
        committed = self._num_committed.get(request.request_id, 0)
        if committed > num_keep:
            self._num_committed[request.request_id] = num_keep

    def free(self, request: Request) -> None:
        """Release all of the request's blocks (tail first, so its tail is evicted first) and state."""
        request_id = request.request_id
        table = self._tables.pop(request_id, None)
        self._block_hashes.pop(request_id, None)
        self._num_committed.pop(request_id, None)
        if table:
            self.pool.free(reversed(table))
