"""Engine deltas -> OpenAI response bodies and SSE chunks (chat and completions).

Text always comes from the engine's ``SeqDelta.new_text``: it never splits a multi-byte character and
holds back a tail that could still become a stop string, so a stream never shows text a later
stop string would cut.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sparkserve.engine.wire import RequestDelta
from sparkserve.server import protocol as p

MIN_LOGPROB = -9999.0  # JSON has no -inf
DONE_EVENT = "data: [DONE]\n\n"


@dataclass
class Choice:
    """What one choice (sequence) accumulated so far."""

    text_parts: list[str] = field(default_factory=list)
    logprobs: list = field(default_factory=list)  # (token_id, logprob, [(id, logprob)])
    num_output_tokens: int = 0
    finish_reason: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


class TokenText:
    """Token id -> display string for logprobs (cached; ``token_id:N`` without a tokenizer)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._cache.get(token_id)
        if text is None:
            if self.tokenizer is None:
                text = f"token_id:{token_id}"
            else:
                text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            self._cache[token_id] = text
        return text


def _lp(value: float) -> float:
    return value if value == value and value > MIN_LOGPROB else MIN_LOGPROB


def _sse(chunk) -> str:
    return f"data: {p.json_encoder.encode(chunk).decode()}\n\n"


class ChatFormatter:
    def __init__(self, request_id: str, model: str, created: int, n: int, logprobs: bool, include_usage: bool,
                 token_text: TokenText):
        self.id, self.model, self.created, self.n = request_id, model, created, n
        self.want_logprobs, self.include_usage, self.token_text = logprobs, include_usage, token_text

    def _logprobs(self, entries) -> p.ChatLogprobs | None:
        if not self.want_logprobs:
            return None
        out = []
        for token_id, logprob, top in entries or ():
            tok = self.token_text(token_id)
            tops = [p.TopLogprob(self.token_text(t), _lp(v), list(self.token_text(t).encode())) for t, v in top]
            out.append(p.ChatTokenLogprob(tok, _lp(logprob), list(tok.encode()), tops))
        return p.ChatLogprobs(out)

    def _chunk(self, choices: list[p.ChatChunkChoice], usage=p.UNSET) -> str:
        if self.include_usage and usage is p.UNSET:
            usage = None
        return _sse(p.ChatCompletionChunk(self.id, self.created, self.model, choices, usage=usage))

    def start(self) -> str:
        return "".join(self._chunk([p.ChatChunkChoice(i, p.Delta(role="assistant", content=""))])
                       for i in range(self.n))

    def events(self, deltas: list[RequestDelta]) -> str:
        events = []
        for delta in deltas:
            for s in delta.seqs:
                if s.new_text or s.new_logprobs:
                    events.append(self._chunk([p.ChatChunkChoice(s.index, p.Delta(content=s.new_text),
                                                                 self._logprobs(s.new_logprobs))]))
                if s.finish_reason is not None:
                    events.append(self._chunk([p.ChatChunkChoice(s.index, p.Delta(), None, s.finish_reason)]))
        return "".join(events)

    def usage_event(self, usage: p.Usage) -> str:
        return self._chunk([], usage)

    def response(self, choices: list[Choice], usage: p.Usage) -> bytes:
        out = [p.ChatChoice(i, p.ChatMessageOut("assistant", c.text), self._logprobs(c.logprobs), c.finish_reason)
               for i, c in enumerate(choices)]
        return p.json_encoder.encode(p.ChatCompletion(self.id, self.created, self.model, out, usage))


class CompletionFormatter:
    def __init__(self, request_id: str, model: str, created: int, n: int, logprobs: bool, include_usage: bool,
                 token_text: TokenText):
        self.id, self.model, self.created, self.n = request_id, model, created, n
        self.want_logprobs, self.include_usage, self.token_text = logprobs, include_usage, token_text
        self._offsets = [0] * n  # text_offset bookkeeping per choice

    def _logprobs(self, index: int, entries) -> p.CompletionLogprobs | None:
        if not self.want_logprobs:
            return None
        out = p.CompletionLogprobs([], [], [], [])
        for token_id, logprob, top in entries or ():
            tok = self.token_text(token_id)
            out.tokens.append(tok)
            out.token_logprobs.append(_lp(logprob))
            out.top_logprobs.append({self.token_text(t): _lp(v) for t, v in top})
            out.text_offset.append(self._offsets[index])
            self._offsets[index] += len(tok)
        return out

    def _chunk(self, choices: list[p.CompletionChoice], usage=p.UNSET) -> str:
        if self.include_usage and usage is p.UNSET:
            usage = None
        return _sse(p.Completion(self.id, self.created, self.model, choices, usage=usage))

    def start(self) -> str:
        return ""

    def events(self, deltas: list[RequestDelta]) -> str:
        events = []
        for delta in deltas:
            for s in delta.seqs:
                if s.new_text or s.new_logprobs or s.finish_reason is not None:
                    choice = p.CompletionChoice(s.index, s.new_text, self._logprobs(s.index, s.new_logprobs),
                                                s.finish_reason)
                    events.append(self._chunk([choice]))
        return "".join(events)

    def usage_event(self, usage: p.Usage) -> str:
        return self._chunk([], usage)

    def response(self, choices: list[Choice], usage: p.Usage) -> bytes:
        out = [p.CompletionChoice(i, c.text, self._logprobs(i, c.logprobs), c.finish_reason)
               for i, c in enumerate(choices)]
        return p.json_encoder.encode(p.Completion(self.id, self.created, self.model, out, usage=usage))
