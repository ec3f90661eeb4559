"""Which pending draft tokens of a decoding request go to the target for verification this step."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from sparkserve.request import Request

# Given the decoding requests that carry drafts (in running order), the most drafts each may
# verify this step (the verify-length planner of spec/, e.g. confidence + cost table).
VerifyPlanner = Callable[[Sequence[Request]], Sequence[int]]


def is_decoding(request: Request) -> bool:
    """No prefill outstanding: only the last sampled token's KV is missing."""
    return request.num_tokens - request.num_computed_tokens == 1


def plan_verify_lengths(planner: VerifyPlanner | None, running: Sequence[Request],
                        num_known_tokens: int = 0) -> dict[str, int]:
    """request id -> planned verify length, for the decoding requests with drafts (empty: no planner).
    ``num_known_tokens``: the step's non-draft tokens so far; a planner with ``begin_step`` is told
    how many of them are not these requests' anchors (prefill chunks, drafts-less decodes)."""
    if planner is None:
        return {}
    decoding = [r for r in running if r.draft_token_ids and is_decoding(r)]
    if not decoding:
        return {}
    begin_step = getattr(planner, "begin_step", None)
    if begin_step is not None:
        begin_step(max(num_known_tokens - len(decoding), 0))
    return {r.request_id: int(n) for r, n in zip(decoding, planner(decoding))}


def drafts_to_verify(request: Request, max_num_drafts: int, planned: int | None = None) -> list[int]:
    """The first ``n`` pending drafts, ``n`` capped by ``max_num_drafts`` (what the token budget
    leaves after the anchor), ``params.draft_cap``, the planner's length, and the output room (the
    verify step emits up to n + 1 tokens; drafts past ``max_output_tokens`` are wasted)."""
    drafts = request.draft_token_ids
    if not drafts or not is_decoding(request):
        return []
    num = min(len(drafts), max_num_drafts, request.max_output_tokens - len(request.output_token_ids) - 1)
    cap = request.params.draft_cap
    if cap is not None:
        num = min(num, cap)
    if planned is not None:
        num = min(num, planned)
    return list(drafts[: max(num, 0)])
