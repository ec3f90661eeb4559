"""uvicorn's httptools protocol with two changes at the HTTP layer, below the application:

- a request the parser rejects (an invalid ``Content-Length``, a malformed request line) gets the
  OpenAI error envelope as JSON, not uvicorn's plain-text 400;
- a request whose headers are not complete ``HEADER_TIMEOUT_S`` after its first byte (or after the
  connection opened) gets a 408 and the connection is closed, so slow half-sent requests cannot hold
  connections open. The body has its own deadline in ``serving.read_body`` (``--body-read-timeout``).

Limits that uvicorn already has and ``launch`` sets: ``timeout_keep_alive`` (idle keep-alive
connections), ``limit_concurrency`` (connections + tasks at once; beyond it a 503).
"""
from __future__ import annotations

import asyncio

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sparkserve.server.errors import APIError

HEADER_TIMEOUT_S = 10.0


def _envelope_response(status: int, reason: bytes, error: APIError) -> bytes:
    body = msgspec.json.encode(error.envelope())
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, reason, len(body))) + body


class EnvelopeHttpProtocol(HttpToolsProtocol):
    """See the module docstring."""

    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_timed_out)

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        error = APIError(408, f"the request headers did not arrive within {self.header_timeout_s:g} s",
                         "invalid_request_error", None, "request_timeout")
        self.transport.write(_envelope_response(408, b"Request Timeout", error))
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        error = APIError(400, "invalid HTTP request: the request line or a header (e.g. Content-Length) is malformed",
                         "invalid_request_error", None, "invalid_http_request")
        self.transport.write(_envelope_response(400, b"Bad Request", error))
        self.transport.close()
