"""Apply one sequence's step result to its Request: advance the computed count, append the emitted
tokens up to the first stop condition, roll back rejected drafts' KV, keep the next draft block."""
from __future__ import annotations

import time

from sparkserve.request import Request
from sparkserve.scheduler.kv_manager import KVCacheManager
from sparkserve.scheduler.stop import check_stop
from sparkserve.step import ScheduledSeq, SeqResult


def apply_seq_result(request: Request, seq: ScheduledSeq, result: SeqResult, kv: KVCacheManager) -> int:
    """Update ``request`` (RUNNING, scheduled as ``seq``) from ``result``; return tokens appended.

    * ``num_computed_tokens`` grows by ``len(seq.token_ids) - num_rejected_drafts``: the KV of
      the accepted drafts is kept, the rejected tail's positions are rolled back (``kv.truncate``).
    * ``result.new_token_ids`` (accepted drafts, then one sampled token) are appended one by one
      until a stop condition fires (``check_stop``); the rest are dropped. When a stop lands
      inside the accepted drafts, ``num_computed_tokens`` is clamped to ``num_tokens``.
    * The request's status/stop_reason are set when it finishes; its blocks are NOT freed here.
    * The next draft block is stored for the next step (cleared when finished or absent).
    * Newly full, computed blocks are registered in the prefix cache.
    Raises ValueError when the result breaks the StepResult contract.
    """
    if result.request_id != seq.request_id:
        raise ValueError(f"result for {result.request_id!r} where {seq.request_id!r} was scheduled")
    num_accepted = result.num_accepted_drafts
    if not 0 <= num_accepted <= seq.num_draft_tokens:
        raise ValueError(f"{seq.request_id}: {num_accepted} accepted of {seq.num_draft_tokens} drafts")
    new_token_ids = result.new_token_ids if seq.sample else []
    if seq.sample and len(new_token_ids) != num_accepted + 1:
        raise ValueError(
            f"{seq.request_id}: expected {num_accepted + 1} new tokens (accepted drafts + 1), got {len(new_token_ids)}"
        )
    num_rejected = seq.num_draft_tokens - num_accepted
    request.num_computed_tokens += len(seq.token_ids) - num_rejected

    num_appended = 0
    for token_id in new_token_ids:
        request.output_token_ids.append(token_id)
        num_appended += 1
        stop = check_stop(request)
        if stop is not None:
            request.status, request.stop_reason = stop
            break
    if num_appended and request.first_token_time is None:
        request.first_token_time = time.monotonic()
    request.num_computed_tokens = min(request.num_computed_tokens, request.num_tokens)
    kv.truncate(request, request.num_computed_tokens)

    if request.finished or not result.next_draft_token_ids:
        request.draft_token_ids = []
        request.draft_confidences = []
    else:
        request.draft_token_ids = list(result.next_draft_token_ids)
        request.draft_confidences = list(result.next_draft_confidences or [])
    kv.cache_full_blocks(request)
    result.num_appended = num_appended
    return num_appended
