"""Turns scheduler updates into per-step deltas: detokenizes, applies stop strings, merges n > 1.

Per step and request the work is proportional to what the step added (new tokens, their text and
logprobs): nothing cumulative is copied or re-sent. The deltas are the wire structs the engine core
sends as they are; the offline API folds them into whole outputs once (``llm.OutputAccumulator``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sparkserve.engine.detokenizer import IncrementalDetokenizer
from sparkserve.engine.spec_stats import SpecStatsTracker, merge
from sparkserve.engine.wire import Logprobs, RequestDelta, SeqDelta
from sparkserve.request import Request


@dataclass
class _Child:
    """One sequence of a request (its own scheduler request) and what was already emitted of it."""

    index: int
    detok: IncrementalDetokenizer | None
    wants_logprobs: bool
    num_seen: int = 0  # output tokens already emitted
    finish_reason: str | None = None


@dataclass
class ParentRequest:
    """A user request; ``n`` > 1 fans out into children ``{id}#{i}``."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    children: dict[str, _Child] = field(default_factory=dict)
    num_cached_tokens: int = 0
    arrival_time: float = 0.0

    @property
    def finished(self) -> bool:
        return all(c.finish_reason is not None for c in self.children.values())


class OutputProcessor:
    def __init__(self, tokenizer, spec_stats: SpecStatsTracker | None = None):
        self.tokenizer = tokenizer
        self.spec_stats = spec_stats or SpecStatsTracker()
        self.parents: dict[str, ParentRequest] = {}
        self.child_to_parent: dict[str, str] = {}

    def add(self, parent: ParentRequest, child_id: str, index: int, req: Request) -> None:
        detok = None
        if self.tokenizer is not None:
            detok = IncrementalDetokenizer(self.tokenizer, req.prompt_token_ids, req.params.stop,
                                           req.params.skip_special_tokens, req.params.include_stop_str_in_output)
        parent.children[child_id] = _Child(index, detok, req.params.logprobs is not None)
        self.parents[parent.request_id] = parent
        self.child_to_parent[child_id] = parent.request_id

    def process(self, updated: list[Request], logprobs: dict[str, list] | None = None,
                aborted: list[str] = ()) -> tuple[list[RequestDelta], list[str]]:
        """Returns (the deltas of requests that changed, child ids finished by a stop string).

        ``logprobs``: child id -> one ``(logprob, [(top id, top logprob), ...])`` per new token.
        """
        seqs: dict[str, list[SeqDelta]] = {}  # parent id -> this step's changed sequences
        stopped: list[str] = []
        for req in updated:
            pid = self.child_to_parent.get(req.request_id)
            if pid is None:
                continue
            parent = self.parents[pid]
            child = parent.children[req.request_id]
            seq = self._seq_delta(child, req, logprobs.get(req.request_id) if logprobs else None, stopped)
            if req.num_cached_tokens:
                parent.num_cached_tokens = max(parent.num_cached_tokens, req.num_cached_tokens)
            changed = seqs.setdefault(pid, [])
            if seq is not None:
                changed.append(seq)
        for child_id in aborted:
            pid = self.child_to_parent.get(child_id)
            if pid is None:
                continue
            child = self.parents[pid].children[child_id]
            changed = seqs.setdefault(pid, [])
            if child.finish_reason is None:
                child.finish_reason = "abort"
                changed.append(SeqDelta(child.index, "", [], child.num_seen, "abort", None,
                                          [] if child.wants_logprobs else None))
        deltas = [self._request_delta(self.parents[pid], changed) for pid, changed in seqs.items()]
        return [d for d in deltas if d is not None], stopped

    def _seq_delta(self, child: _Child, req: Request, logprobs: list | None, stopped: list[str]) -> SeqDelta | None:
        if child.finish_reason is not None:  # finished by a stop string already; its last delta was sent
            return None
        new_ids = req.output_token_ids[child.num_seen:]
        child.num_seen += len(new_ids)
        text, hit_stop = child.detok.add(new_ids) if child.detok is not None else ("", False)
        stop_reason = None
        if hit_stop and not req.finished:
            stopped.append(req.request_id)
            child.finish_reason, stop_reason = "stop", child.detok.stopped_by
        elif req.finished:
            child.finish_reason = req.finish_reason
            stop_reason = child.detok.stopped_by if child.detok and child.detok.stopped_by else req.stop_reason
        if child.finish_reason is not None and child.detok is not None:
            text += child.detok.flush()
        lps = None
        if child.wants_logprobs:
            lps = _logprobs(new_ids, logprobs) if logprobs else []
        if not (new_ids or text or child.finish_reason or lps):
            return None
        return SeqDelta(child.index, text, [int(t) for t in new_ids], child.num_seen, child.finish_reason,
                        stop_reason if isinstance(stop_reason, (int, str)) else None, lps)

    def _request_delta(self, parent: ParentRequest, changed: list[SeqDelta]) -> RequestDelta | None:
        finished = parent.finished
        if not changed and not finished:
            return None
        spec = None
        if finished:
            for cid in parent.children:
                self.child_to_parent.pop(cid, None)
            self.parents.pop(parent.request_id, None)
            per_req = [self.spec_stats.pop(cid) for cid in parent.children if cid in self.spec_stats.per_request]
            spec = merge(per_req) if per_req else None
        changed.sort(key=lambda s: s.index)
        return RequestDelta(parent.request_id, finished, len(parent.prompt_token_ids), parent.num_cached_tokens,
                            changed, spec)

    def children_of(self, request_id: str) -> list[str]:
        parent = self.parents.get(request_id)
        return list(parent.children) if parent else []


def _logprobs(new_ids: list[int], logprobs: list) -> Logprobs:
    return [(int(t), float(lp), [(int(i), float(v)) for i, v in top]) for t, (lp, top) in zip(new_ids, logprobs)]
