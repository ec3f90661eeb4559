"""Request state, owned by the scheduler (only the scheduler and KV manager mutate it)."""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from sparkserve.sampling_params import SamplingParams


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED_STOPPED = "stop"  # eos, stop token or stop string
    FINISHED_LENGTH = "length"  # max_tokens or the context limit
    FINISHED_ABORTED = "abort"

    @property
    def finished(self) -> bool:
        return self in (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH, RequestStatus.FINISHED_ABORTED)


@dataclass
class Request:
    """One sequence being generated.

    Invariant: ``num_computed_tokens`` <= ``num_tokens``; the KV of tokens
    ``[0, num_computed_tokens)`` is in the sequence's blocks. ``draft_token_ids`` [n] are the
    pending draft block, proposals for the positions after the last token (not part of
    ``all_token_ids`` until accepted), and ``draft_confidences`` [n] (or []) their confidences; this
    is the one owner of both (``scheduler/drafts.py``: the runner keeps only their distributions).
    """

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    eos_token_ids: tuple[int, ...] = ()
    max_model_len: int = 1 << 30
    arrival_time: float = field(default_factory=time.monotonic)
    status: RequestStatus = RequestStatus.WAITING
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache (first schedule)
    num_preemptions: int = 0
    draft_token_ids: list[int] = field(default_factory=list)  # [n]
    draft_confidences: list[float] = field(default_factory=list)  # [n] or []
    stop_reason: int | str | None = None
    first_token_time: float | None = None

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def max_output_tokens(self) -> int:
        room = self.max_model_len - self.num_prompt_tokens
        cap = self.params.max_tokens
        return room if cap is None else min(cap, room)

    @property
    def finished(self) -> bool:
        return self.status.finished

    @property
    def finish_reason(self) -> str | None:
        return self.status.value if self.finished else None
