"""Every engine error kind maps to one HTTP status and OpenAI error code (``errors.from_engine``),
without looking at the message text."""
import pytest

from sparkserve.errors import ContextLengthError, EngineError, ErrorKind, QueueFullError
from sparkserve.server.errors import from_engine

CASES = [
    (ErrorKind.INVALID_REQUEST, 400, "invalid_request_error", None, "prompt"),
    (ErrorKind.CONTEXT_LENGTH, 400, "invalid_request_error", "context_length_exceeded", "prompt"),
    (ErrorKind.QUEUE_FULL, 429, "rate_limit_error", "queue_full", None),
    (ErrorKind.ENGINE_DEAD, 503, "service_unavailable_error", "engine_dead", None),
    (ErrorKind.INTERNAL, 500, "internal_error", "internal_error", None),
]


@pytest.mark.parametrize("kind,status,type_,code,param", CASES)
def test_error_kind_to_http(kind, status, type_, code, param):
    err = from_engine(EngineError("any message at all", kind), "prompt")
    assert (err.status, err.type, err.code, err.param) == (status, type_, code, param)
    assert "any message at all" in err.message


def test_engine_exceptions_carry_their_kind():
    assert from_engine(ContextLengthError("prompt too long"), "messages").code == "context_length_exceeded"
    assert from_engine(QueueFullError("full")).headers == {"Retry-After": "1"}
    assert len(CASES) == len(ErrorKind)
