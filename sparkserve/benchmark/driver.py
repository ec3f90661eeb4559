"""One run at one load level: conversations start at their arrival times, at most ``max_concurrency``
users at once, each turn streamed and timestamped into a ``RequestRecord``.

Finished records are appended to ``sink`` as they complete, so an interrupted run (Ctrl-C) still
leaves everything it measured there.
"""
from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field

from sparkserve.benchmark.arrivals import arrival_offsets_s
from sparkserve.benchmark.http_client import HttpClient, HttpError
from sparkserve.benchmark.metrics import RequestRecord
from sparkserve.benchmark.workloads import Conversation


@dataclass(frozen=True)
class LoadPoint:
    """A load level: a concurrency limit (None = unbounded) and a request rate (inf = all at once)."""

    max_concurrency: int | None = None
    request_rate: float = math.inf
    burstiness: float = 1.0

    @property
    def label(self) -> str:
        parts = [] if self.max_concurrency is None else [f"c={self.max_concurrency}"]
        if not math.isinf(self.request_rate):
            parts.append(f"rate={self.request_rate:g}/s" + ("" if self.burstiness == 1 else f"@k={self.burstiness:g}"))
        return " ".join(parts) or "unbounded"


@dataclass
class RequestSpec:
    """How each request is built: endpoint (``chat``/``completions``), model, sampling extras."""

    model: str
    endpoint: str = "chat"
    ignore_eos: bool = False
    temperature: float | None = None
    extra_body: dict = field(default_factory=dict)

    def path(self) -> str:
        return "/v1/chat/completions" if self.endpoint == "chat" else "/v1/completions"

    def payload(self, history: list, turn, max_tokens: int) -> dict:
        body = {"model": self.model, "max_tokens": max_tokens, "stream": True,
                "stream_options": {"include_usage": True}}
        if self.endpoint == "chat":
            body["messages"] = history + [{"role": "user", "content": turn}]
        else:
            body["prompt"] = turn if not history else "".join(m["content"] + "\n\n" for m in history) + turn
        if self.ignore_eos:
            body["ignore_eos"] = True
        if self.temperature is not None:
            body["temperature"] = self.temperature
        body.update(self.extra_body)
        return body


async def send_one(client: HttpClient, spec: RequestSpec, history: list, turn, max_tokens: int) -> RequestRecord:
    """Stream one request; every failure becomes ``record.error`` (never raised)."""
    rec = RequestRecord(send_s=time.perf_counter())
    parts, num_events, last_choice_t = [], 0, None

    async def consume():
        nonlocal num_events, last_choice_t
        async for t, data in client.stream_events(spec.path(), spec.payload(history, turn, max_tokens)):
            if data == b"[DONE]":
                break
            obj = json.loads(data)
            if "error" in obj:  # an error event inside the stream
                raise HttpError(500, data)
            for choice in obj.get("choices") or ():
                last_choice_t = t
                piece = (choice.get("delta") or {}).get("content") if spec.endpoint == "chat" else choice.get("text")
                if not piece and "message" in choice:  # a server that ignored stream=True
                    piece = choice["message"].get("content")
                if piece:
                    parts.append(piece)
                    rec.event_times_s.append(t)
                    num_events += 1
            usage = obj.get("usage")
            if usage:
                rec.prompt_tokens = usage.get("prompt_tokens", 0)
                rec.output_tokens = usage.get("completion_tokens", 0)
                rec.spec_decode = usage.get("spec_decode")

    try:
        await asyncio.wait_for(consume(), client.timeout_s)
        rec.end_s = time.perf_counter()
        rec.output_tokens = rec.output_tokens or num_events  # no usage: one token per event (an estimate)
        if not rec.event_times_s and rec.output_tokens and last_choice_t is not None:
            rec.event_times_s.append(last_choice_t)  # tokens without visible text: first output = last choice
        if not rec.event_times_s:
            rec.error = "no output tokens in the response"
    except HttpError as e:
        rec.error = str(e)
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, KeyError, AttributeError) as e:
        rec.error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    rec.end_s = rec.end_s or time.perf_counter()
    rec.text = "".join(parts)
    return rec


async def run_load(client: HttpClient, spec: RequestSpec, conversations: list[Conversation], point: LoadPoint,
                   sink: list[RequestRecord], seed: int = 0, duration_s: float | None = None,
                   on_done=None) -> float:
    """Run every conversation (or until ``duration_s``: no conversation starts later); returns the
    run's duration, first send to last finish."""
    offsets = arrival_offsets_s(len(conversations), point.request_rate, point.burstiness, seed)
    limit = asyncio.Semaphore(point.max_concurrency or len(conversations) or 1)
    t0 = time.perf_counter()
    last_end = [t0]

    async def user(conv: Conversation, offset_s: float):
        await asyncio.sleep(max(0.0, t0 + offset_s - time.perf_counter()))
        async with limit:
            history: list = []
            for turn, max_tokens in zip(conv.turns, conv.max_tokens):
                if duration_s is not None and time.perf_counter() - t0 > duration_s:
                    return
                rec = await send_one(client, spec, history, turn, max_tokens)
                sink.append(rec)
                last_end[0] = max(last_end[0], rec.end_s)
                if on_done is not None:
                    on_done(rec)
                if not rec.success:
                    return
                history += [{"role": "user", "content": turn}, {"role": "assistant", "content": rec.text}]

    await asyncio.gather(*(user(c, o) for c, o in zip(conversations, offsets)))
    return last_end[0] - t0
