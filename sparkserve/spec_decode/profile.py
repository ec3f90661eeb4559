"""Startup profiling of the step-time curve t(B) that the cost table interpolates.

``profile_step_times(run_step, ...)`` chooses which B to measure and how often, within a time limit,
and turns the samples into a ``CostTable`` (median per bucket, robust scale from the median absolute
deviation); ``run_step(num_tokens) -> seconds`` runs one step of B forward tokens. For an engine that
is ``runner_step_time``: it builds a synthetic plan shaped like real traffic (decoding requests with
verify blocks plus a prefill chunk, drafter included, ``synthetic_plan``), has the runner execute
it and returns the step's wall time.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Protocol, Sequence

import torch

from sparkserve.spec_decode.cost_model import CostKey, CostTable
from sparkserve.step import SamplingMeta, ScheduledSeq, StepPlan, StepResult

_MAD_TO_STD = 1.4826  # median absolute deviation -> standard deviation for normal noise


class PlanRunner(Protocol):
    """What profiling needs from the runner (``runner.model_runner.ModelRunner`` is one)."""

    block_size: int  # token slots per KV block
    num_blocks: int  # KV blocks (block 0 is never handed out)
    gamma: int  # drafts per block (0: no drafter)
    vocab_size: int
    max_position_embeddings: int

    def execute(self, plan: StepPlan) -> StepResult: ...


def synthetic_plan(runner: PlanRunner, num_tokens: int, max_num_seqs: int, context_len: int = 64) -> StepPlan:
    """One step of ``num_tokens`` forward tokens: up to ``max_num_seqs`` greedy decoding sequences
    verifying gamma drafts each (context ``context_len``), plus prefill chunks for the rest. Request
    ids ``__profile_<i>``; random token ids (seeded by ``num_tokens``) double as the history text
    drafters read. Sequences are laid out on consecutive KV blocks from block 1; those that would not
    fit the cache are left out."""
    gamma, bs = runner.gamma, runner.block_size
    max_len = runner.max_position_embeddings - gamma - 2
    per_seq = 1 + gamma
    num_dec = min(num_tokens // per_seq, max_num_seqs)
    prefill = num_tokens - num_dec * per_seq
    work = [(context_len, per_seq, gamma)] * num_dec  # (start, tokens, drafts)
    while prefill > 0:
        work.append((0, min(prefill, max_len), 0))
        prefill -= work[-1][1]
    seqs, next_block = [], 1
    g = torch.Generator().manual_seed(num_tokens)
    for i, (start, n, drafts) in enumerate(work):
        need = -(-(start + n + gamma + 1) // bs)
        if next_block + need > runner.num_blocks:
            break
        blocks = list(range(next_block, next_block + need))
        next_block += need
        history = torch.randint(0, runner.vocab_size, (start + n - drafts,), generator=g).tolist()
        seqs.append(ScheduledSeq(f"__profile_{i}", history[start:] + [0] * drafts, start, blocks,
                                 SamplingMeta(temperature=0.0), num_draft_tokens=drafts, history_token_ids=history))
    return StepPlan(seqs)


def runner_step_time(runner: PlanRunner, num_tokens: int, max_num_seqs: int, context_len: int = 64) -> float:
    """Seconds for the runner to execute ``synthetic_plan(...)``. Only call while no request is live:
    the plan writes into arbitrary KV blocks (never read later: nothing registers them in the prefix
    cache), and its request ids are dropped from the runner afterwards."""
    plan = synthetic_plan(runner, num_tokens, max_num_seqs, context_len)
    result = runner.execute(plan)
    runner.execute(StepPlan([], finished_request_ids=[s.request_id for s in plan.seqs]))
    return result.step_time_s


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
