"""Setups to compare (``--compare name=URL`` or ``name=LAUNCH ARGS``) and their interleaved schedule.

All setups stay up for the whole invocation and their runs alternate per load level and repeat, so
ratios between setups come from the same minutes of a noisy machine. The setup order rotates from
one repeat to the next (A B C, B C A, C A B, ...), so no setup always runs first after a pause.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class Setup:
    """A server to measure: ``base_url`` of a running one, or ``launch_args`` for ``sparkserve launch``."""

    name: str
    base_url: str | None = None
    launch_args: tuple[str, ...] = ()


def parse_setup(text: str) -> Setup:
    """``name=http://host:port`` or ``name=--model DIR --speculative-config '{...}'`` (may be empty)."""
    name, sep, rest = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"bad --compare {text!r}: want NAME=URL or NAME=LAUNCH ARGS")
    rest = rest.strip()
    if rest.startswith(("http://", "https://")):
        return Setup(name.strip(), base_url=rest)
    return Setup(name.strip(), launch_args=tuple(shlex.split(rest)))


def interleaved_schedule(setups: list[str], loads: list, repeats: int = 1) -> list[tuple]:
    """``(load, repeat, setup)`` in run order: loads ascending (outer), then repeats, then the setups
    rotated by the repeat index."""
    order = []
    for load in loads:
        for rep in range(repeats):
            k = rep % len(setups) if setups else 0
            order += [(load, rep, s) for s in setups[k:] + setups[:k]]
    return order
