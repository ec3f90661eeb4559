"""Scheduler package: request queues, token-budget continuous batching, paged-KV blocks, prefix cache.

* ``Scheduler`` (scheduler.py): ``add_request`` / ``abort`` / ``finish_request`` / ``schedule`` /
  ``update``; the only owner of Request state besides the KV manager (pending drafts included:
  ``drafts.py`` says why, and what the runner keeps instead).
* ``KVCacheManager`` (kv_manager.py): per-request block tables, prefix-cache lookup and commit.
* ``BlockPool`` (block_pool.py): ref-counted blocks, eviction-ordered free queue, hash index.
  Block 0 (``NULL_BLOCK_ID``) is reserved and never allocated.
"""
from sparkserve.scheduler.block_pool import NULL_BLOCK_ID, BlockPool
from sparkserve.scheduler.errors import NoFreeBlocksError, QueueFullError
from sparkserve.scheduler.kv_manager import KVCacheManager
from sparkserve.scheduler.drafts import DraftSwitch, DraftView, VerifyPlanner
from sparkserve.scheduler.scheduler import Scheduler

__all__ = [
    "NULL_BLOCK_ID",
    "BlockPool",
    "DraftSwitch",
    "DraftView",
    "KVCacheManager",
    "NoFreeBlocksError",
    "QueueFullError",
    "Scheduler",
    "VerifyPlanner",
]
