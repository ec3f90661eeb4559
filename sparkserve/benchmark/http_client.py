"""A small asyncio HTTP/1.1 client (stdlib only) that timestamps every server-sent event on arrival.

Why not httpx/aiohttp: neither is a runtime dependency of sparkserve, and the harness wants the
socket-read time of each SSE event with no buffering layer between. One connection per request
(``Connection: close``): on 127.0.0.1 a connect costs ~0.1 ms; on a remote TLS server it adds a
handshake to each request's TTFT (as a fresh client would see).
"""
from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import dataclass
from typing import AsyncIterator
from urllib.parse import urlsplit


class HttpError(Exception):
    """A non-2xx answer: ``status`` and the server's message (OpenAI envelope when present)."""

    def __init__(self, status: int, body: bytes):
        self.status = status
        self.message = error_message(body)
        super().__init__(f"HTTP {status}: {self.message}")


def error_message(body: bytes) -> str:
    """``error.message`` of an OpenAI error envelope, else the body's start."""
    try:
        err = json.loads(body)
        if isinstance(err, dict):
            inner = err.get("error", err)
            if isinstance(inner, dict) and inner.get("message"):
                return str(inner["message"])
            if isinstance(err.get("detail"), str):
                return err["detail"]
    except ValueError:
        pass
    return body[:200].decode(errors="replace").strip() or "(empty body)"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class HttpClient:
    """``base_url`` (scheme://host:port[/prefix]); ``headers`` go on every request."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, timeout_s: float = 600.0):
        u = urlsplit(base_url.rstrip("/"))
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"bad base URL {base_url!r} (want http://host:port)")
        self.host, self.tls = u.hostname, u.scheme == "https"
        self.port = u.port or (443 if self.tls else 80)
        self.prefix = u.path
        self.headers = dict(headers or {})
        self.timeout_s = timeout_s

    async def _open(self, method: str, path: str, body: bytes | None, accept: str):
        ctx = ssl.create_default_context() if self.tls else None
        reader, writer = await asyncio.open_connection(self.host, self.port, ssl=ctx, limit=1 << 22)
        lines = [f"{method} {self.prefix}{path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Connection: close",
                 f"Accept: {accept}", *(f"{k}: {v}" for k, v in self.headers.items())]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection without answering")
        status = int(status_line.split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        return reader, writer, status, headers

    async def request(self, method: str, path: str, payload=None) -> Response:
        """One whole request; the body is read to its end."""
        body = None if payload is None else json.dumps(payload).encode()

        async def go():
            reader, writer, status, headers = await self._open(method, path, body, "application/json")
            try:
                data = b"".join([c async for c in _body_chunks(reader, headers)])
            finally:
                writer.close()
            return Response(status, headers, data)

        return await asyncio.wait_for(go(), self.timeout_s)

    async def stream_events(self, path: str, payload) -> AsyncIterator[tuple[float, bytes]]:
        """POST ``payload``; yields ``(perf_counter at arrival, data)`` for each SSE ``data:`` line.
        A non-2xx answer raises ``HttpError``; a non-SSE 2xx body is yielded once as it is."""
        body = json.dumps(payload).encode()
        reader, writer, status, headers = await asyncio.wait_for(
            self._open("POST", path, body, "text/event-stream"), self.timeout_s)
        try:
            if not 200 <= status < 300:
                raise HttpError(status, b"".join([c async for c in _body_chunks(reader, headers)]))
            if "text/event-stream" not in headers.get("content-type", ""):
                data = b"".join([c async for c in _body_chunks(reader, headers)])
                yield time.perf_counter(), data
                return
            buf = b""
            async for chunk in _body_chunks(reader, headers):
                now = time.perf_counter()
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    line = line.rstrip(b"\r")
                    if line.startswith(b"data:"):
                        yield now, line[5:].strip()
        finally:
            writer.close()


async def _body_chunks(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    """The body as it arrives: chunked transfer, Content-Length, or until the server closes."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return
            yield await reader.readexactly(size)
            await reader.readline()
    elif "content-length" in headers:
        n = int(headers["content-length"])
        if n:
            yield await reader.readexactly(n)
    else:
        while chunk := await reader.read(1 << 16):
            yield chunk
