"""Exceptions that cross from the engine to its callers (torch-free, importable by the API server)."""


class ContextLengthError(ValueError):
    """The prompt plus the requested completion does not fit in the model's context."""


class QueueFullError(Exception):
    """The waiting queue is at its admission limit (the server answers 429)."""
