"""Exceptions the scheduler raises; the server maps them onto its error envelope.

``ValueError`` (a request that can never run: empty prompt, too long for ``max_model_len`` or for
the whole KV cache) is a 400; ``QueueFullError`` (the waiting queue is at ``max_waiting``) is a 429.
"""
from __future__ import annotations


from sparkserve.errors import QueueFullError  # noqa: F401  (re-exported; defined torch-free)


class NoFreeBlocksError(RuntimeError):
    """``BlockPool.allocate`` was asked for more blocks than are free (a caller bug: check first)."""
