"""Per-request sampling parameters, validated at construction (vLLM's offline API names)."""
from __future__ import annotations

from dataclasses import dataclass, field

_MAX_LOGPROBS = 20
_MAX_N = 16


@dataclass
class SpeculativeParams:
    """Per-request speculation control: cap the draft length or switch it off for this request."""

    max_draft_tokens: int | None = None
    disable: bool = False

    def __post_init__(self) -> None:
        if self.max_draft_tokens is not None and (
            not isinstance(self.max_draft_tokens, int) or self.max_draft_tokens < 0
        ):
            raise ValueError(f"speculative.max_draft_tokens must be an int >= 0, got {self.max_draft_tokens!r}")


@dataclass
class SamplingParams:
    """How to sample one request's continuation.

    temperature 0 means greedy. Filters apply in the order temperature -> top-k -> top-p -> min-p.
    ``seed`` makes the request reproducible whatever else shares its batch.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: off
    min_p: float = 0.0
    seed: int | None = None
    max_tokens: int | None = 16
    min_tokens: int = 0
    stop: list[str] | str | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    logprobs: int | None = None  # number of top logprobs per emitted token (0: only the chosen token)
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    speculative: SpeculativeParams | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._check_number("temperature", self.temperature, lo=0.0, hi=100.0)
        self._check_number("top_p", self.top_p, lo=0.0, hi=1.0, lo_open=True)
        self._check_number("min_p", self.min_p, lo=0.0, hi=1.0)
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < -1:
            raise ValueError(f"top_k must be an int >= -1 (0 or -1 disables it), got {self.top_k!r}")
        if self.top_k > 1 << 30:
            raise ValueError(f"top_k must be at most {1 << 30} (values above the vocabulary size mean no limit)")
        if self.top_k == -1:
            self.top_k = 0
        if not isinstance(self.n, int) or isinstance(self.n, bool) or not 1 <= self.n <= _MAX_N:
            raise ValueError(f"n must be an int in [1, {_MAX_N}], got {self.n!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)
                                      or not -(1 << 63) <= self.seed < 1 << 64):
            raise ValueError(f"seed must be a 64-bit int, got {self.seed!r}")
        if self.max_tokens is not None and (
            not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool) or not 1 <= self.max_tokens < 1 << 31
        ):
            raise ValueError(f"max_tokens must be an int in [1, {(1 << 31) - 1}], got {self.max_tokens!r}")
        if not isinstance(self.min_tokens, int) or self.min_tokens < 0:
            raise ValueError(f"min_tokens must be an int >= 0, got {self.min_tokens!r}")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) must be at most max_tokens ({self.max_tokens})")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError("stop must be a non-empty string or a list of non-empty strings")
        self.stop_token_ids = list(self.stop_token_ids or [])
        if any(not isinstance(t, int) or isinstance(t, bool) or t < 0 for t in self.stop_token_ids):
            raise ValueError("stop_token_ids must be a list of non-negative ints")
        if self.logprobs is not None and (
            not isinstance(self.logprobs, int) or isinstance(self.logprobs, bool) or not 0 <= self.logprobs <= _MAX_LOGPROBS
        ):
            raise ValueError(f"logprobs must be an int in [0, {_MAX_LOGPROBS}], got {self.logprobs!r}")
        if isinstance(self.speculative, dict):
            self.speculative = SpeculativeParams(**self.speculative)

    @staticmethod
    def _check_number(name: str, value, lo: float, hi: float, lo_open: bool = False) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ValueError(f"{name} must be a number, got {value!r}")
        if value > hi or value < lo or (lo_open and value == lo):
            bracket = "(" if lo_open else "["
            raise ValueError(f"{name} must be in {bracket}{lo}, {hi}], got {value!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def draft_cap(self) -> int | None:
        """Most draft tokens this request may verify per step (None: the engine's γ)."""
        if self.speculative is None:
            return None
        if self.speculative.disable:
            return 0
        return self.speculative.max_draft_tokens
