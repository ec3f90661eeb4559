"""The runner's share of draft state: per request, q [n, V], the distributions its pending drafts were
drawn from. The scheduler's ``Request`` owns the drafts themselves (ids and confidences);
``scheduler/drafts.py`` explains the split and why q[:l] pairs with the l drafts a plan verifies."""
from __future__ import annotations

from collections.abc import Iterable

import torch


class DraftProbs:
    def __init__(self) -> None:
        self._probs: dict[str, torch.Tensor] = {}  # request id -> q [n, V] fp32

    def store(self, request_id: str, probs: torch.Tensor | None) -> None:
        """The q of the block just proposed for ``request_id`` (None: deterministic drafts)."""
        if probs is None:
            self._probs.pop(request_id, None)
        else:
            self._probs[request_id] = probs

    def for_verify(self, request_id: str, num_drafts: int) -> torch.Tensor | None:
        """q [l, V] of the first l = ``num_drafts`` drafts of the request's pending block; None when
        l is 0 or the drafts were deterministic (the verifier then uses one-hot q, still exact)."""
        probs = self._probs.get(request_id) if num_drafts else None
        if probs is None:
            return None
        if probs.shape[0] < num_drafts:
            raise RuntimeError(f"{request_id}: the plan verifies {num_drafts} drafts of a block of "
                               f"{probs.shape[0]}: scheduler and runner disagree on the pending drafts")
        return probs[:num_drafts]

    def drop(self, request_ids: Iterable[str]) -> None:
        for request_id in request_ids:
            self._probs.pop(request_id, None)

    def __len__(self) -> int:
        return len(self._probs)
