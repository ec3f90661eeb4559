"""Startup profiling of the step-time curve t(B) that the cost table interpolates.

The engine passes ``run_step(num_tokens) -> seconds``: it runs one synthetic step of ``num_tokens``
forward tokens, shaped like real traffic (a prefill chunk plus decoding requests with verify blocks,
drafter included) and returns its wall time. This module only chooses which B to measure and how
often, within a time limit, and turns the samples into a ``CostTable`` (median per bucket, robust
scale from the median absolute deviation).
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

from sparkserve.spec_decode.cost_model import CostKey, CostTable

_MAD_TO_STD = 1.4826  # median absolute deviation -> standard deviation for normal noise


def default_grid(budget: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, 24, ... (powers of two and their midpoints) up to ``budget``,
    plus ``budget`` itself. Denser where small batches change fastest; ~2 log2(budget) points."""
    if budget < 1:
        raise ValueError(f"the token budget must be >= 1, got {budget}")
    grid, p = {1}, 1
    while p <= budget:
        grid.add(p)
        if p >= 2 and p + p // 2 <= budget:
            grid.add(p + p // 2)
        p *= 2
    grid.add(budget)
    return sorted(grid)


def profile_step_times(run_step: Callable[[int], float], budget: int, time_limit_s: float = 30.0, *,
                       grid: Sequence[int] | None = None, warmup: bool = True, max_repeats: int = 16,
                       key: CostKey | None = None, clock: Callable[[], float] = time.perf_counter,
                       **table_kwargs) -> CostTable:
    """Measure t(B) on ``grid`` (default ``default_grid(budget)``) and return the table.

    ``time_limit_s`` is a deadline, not a hint: an unrecorded warm-up pass (allocator, kernel
    autotuning, CUDA graphs) for at most a quarter of it, then recorded passes over the grid in
    ascending order (up to ``max_repeats``) while the next one is expected to fit. When the deadline
    passes mid-pass the profile stops there, as soon as two buckets have a sample; buckets never
    reached are left out and the table extends its last measured segment to them (a slow machine
    gets a shorter, extrapolated table instead of a longer start; online refinement fills it in).
    """
    points = sorted({int(b) for b in (grid if grid is not None else default_grid(budget))})
    if not points or points[0] < 1:
        raise ValueError(f"profile grid must hold positive token counts, got {points}")
    start = clock()
    deadline = start + time_limit_s
    if warmup:
        for b in points:
            if clock() - start > 0.25 * time_limit_s:
                break
            run_step(b)
    samples: dict[int, list[float]] = {b: [] for b in points}
    need = min(2, len(points))
    for _ in range(max(max_repeats, 1)):
        pass_start = clock()
        for b in points:
            if clock() > deadline and sum(1 for v in samples.values() if v) >= need:
                break
            samples[b].append(float(run_step(b)))
        else:
            if clock() + (clock() - pass_start) <= deadline:
                continue
        break
    measured = [b for b in points if samples[b]]
    medians = [statistics.median(samples[b]) for b in measured]
    scales = [_MAD_TO_STD * statistics.median(abs(x - m) for x in samples[b]) for b, m in zip(measured, medians)]
    return CostTable(measured, medians, scales, key=key, **table_kwargs)
