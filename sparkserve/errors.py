"""Errors that cross from the engine to its callers, typed by kind (torch-free: the API process
imports this). The kind travels on the wire (``engine/wire.py: AddAck``); the HTTP layer maps it to a
status and OpenAI's error envelope (``server/errors.py: from_engine``)."""
from __future__ import annotations

from enum import Enum


class ErrorKind(str, Enum):
    """Why the engine refused or lost a request (the wire carries the value)."""

    INVALID_REQUEST = "invalid_request"  # bad prompt or parameters
    CONTEXT_LENGTH = "context_length"  # prompt + max_tokens does not fit the model's context
    QUEUE_FULL = "queue_full"  # admission control: the waiting queue is full
    ENGINE_DEAD = "engine_dead"  # the engine core process is gone (or going)
    INTERNAL = "internal"  # an engine bug, never the client's input


class EngineError(Exception):
    """An engine error of a known kind; subclasses fix the kind, the client passes it explicitly."""

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str, kind: ErrorKind | None = None):
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind


class ContextLengthError(EngineError, ValueError):
    """The prompt plus the requested completion does not fit in the model's context."""

    kind = ErrorKind.CONTEXT_LENGTH


class QueueFullError(EngineError):
    """The waiting queue is at its admission limit (the server answers 429)."""

    kind = ErrorKind.QUEUE_FULL


def error_kind(exc: BaseException) -> ErrorKind:
    """The kind of an exception raised while admitting a request: bad input is a ValueError/TypeError."""
    if isinstance(exc, EngineError):
        return exc.kind
    if isinstance(exc, (ValueError, TypeError)):
        return ErrorKind.INVALID_REQUEST
    return ErrorKind.INTERNAL
