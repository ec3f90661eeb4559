"""Errors are an API: every error leaves the server in OpenAI's envelope.

``{"error": {"message": str, "type": str, "param": str | null, "code": str | null}}``

| status | type                        | when                                                     |
|--------|-----------------------------|----------------------------------------------------------|
| 400    | invalid_request_error       | bad JSON, wrong types, values out of range, prompt too long (code ``context_length_exceeded``) |
| 401    | authentication_error        | missing or wrong API key (code ``invalid_api_key``)      |
| 404    | invalid_request_error       | unknown model (code ``model_not_found``)                 |
| 404    | not_found_error             | unknown route                                            |
| 405    | invalid_request_error       | wrong method (code ``method_not_allowed``)               |
| 413    | invalid_request_error       | body over ``--max-body-bytes`` (code ``request_too_large``) |
| 429    | rate_limit_error            | engine waiting queue full (code ``queue_full``), with ``Retry-After`` |
| 503    | service_unavailable_error   | loading, draining (shutdown) or engine dead              |
| 504    | timeout_error               | ``--request-timeout`` passed (code ``request_timeout``)  |
| 500    | internal_error              | a server bug, never client input                         |

Inside an SSE stream (after the 200 was sent) an error is one ``data: {"error": {...}}`` event
followed by ``data: [DONE]``. The engine's errors arrive typed (``sparkserve.errors.ErrorKind``);
``from_engine`` is the one place a kind becomes a status and an envelope.
"""
from __future__ import annotations

import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from sparkserve.errors import EngineError, ErrorKind

RETRY_AFTER_S = 1


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


class APIError(Exception):
    def __init__(self, status: int, message: str, type: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def envelope(self) -> ErrorEnvelope:
        return ErrorEnvelope(ErrorBody(self.message, self.type, self.param, self.code))

    def to_response(self) -> Response:
        return Response(msgspec.json.encode(self.envelope()), status_code=self.status, headers=self.headers,
                        media_type="application/json")

    def sse_event(self) -> str:
        return f"data: {msgspec.json.encode(self.envelope()).decode()}\n\n"


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)


def model_not_found(model: str, available: tuple[str, ...] = ()) -> APIError:
    names = f"; this server serves {', '.join(repr(n) for n in available)}" if available else ""
    return APIError(404, f"the model {model!r} does not exist{names}", "invalid_request_error", "model",
                    "model_not_found")


def unauthorized() -> APIError:
    return APIError(401, "missing or invalid API key (send 'Authorization: Bearer <key>')", "authentication_error",
                    None, "invalid_api_key", {"WWW-Authenticate": "Bearer"})


def body_too_large(limit: int) -> APIError:
    return APIError(413, f"request body exceeds {limit} bytes", "invalid_request_error", None, "request_too_large")


def queue_full(message: str) -> APIError:
    return APIError(429, f"the server is overloaded: {message}", "rate_limit_error", None, "queue_full",
                    {"Retry-After": str(RETRY_AFTER_S)})


def unavailable(message: str, code: str) -> APIError:
    return APIError(503, message, "service_unavailable_error", None, code, {"Retry-After": str(RETRY_AFTER_S)})


def timeout(seconds: float) -> APIError:
    return APIError(504, f"the request did not finish within {seconds:g} s", "timeout_error", None,
                    "request_timeout")


def internal(message: str) -> APIError:
    return APIError(500, message, "internal_error", None, "internal_error")


def from_engine(error: EngineError, prompt_param: str | None = None) -> APIError:
    """The HTTP error for an engine error; ``prompt_param`` names the field a prompt error is about."""
    kind, message = error.kind, error.message
    if kind is ErrorKind.CONTEXT_LENGTH:
        return invalid_request(message, prompt_param, "context_length_exceeded")
    if kind is ErrorKind.INVALID_REQUEST:
        return invalid_request(message, prompt_param)
    if kind is ErrorKind.QUEUE_FULL:
        return queue_full(message)
    if kind is ErrorKind.ENGINE_DEAD:
        return unavailable(message, "engine_dead")
    return internal(message)


_HTTP_TYPES = {404: ("not_found_error", "not_found"), 405: ("invalid_request_error", "method_not_allowed"),
               413: ("invalid_request_error", "request_too_large")}


def install_exception_handlers(app: FastAPI) -> None:
    """Route every error, FastAPI's and Starlette's own included, through the envelope."""

    async def on_api_error(request: Request, exc: APIError) -> Response:
        return exc.to_response()

    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        type_, code = _HTTP_TYPES.get(exc.status_code, ("invalid_request_error", None))
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        err = APIError(exc.status_code, message, type_, None, code, dict(exc.headers or {}))
        return err.to_response()

    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        return invalid_request(str(exc.errors())).to_response()

    async def on_unhandled(request: Request, exc: Exception) -> Response:  # uvicorn logs the traceback
        return internal("internal server error").to_response()

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unhandled)
