"""The plain-data objects that cross the scheduler <-> runner boundary, once per step.

A step brings each scheduled sequence's ``num_computed_tokens`` up by ``len(token_ids)``:
prefill chunks, decode tokens and verification blocks ``[anchor, d1..dl]`` are all just token
counts. Nothing here holds a tensor or a Request object. A plan's drafts are a view of the
scheduler's pending draft blocks; the runner keeps only their distributions q
(``scheduler/drafts.py`` says why).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplingMeta:
    """Sampling settings of one sequence, as the runner needs them (copied from SamplingParams)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int | None = None
    logprobs: int | None = None
    min_tokens: int = 0  # while fewer outputs exist, the tokens below have probability 0
    min_tokens_stop_ids: tuple[int, ...] = ()  # the request's stop token ids and eos (unless ignore_eos)


@dataclass
class ScheduledSeq:
    """One sequence's work in a step.

    ``token_ids`` [num_known + l] are the tokens whose KV this step computes, at positions
    ``num_computed_tokens .. num_computed_tokens + len(token_ids) - 1``: ``num_known`` known tokens
    (a prefill chunk, or the one anchor token of a decoding sequence), then the verify block's
    l = ``num_draft_tokens`` unverified drafts (l > 0 only when ``num_known`` is 1 and ``sample``).
    ``draft_confidences`` [l] are the drafter's c_1..c_l for exactly those drafts (the values the
    verify planner saw), or [] when the drafter has none. ``sample`` is False for a prefill chunk
    that does not reach the end of the known tokens.
    """

    request_id: str
    token_ids: list[int]  # [num_known + num_draft_tokens]
    num_computed_tokens: int
    block_ids: list[int]  # the sequence's whole block table, covering every position it writes
    sampling: SamplingMeta
    sample: bool = True
    num_draft_tokens: int = 0  # l: the verify length this step
    draft_confidences: list[float] = field(default_factory=list)  # [l] or []
    num_output_tokens: int = 0  # tokens generated so far (penalties, min_tokens)
    max_draft_tokens: int | None = None  # per-request cap on the next draft block (None: engine's gamma)
    history_token_ids: list[int] | None = None  # [num_tokens] the request's committed tokens (text drafters only)

    @property
    def num_known_tokens(self) -> int:
        return len(self.token_ids) - self.num_draft_tokens

    @property
    def draft_token_ids(self) -> list[int]:
        """[l] the drafts this step verifies (the tail of ``token_ids``)."""
        return self.token_ids[self.num_known_tokens:]


@dataclass
class StepPlan:
    """Everything the runner executes in one step, complete when it leaves ``Scheduler.schedule``:
    the work per sequence (with the drafts each verifies and their confidences) and ``draft``, whether
    the runner drafts the next blocks after this step (False: the draft gate turned drafting off)."""

    seqs: list[ScheduledSeq] = field(default_factory=list)
    finished_request_ids: list[str] = field(default_factory=list)  # runner may drop their state
    draft: bool = True

    @property
    def num_tokens(self) -> int:
        return sum(len(s.token_ids) for s in self.seqs)

    @property
    def num_decoding(self) -> int:
        """Sequences that emit a token and carry no prefill work (one anchor, maybe drafts)."""
        return sum(1 for s in self.seqs if s.sample and s.num_known_tokens == 1)

    @property
    def has_prefill(self) -> bool:
        return any(s.num_known_tokens > 1 or not s.sample for s in self.seqs)

    def __bool__(self) -> bool:
        return bool(self.seqs)


@dataclass
class SeqResult:
    """What the runner produced for one scheduled sequence.

    ``new_token_ids`` are the emitted tokens: accepted drafts then one sampled (bonus/recovered)
    token; empty when ``sample`` was False. ``num_accepted_drafts`` <= num_draft_tokens.
    ``logprobs[i]`` pairs with ``new_token_ids[i]``: (chosen logprob, [(token_id, logprob), ...]).
    """

    request_id: str
    new_token_ids: list[int] = field(default_factory=list)
    num_accepted_drafts: int = 0
    logprobs: list[tuple[float, list[tuple[int, float]]]] | None = None
    next_draft_token_ids: list[int] | None = None  # [n] the next draft block (spec decode); None: none drafted
    next_draft_confidences: list[float] | None = None  # [n] its confidences; None: the drafter has none
    num_appended: int | None = None  # set by the scheduler: tokens actually appended (a stop drops the rest)


@dataclass
class StepResult:
    """The runner's output for a StepPlan, in the same order as ``plan.seqs``."""

    seqs: list[SeqResult] = field(default_factory=list)
    forward_time_s: float = 0.0  # time inside model forwards (target + drafter)
    step_time_s: float = 0.0  # wall time of execute()
