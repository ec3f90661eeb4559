"""Results handed to users of the offline API (plain data, torch-free).

The engine itself emits per-step deltas (``engine/wire.py: RequestDelta``); a ``RequestOutput`` is
the whole of one request, folded from its deltas once (``engine/llm.py: OutputAccumulator``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import msgspec


class SpecDecodeStats(msgspec.Struct):
    """Per-request (or engine-wide) speculative-decoding counters (all zero without speculation).

    num_drafts: verify rounds that carried >= 1 draft token; num_draft_tokens: drafts proposed;
    num_verified_draft_tokens: drafts actually sent to the target; num_accepted_tokens: drafts accepted.
    num_rounds / num_emitted_tokens: decode rounds and the tokens they emitted (accepted + 1 each, fewer
    when a stop ends the request inside the round);
    accepted_per_pos[k]: rounds whose draft k was accepted. A msgspec struct: it travels on the wire
    as it is (``RequestDelta.spec_decode``, ``SpecEngineStats.total``).
    """

    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_verified_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    num_rounds: int = 0
    num_emitted_tokens: int = 0
    accepted_per_pos: list[int] = []

    @property
    def mean_acceptance_length(self) -> float:
        """Tokens emitted per verify round (accepted + 1), tau in the paper."""
        return self.num_emitted_tokens / self.num_rounds if self.num_rounds else 0.0

    def as_dict(self) -> dict:
        """The summary the HTTP API reports as ``usage.spec_decode``."""
        return {
            "num_drafts": self.num_drafts,
            "num_draft_tokens": self.num_draft_tokens,
            "num_verified_draft_tokens": self.num_verified_draft_tokens,
            "num_accepted_tokens": self.num_accepted_tokens,
            "mean_acceptance_length": round(self.mean_acceptance_length, 4),
        }


@dataclass
class Logprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class CompletionOutput:
    """One generated sequence (vLLM's field names)."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = None  # "stop" | "length" | "abort" | None while running
    stop_reason: int | str | None = None
    logprobs: list[Logprob] | None = None
    cumulative_logprob: float | None = None
    num_prompt_tokens: int = 0


@dataclass
class RequestOutput:
    """A finished request: every sequence in full (the offline API's result)."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = False
    num_cached_tokens: int = 0
    spec_decode: SpecDecodeStats = field(default_factory=SpecDecodeStats)
    metrics: dict = field(default_factory=dict)
