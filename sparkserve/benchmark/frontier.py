"""DSpark's frontier: per setup, the best output throughput among the measured load levels whose
per-user speed stays at or above a floor (``--min-tok-s-user 60,120``).

A run qualifies at floor f when its median tok/s/user is >= f. ``next_load_worth_running`` is the
search's stopping rule: per-user speed falls as load rises, so once a setup's median is below the
lowest floor at ``patience`` (2) load levels in a row, no heavier load is expected to qualify and its
sweep stops (one level is not enough on a noisy machine: a slow minute would end the sweep).
"""
from __future__ import annotations

from dataclasses import dataclass

SPEED_KEY = "median_user_tok_s"
THROUGHPUT_KEY = "output_throughput"


@dataclass
class FrontierPoint:
    """The best run of one setup at one floor (``load`` None: no run met the floor)."""

    setup: str
    min_tok_s_user: float
    load: str | None
    output_throughput: float
    user_tok_s: float


def best_under_floor(runs: list[dict], floor: float, setup: str) -> FrontierPoint:
    """``runs``: summaries with ``load`` (label), ``median_user_tok_s`` and ``output_throughput``."""
    ok = [r for r in runs if r[SPEED_KEY] >= floor]
    if not ok:
        return FrontierPoint(setup, floor, None, 0.0, 0.0)
    best = max(ok, key=lambda r: r[THROUGHPUT_KEY])
    return FrontierPoint(setup, floor, best["load"], best[THROUGHPUT_KEY], best[SPEED_KEY])


def frontier(runs_by_setup: dict[str, list[dict]], floors: list[float]) -> list[FrontierPoint]:
    return [best_under_floor(runs, f, name) for name, runs in runs_by_setup.items() for f in floors]


def next_load_worth_running(runs: list[dict], floors: list[float], patience: int = 2) -> bool:
    """False once the ``patience`` heaviest loads run so far all fell below every floor (a setup's
    runs in load order)."""
    if not floors or len(runs) < patience:
        return True
    return any(r[SPEED_KEY] >= min(floors) for r in runs[-patience:])


def pareto(runs: list[dict]) -> list[dict]:
    """Runs not beaten on both speed and throughput, by decreasing speed (the plotted curve)."""
    out, best_tp = [], -1.0
    for r in sorted(runs, key=lambda r: (-r[SPEED_KEY], -r[THROUGHPUT_KEY])):
        if r[THROUGHPUT_KEY] > best_tp:
            out.append(r)
            best_tp = r[THROUGHPUT_KEY]
    return out
