"""Turns scheduler updates into RequestOutputs: detokenizes, applies stop strings, merges n > 1."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from sparkserve.engine.detokenizer import IncrementalDetokenizer
from sparkserve.engine.spec_stats import SpecStatsTracker, merge
from sparkserve.outputs import CompletionOutput, Logprob, RequestOutput
from sparkserve.request import Request


@dataclass
class _Child:
    index: int
    detok: IncrementalDetokenizer | None
    completion: CompletionOutput
    num_seen: int = 0


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
        return all(c.completion.finish_reason is not None for c in self.children.values())


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
        comp = CompletionOutput(index=index, text="", token_ids=[], num_prompt_tokens=len(req.prompt_token_ids),
                                logprobs=[] if req.params.logprobs is not None else None)
        parent.children[child_id] = _Child(index, detok, comp)
        self.parents[parent.request_id] = parent
        self.child_to_parent[child_id] = parent.request_id

    def process(self, updated: list[Request], logprobs: dict[str, list] | None = None,
                aborted: list[str] = ()) -> tuple[list[RequestOutput], list[str]]:
        """Returns (outputs of parents that changed, child ids finished by a stop string)."""
        touched: dict[str, ParentRequest] = {}
        stopped: list[str] = []
        fresh: set[str] = {r.request_id for r in updated} | set(aborted)
        for req in updated:
            pid = self.child_to_parent.get(req.request_id)
            if pid is None:
                continue
            parent = self.parents[pid]
            child = parent.children[req.request_id]
            comp = child.completion
            new_ids = req.output_token_ids[child.num_seen:]
            child.num_seen = len(req.output_token_ids)
            comp.token_ids.extend(new_ids)
            comp.delta_token_ids = list(new_ids)
            if comp.logprobs is not None and logprobs and req.request_id in logprobs:
                for tid, (lp, top) in zip(new_ids, logprobs[req.request_id]):
                    comp.logprobs.append(Logprob(tid, lp, top))
            delta, hit_stop = ("", False)
            if child.detok is not None:
                delta, hit_stop = child.detok.add(new_ids)
            if hit_stop and not req.finished:
                stopped.append(req.request_id)
                comp.finish_reason, comp.stop_reason = "stop", child.detok.stopped_by
            elif req.finished:
                comp.finish_reason = req.finish_reason
                comp.stop_reason = child.detok.stopped_by if child.detok and child.detok.stopped_by else req.stop_reason
            if comp.finish_reason is not None and child.detok is not None:
                delta += child.detok.flush()
            if child.detok is not None:
                comp.text = child.detok.text[: child.detok.released]
            comp.delta_text = delta
            if req.num_cached_tokens:
                parent.num_cached_tokens = max(parent.num_cached_tokens, req.num_cached_tokens)
            touched[pid] = parent
        for child_id in aborted:
            pid = self.child_to_parent.get(child_id)
            if pid is not None:
                comp = self.parents[pid].children[child_id].completion
                if comp.finish_reason is None:
                    comp.finish_reason, comp.delta_text, comp.delta_token_ids = "abort", "", []
                touched[pid] = self.parents[pid]
        return [self._output(p, fresh) for p in touched.values()], stopped

    def _output(self, parent: ParentRequest, fresh: set[str]) -> RequestOutput:
        finished = parent.finished
        outs = []
        for cid, child in parent.children.items():
            c = child.completion
            new = cid in fresh
            outs.append(replace(c, token_ids=list(c.token_ids), logprobs=None if c.logprobs is None else list(c.logprobs),
                                delta_text=c.delta_text if new else "",
                                delta_token_ids=c.delta_token_ids if new else []))
        outs.sort(key=lambda c: c.index)
        per_req = self.spec_stats.per_request
        spec = merge([per_req[cid] for cid in parent.children if cid in per_req])
        out = RequestOutput(parent.request_id, parent.prompt, parent.prompt_token_ids, outs, finished,
                            parent.num_cached_tokens, spec)
        if finished:
            for cid in parent.children:
                self.child_to_parent.pop(cid, None)
                self.spec_stats.pop(cid)
            self.parents.pop(parent.request_id, None)
        return out

    def children_of(self, request_id: str) -> list[str]:
        parent = self.parents.get(request_id)
        return list(parent.children) if parent else []
