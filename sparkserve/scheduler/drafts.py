"""Which pending draft tokens of a decoding request go to the target for verification this step, and
the typed hooks through which speculative decoding takes part in scheduling.

Draft state has one owner per kind of data:

* The scheduler's ``Request`` owns the pending draft block as plain data: ``draft_token_ids`` [n]
  and ``draft_confidences`` [n] (or []). Every decision about drafts is a scheduling decision (how
  many fit the token budget and the KV slots, how many the verify planner admits, dropping them on
  preemption, finish or abort), and the scheduler works without tensors. The ``StepPlan`` carries
  the verified prefix as a view (``ScheduledSeq.draft_token_ids`` / ``draft_confidences``), so nobody
  reads drafts back out of the scheduler.
* The runner owns only the distributions the drafts were drawn from, q [n, V] (device tensors that
  only the verifier reads; shipping them through the scheduler would copy them to the host every
  step), keyed by request id (``runner/draft_probs.py``). They are indexed consistently by
  construction: the runner stores q in the same ``execute`` that returns the block's ids in
  ``SeqResult.next_draft_token_ids``, and ``apply_seq_result`` either takes exactly those ids or
  clears the request's drafts; the scheduler only ever verifies a prefix. So a sequence verifying
  l > 0 drafts verifies the first l tokens of the block whose q the runner holds, and q[:l] pairs
  with them. A q whose drafts the scheduler dropped is never read (l = 0), and is replaced by the
  next block or dropped with ``finished_request_ids``.
* The verify planner's lagged history (``spec_decode/planner.py``) is not draft state: it is the
  planner's record of confidences it was shown in earlier calls, read by nobody else.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sparkserve.request import Request


class DraftView(Protocol):
    """A decoding request's pending draft block, as a verify planner reads it (``Request`` is one)."""

    @property
    def request_id(self) -> str: ...

    @property
    def draft_token_ids(self) -> Sequence[int]: ...  # [n]

    @property
    def draft_confidences(self) -> Sequence[float]: ...  # [n], or [] without confidences


class VerifyPlanner(Protocol):
    """How many drafts each request verifies this step (``spec_decode.planner.Planner`` is one).

    ``requests``: the decoding requests that carry drafts, in running order. ``num_other_tokens``: the
    step's non-draft tokens other than these requests' anchors (prefill chunks, anchors of decoding
    requests without drafts). Returns one length per request; values above what fits are capped.
    """

    def __call__(self, requests: Sequence[DraftView], num_other_tokens: int) -> Sequence[int]: ...


class DraftSwitch(Protocol):
    """Whether the runner drafts after a step with ``num_decoding`` decoding sequences (the draft gate,
    ``engine.spec_control.SpecControl.decide_draft``). Called once per non-empty plan."""

    def __call__(self, num_decoding: int) -> bool: ...


def is_decoding(request: Request) -> bool:
    """No prefill outstanding: only the last sampled token's KV is missing."""
    return request.num_tokens - request.num_computed_tokens == 1


def plan_verify_lengths(planner: VerifyPlanner | None, running: Sequence[Request],
                        num_known_tokens: int = 0) -> dict[str, int]:
    """request id -> planned verify length, for the decoding requests with drafts (empty: no planner).
    ``num_known_tokens``: the step's non-draft tokens so far (these requests' anchors included)."""
    if planner is None:
        return {}
    decoding = [r for r in running if r.draft_token_ids and is_decoding(r)]
    if not decoding:
        return {}
    lengths = planner(decoding, max(num_known_tokens - len(decoding), 0))
    return {r.request_id: int(n) for r, n in zip(decoding, lengths)}


def num_drafts_to_verify(request: Request, max_num_drafts: int, planned: int | None = None) -> int:
    """How many of the pending drafts to verify: ``len(draft_token_ids)`` capped by ``max_num_drafts``
    (what the token budget leaves after the anchor), ``params.draft_cap``, the planner's length, and
    the output room (the verify step emits up to n + 1 tokens; drafts past ``max_output_tokens`` are
    wasted). 0 while a prefill is outstanding."""
    drafts = request.draft_token_ids
    if not drafts or not is_decoding(request):
        return 0
    num = min(len(drafts), max_num_drafts, request.max_output_tokens - len(request.output_token_ids) - 1)
    cap = request.params.draft_cap
    if cap is not None:
        num = min(num, cap)
    if planned is not None:
        num = min(num, planned)
    return max(num, 0)
