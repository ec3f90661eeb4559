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
    drafters that look at text (n-gram). ``generator`` draws this request's random drafts.
    """

    request_id: str
    anchor_token_id: int
    anchor_position: int
    token_ids: list[int]
    block_ids: list[int]  # the request's paged block table (drafter context KV shares it)
    sampling: SamplingMeta
    generator: torch.Generator | None
    max_draft_tokens: int


class Proposer(Protocol):
    """A drafter. Holds no reference to the runner; gets everything per call.

    ``target_layer_ids``: target layers whose residual outputs it needs (empty: none).
    ``observe`` is called once per step with the target features of every processed token
    ([num_tokens, len(ids)*H]), their token ids, positions and cache slots, and ``next_token_ids``
    [num_tokens] (the committed token at position+1, or -1 where not known yet), so feature-conditioned
    drafters can write their own context KV into the paged cache (same block tables and slots as the
    target; rows past a rejection are stale and get overwritten later, never read). ``propose``
    returns one DraftBlock per request.
    """

    num_speculative_tokens: int
    target_layer_ids: tuple[int, ...]

    def observe(self, features: torch.Tensor | None, input_ids: torch.Tensor, positions: torch.Tensor,
                slot_mapping: torch.Tensor, next_token_ids: torch.Tensor) -> None: ...

    def propose(self, requests: list[ProposeRequest]) -> list[DraftBlock]: ...
