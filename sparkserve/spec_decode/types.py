"""Contracts between the runner and the drafters (tensors allowed: both live in the engine core).

Glossary (see verify.py for the full one): the *anchor* is the last token the target emitted; its KV
is not yet computed. A *draft block* proposes tokens for the positions after the anchor. The
target verifies ``[anchor, d1..dl]`` (verify length l <= gamma) in one forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from sparkserve.step import SamplingMeta


@dataclass
class DraftBlock:
    """One request's proposal: ``token_ids`` [gamma]; ``probs`` [gamma, V] the exact distribution each
    draft was drawn from (None: deterministic drafts, verified as one-hot q); ``confidences`` [gamma]
    per-position P(accept | previous accepted) or None."""

    token_ids: list[int]
    probs: torch.Tensor | None = None
    confidences: list[float] | None = None


@dataclass
class ProposeRequest:
    """What a drafter gets for one request that needs a new block.

    ``anchor_token_id`` sits at ``anchor_position`` (= number of tokens whose target KV exists).
    ``token_ids`` is the whole committed sequence (prompt + output, ending with the anchor) for
    drafters that look at text (n-gram; None unless the proposer ``needs_history``). ``generator``
    draws this request's random drafts.
    """

    request_id: str
    anchor_token_id: int
    anchor_position: int
    token_ids: list[int] | None
    block_ids: list[int]  # the request's paged block table (drafter context KV shares it)
    sampling: SamplingMeta
    generator: torch.Generator | None
    max_draft_tokens: int


class Proposer(Protocol):
    """A drafter. Holds no reference to the runner; gets everything per call.

    ``observe`` is called once per step with the target features of every processed token
    ([num_tokens, len(target_layer_ids) * H], None when ``target_layer_ids`` is empty), their token
    ids, positions and cache slots [num_tokens], and ``next_token_ids`` [num_tokens] (the committed
    token at position + 1, or -1 where not known yet), so feature-conditioned drafters can write their
    own context KV into the paged cache (same block tables and slots as the target; rows past a
    rejection are stale and get overwritten later, never read). The runner may defer and batch these
    calls while drafting is off (``runner/observe_buffer.py``). ``propose`` returns one DraftBlock per
    request, at most ``min(max_draft_tokens, num_speculative_tokens)`` drafts each.
    """

    num_speculative_tokens: int
    """gamma: the most drafts one ``propose`` returns per request."""

    target_layer_ids: tuple[int, ...]
    """Target layers whose residual outputs ``observe`` needs (the runner captures them); () for none."""

    needs_history: bool
    """True when ``propose`` reads ``ProposeRequest.token_ids`` (the committed text, e.g. n-gram): the
    scheduler then copies each sequence's token history into the plan; False leaves them None."""

    has_confidence: bool
    """True when ``DraftBlock.confidences`` is filled (a confidence head): the verify planners can
    plan with them and the engine tracks their calibration drift."""

    confidence_temperatures: list[float] | None
    """Per-position STS temperatures T_k applied to the confidence logits (None: all 1). Only read
    when ``has_confidence``; the engine's drift monitor replaces the list when it refits."""

    def observe(self, features: torch.Tensor | None, input_ids: torch.Tensor, positions: torch.Tensor,
                slot_mapping: torch.Tensor, next_token_ids: torch.Tensor) -> None: ...

    def propose(self, requests: list[ProposeRequest]) -> list[DraftBlock]: ...
