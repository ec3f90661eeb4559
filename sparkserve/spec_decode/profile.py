"""Startup profiling of the step-time table t(B, R) that the cost table interpolates.

``profile_step_times(run_step, ...)`` chooses which (B, R) to measure and how often, within a time
limit, and turns the samples into a ``CostTable`` (median per point, robust scale from the median
absolute deviation). ``run_step(num_tokens, num_drafting) -> seconds`` runs one step of B forward
tokens after which R requests draft (``run_step(num_tokens)`` for a B-only table). For an engine that
is ``runner_step_time``: it builds a synthetic plan shaped like real traffic (``synthetic_plan``:
plain decoding for R = 0; R decoding requests verifying drafts and drafting the next block for R > 0),
has the runner execute it and returns the step's wall time; ``profile_runner`` ties the two together.

The grid is sparse in R: the whole B grid with drafting off (row R = 0), and per drafting bucket R
(1, 2, 4, ... up to the batch size) two points, B = R (anchors only: the drafter's own cost) and
B = R (1 + gamma) (every draft verified); d(R) is the median of what they cost above t(B, 0).
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


def _work(gamma: int, num_tokens: int, max_num_seqs: int, num_drafting: int | None) -> tuple[list[int], int, bool]:
    """(drafts verified per decoding sequence, prefill tokens, whether the prefill samples)."""
    if num_drafting is None:  # the B-only profile's shape: decodes verifying gamma drafts, then prefill
        drafts = [gamma] * min(num_tokens // (1 + gamma), max_num_seqs)
    elif num_drafting == 0:  # plain decoding
        drafts = [0] * min(num_tokens, max_num_seqs)
    else:  # R decoding requests sharing the verified drafts (<= gamma each)
        num_dec = min(num_drafting, num_tokens)
        extra = min(num_tokens - num_dec, num_dec * gamma)
        drafts = [extra // num_dec + (i < extra % num_dec) for i in range(num_dec)]
    # prefill of an R > 0 step does not sample: then exactly R requests draft
    return drafts, num_tokens - len(drafts) - sum(drafts), not num_drafting


def synthetic_plan(runner: PlanRunner, num_tokens: int, max_num_seqs: int, context_len: int = 64,
                   num_drafting: int | None = None) -> StepPlan:
    """One step of ``num_tokens`` forward tokens, greedy. ``num_drafting`` None: up to ``max_num_seqs``
    decoding sequences verifying gamma drafts each plus prefill chunks for the rest; 0: up to
    ``max_num_seqs`` plain decoding sequences plus prefill, drafting off; R > 0: R decoding sequences
    verifying the other B - R tokens as drafts (at most gamma each; prefill chunks that do not sample
    beyond that), then all R draft. Decodes have context ``context_len``. Request ids ``__profile_<i>``;
    random token ids (seeded by ``num_tokens``) double as the history text drafters read. Sequences
    are laid out on consecutive KV blocks from block 1; those that would not fit the cache are left out."""
    gamma, bs = runner.gamma, runner.block_size
    max_len = runner.max_position_embeddings - gamma - 2
    drafts, prefill, sample_prefill = _work(gamma, num_tokens, max_num_seqs, num_drafting)
    work = [(context_len, 1 + d, d, True) for d in drafts]  # (start, tokens, drafts, sample)
    while prefill > 0:
        work.append((0, min(prefill, max_len), 0, sample_prefill))
        prefill -= work[-1][1]
    seqs, next_block = [], 1
    g = torch.Generator().manual_seed(num_tokens)
    for i, (start, n, drafts, sample) in enumerate(work):
        need = -(-(start + n + gamma + 1) // bs)
        if next_block + need > runner.num_blocks:
            break
        blocks = list(range(next_block, next_block + need))
        next_block += need
        history = torch.randint(0, runner.vocab_size, (start + n - drafts + (not sample),), generator=g).tolist()
        seqs.append(ScheduledSeq(f"__profile_{i}", history[start:start + n - drafts] + [0] * drafts, start, blocks,
                                 SamplingMeta(temperature=0.0), sample=sample, num_draft_tokens=drafts,
                                 history_token_ids=history))
    return StepPlan(seqs, draft=num_drafting != 0)


def runner_step_time(runner: PlanRunner, num_tokens: int, max_num_seqs: int, context_len: int = 64,
                     num_drafting: int | None = None) -> float:
    """Seconds for the runner to execute ``synthetic_plan(...)``. Only call while no request is live:
    the plan writes into arbitrary KV blocks (never read later: nothing registers them in the prefix
    cache), and its request ids are dropped from the runner afterwards."""
    plan = synthetic_plan(runner, num_tokens, max_num_seqs, context_len, num_drafting)
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


def drafting_grid(max_num_seqs: int, budget: int) -> list[int]:
    """Drafting rows R: 1, 2, 4, ... up to min(max_num_seqs, budget), which is included."""
    top = max(min(max_num_seqs, budget), 1)
    return sorted({1 << i for i in range(top.bit_length()) if 1 << i <= top} | {top})


def profile_runner(runner: PlanRunner, budget: int, max_num_seqs: int, time_limit_s: float,
                   key: CostKey | None = None, **kwargs) -> CostTable:
    """t(B, R) of ``runner`` on synthetic plans (``profile_step_times`` with ``runner_step_time``)."""
    return profile_step_times(lambda b, r: runner_step_time(runner, b, max_num_seqs, num_drafting=r), budget,
                              time_limit_s, num_drafting=drafting_grid(max_num_seqs, budget), gamma=runner.gamma,
                              key=key, **kwargs)


def profile_step_times(run_step: Callable[..., float], budget: int, time_limit_s: float = 30.0, *,
                       grid: Sequence[int] | None = None, num_drafting: Sequence[int] | None = None,
                       gamma: int = 0, warmup: bool = True, max_repeats: int = 16, key: CostKey | None = None,
                       clock: Callable[[], float] = time.perf_counter, **table_kwargs) -> CostTable:
    """Measure t on ``grid`` (default ``default_grid(budget)``) and return the table: t(B) with
    ``run_step(b)`` when ``num_drafting`` is None, else t(B, R) with ``run_step(b, r)`` on the sparse
    grid of the module docstring (drafting rows ``num_drafting``, verify blocks of ``gamma``).

    ``time_limit_s`` is a deadline, not a hint: an unrecorded warm-up pass (allocator, kernel
    autotuning, CUDA graphs) for at most a quarter of it, then recorded passes over the points in
    ascending B (up to ``max_repeats``) while the next one is expected to fit. When the deadline
    passes mid-pass the profile stops there, as soon as two R = 0 buckets have a sample; points never
    reached are left out and the table extends its last measured B segment and R rows to them (a
    slow machine gets a shorter, extrapolated table instead of a longer start; online refinement fills
    it in).
    """
    buckets = sorted({int(b) for b in (grid if grid is not None else default_grid(budget))})
    if not buckets or buckets[0] < 1:
        raise ValueError(f"profile grid must hold positive token counts, got {buckets}")
    points: list[tuple[int, int | None]] = [(b, None if num_drafting is None else 0) for b in buckets]
    for r in num_drafting or ():
        points += [(b, r) for b in sorted({r, min(r * (1 + gamma), budget)}) if 1 <= r <= b]
    points.sort(key=lambda p: (p[0], p[1] or 0))

    def run(point):
        return float(run_step(point[0]) if point[1] is None else run_step(*point))

    start = clock()
    deadline = start + time_limit_s
    if warmup:
        for p in points:
            if clock() - start > 0.25 * time_limit_s:
                break
            run(p)
    samples: dict[tuple[int, int | None], list[float]] = {p: [] for p in points}
    need = min(2, len(buckets))
    for _ in range(max(max_repeats, 1)):
        pass_start = clock()
        for p in points:
            if clock() > deadline and sum(1 for q, v in samples.items() if v and not q[1]) >= need:
                break
            samples[p].append(run(p))
        else:
            if clock() + (clock() - pass_start) <= deadline:
                continue
        break
    return _fit(samples, key=key, **table_kwargs)


def _median_and_scale(values: list[float]) -> tuple[float, float]:
    m = statistics.median(values)
    return m, _MAD_TO_STD * statistics.median(abs(x - m) for x in values)


def _fit(samples: dict[tuple[int, int | None], list[float]], **table_kwargs) -> CostTable:
    """The table from the measured points: t(B, 0) as measured; d(R) the median over R's points of
    their time less t(B, 0) there (>= 0), its scale the median of their scales."""
    measured = {p: _median_and_scale(v) for p, v in samples.items() if v}
    plain = sorted(b for b, r in measured if not r)
    row0 = [measured[(b, 0) if (b, 0) in measured else (b, None)] for b in plain]
    base = CostTable(plain, [m for m, _ in row0])
    rows = sorted({r for _, r in measured if r})
    points = [[(m - base.step_time_s(b), s) for (b, rr), (m, s) in measured.items() if rr == r] for r in rows]
    return CostTable(plain, base.step_times_s, [s for _, s in row0], num_drafting=rows,
                     drafting_extra_s=[max(statistics.median(e for e, _ in p), 0.0) for p in points],
                     drafting_scales_s=[statistics.median(s for _, s in p) for p in points], **table_kwargs)
