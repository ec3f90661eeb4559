"""The one record type every demo corpus generator returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Example:
    """One single-turn conversation.

    `domain` is "math", "code" or "chat"; `prompt` is the user turn and `response` the assistant
    turn. `reference` is what an evaluator compares against (the final number for math, the
    response itself otherwise); `source` names the template, file or topic it came from.
    """

    domain: str
    prompt: str
    response: str
    reference: str
    source: str

    def to_json(self) -> dict:
        return asdict(self)
