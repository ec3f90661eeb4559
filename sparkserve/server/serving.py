"""One generation request, end to end: body -> validation -> admission -> engine -> response/SSE.

Admission (the engine's verdict on the request: queued, 400, 429) is awaited before any response
starts, so a stream never begins with an error. A request leaves the engine when it finishes, when
its client disconnects (streaming or not), when its deadline (``--request-timeout``) passes, or
when shutdown gives up on it; in every case but the first the engine is told to abort it, which
frees its KV blocks.
"""
from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import Request
from starlette.responses import Response, StreamingResponse

from sparkserve.engine.client import RequestState
from sparkserve.errors import EngineError
from sparkserve.outputs import SpecDecodeStats
from sparkserve.server import errors
from sparkserve.server.console import log_admitted, log_request
from sparkserve.server.params import (COMPLETIONS_DEFAULT_MAX_TOKENS, chat_prompt, completion_prompt, decode_json,
                                      longest_token_bytes, request_params, sampling_kwargs)
from sparkserve.server.protocol import ChatCompletionRequest, CompletionRequest, Usage
from sparkserve.server.responses import DONE_EVENT, ChatFormatter, Choice, CompletionFormatter

_DISCONNECTED = object()  # queue item: the (non-streaming) client went away


class ClientDisconnected(Exception):
    pass


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The request body, or 413 as soon as it is known to exceed ``limit`` (header or bytes seen), or
    408 when it is not complete ``timeout_s`` after the headers (a half-sent request holds nothing long)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise errors.body_too_large(limit)
        except ValueError:
            raise errors.invalid_request("invalid Content-Length header") from None

    async def collect() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise errors.body_too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), timeout_s)
    except asyncio.TimeoutError:
        raise errors.APIError(408, f"the request body did not arrive within {timeout_s:g} s",
                              "invalid_request_error", None, "request_timeout", {"Connection": "close"}) from None


class Generation:
    """An admitted request: accumulates its choices, enforces its deadline, cleans up once."""

    def __init__(self, server, state: RequestState, n: int, kind: str = "chat"):
        self.server, self.state, self.kind = server, state, kind
        self.timeout_s = server.settings.request_timeout_s
        self.deadline = state.arrival + self.timeout_s if self.timeout_s else None
        self.choices = [Choice() for _ in range(n)]
        self.finished = False
        self.spec_decode: SpecDecodeStats | None = None
        self._closed = False

    async def next_batch(self) -> list:
        """Every delta available now (at least one); raises the request's error, if it ends in one."""
        queue = self.state.queue
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise errors.timeout(self.timeout_s)
        if not queue.empty():
            items = [queue.get_nowait()]
        elif self.deadline is None:
            items = [await queue.get()]
        else:
            try:
                items = [await asyncio.wait_for(queue.get(), max(0.0, self.deadline - time.monotonic()))]
            except asyncio.TimeoutError:
                raise errors.timeout(self.timeout_s) from None
        while not queue.empty():
            items.append(queue.get_nowait())
        deltas = []
        for item in items:
            if item is _DISCONNECTED:
                raise ClientDisconnected()
            if isinstance(item, EngineError):
                raise errors.from_engine(item)
            if isinstance(item, Exception):
                raise item
            deltas.append(item)
            for s in item.seqs:
                choice = self.choices[s.index]
                choice.text_parts.append(s.new_text)
                if s.new_logprobs:
                    choice.logprobs.extend(s.new_logprobs)
                choice.num_output_tokens = s.num_output_tokens
                if s.finish_reason is not None:
                    choice.finish_reason = s.finish_reason
            if item.finished:
                self.finished, self.spec_decode = True, item.spec_decode
        return deltas

    def usage(self) -> Usage:
        completion = sum(c.num_output_tokens for c in self.choices)
        prompt = self.state.num_prompt_tokens
        spec = self.spec_decode  # reported only when the engine speculated for this request
        return Usage(prompt, completion, prompt + completion, spec.as_dict() if spec and spec.num_drafts else None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.finished:
            self.server.client.abort(self.state.request_id)
        self.server.exit_request()
        first = self.state.first_token_time
        log_request(self.state.request_id, self.kind, self.state.num_prompt_tokens, self.choices, self.spec_decode,
                    self.state.arrival, "finished" if self.finished else "aborted",
                    None if first is None else first - self.state.arrival)


class SSEResponse(StreamingResponse):
    """A StreamingResponse that runs ``on_close`` however it ends (done, disconnect, error)."""

    def __init__(self, content, on_close):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


async def _events(gen: Generation, fmt, include_usage: bool):
    try:
        first = fmt.start()
        if first:
            yield first
        while not gen.finished:
            events = fmt.events(await gen.next_batch())
            if events:
                yield events
        if include_usage:
            yield fmt.usage_event(gen.usage())
        yield DONE_EVENT
    except errors.APIError as e:
        yield e.sse_event() + DONE_EVENT


async def _watch_disconnect(request: Request, queue: asyncio.Queue) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
    queue.put_nowait(_DISCONNECTED)


def max_prompt_bytes(server) -> int | None:
    """The most UTF-8 bytes a prompt text that fits the context can have (cached on the server state)."""
    cached = getattr(server, "_max_prompt_bytes", None)
    info = server.client.info
    if cached is None and server.tokenizer is not None and info is not None:
        cached = server._max_prompt_bytes = info.max_model_len * longest_token_bytes(server.tokenizer)
    return cached


async def generate(request: Request, kind: str) -> Response:
    """POST /v1/chat/completions (kind "chat") and /v1/completions (kind "completion")."""
    server = request.app.state.server
    settings = server.settings
    body = await read_body(request, settings.max_body_bytes, settings.body_read_timeout_s)
    if kind == "chat":
        req = decode_json(body, ChatCompletionRequest)
        model = server.resolve_model(req.model)
        server.check_accepting()
        # off the event loop: a long prompt must not stall /health and live streams while it tokenizes
        prompt, ids = await asyncio.to_thread(chat_prompt, req, server.tokenizer, max_prompt_bytes(server))
        if req.top_logprobs is not None and not req.logprobs:
            raise errors.invalid_request("top_logprobs requires logprobs to be true", "top_logprobs")
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        kwargs = sampling_kwargs(req, settings, max_tokens, logprobs, "top_logprobs")
        rid, formatter, prompt_param = f"chatcmpl-{uuid.uuid4().hex}", ChatFormatter, "messages"
    else:
        req = decode_json(body, CompletionRequest)
        model = server.resolve_model(req.model)
        server.check_accepting()
        prompt, ids = await asyncio.to_thread(completion_prompt, req, server.tokenizer, max_prompt_bytes(server))
        logprobs = req.logprobs
        max_tokens = req.max_tokens if req.max_tokens is not None else COMPLETIONS_DEFAULT_MAX_TOKENS
        kwargs = sampling_kwargs(req, settings, max_tokens, logprobs, "logprobs")
        rid, formatter, prompt_param = f"cmpl-{uuid.uuid4().hex}", CompletionFormatter, "prompt"
    n = kwargs["n"]
    include_usage = bool(req.stream and req.stream_options and req.stream_options.include_usage)
    fmt = formatter(rid, model, int(time.time()), n, logprobs is not None, include_usage, server.token_text)
    server.enter_request()
    try:
        state = await server.client.add(rid, ids, prompt, request_params(kwargs))
    except EngineError as e:
        server.exit_request()
        raise errors.from_engine(e, prompt_param) from None
    except BaseException:
        server.exit_request()
        raise
    log_admitted(rid, kind, len(ids), kwargs)
    gen = Generation(server, state, n, kind)
    if req.stream:
        return SSEResponse(_events(gen, fmt, include_usage), on_close=gen.close)
    watcher = asyncio.create_task(_watch_disconnect(request, state.queue))
    try:
        while not gen.finished:
            await gen.next_batch()
    except ClientDisconnected:
        return Response(status_code=499)  # nobody is listening; the engine was told to abort
    finally:
        watcher.cancel()
        gen.close()
    return Response(fmt.response(gen.choices, gen.usage()), media_type="application/json")
