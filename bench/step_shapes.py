"""Step time by shape on one target: a 1+7-token verify block vs a 1-token decode step, and 1 vs 2 threads.

    python bench/step_shapes.py [--model DIR] [--context 256] [--concurrency 1 16] [--rounds 7]
                                [--dtypes auto float32]

Issue 14's must-show 3 (b) and (c): run it on the memory-bound world (``sparkserve demo inflate
--width 4 --out /tmp/sparkserve-demo-w4``, then ``--model /tmp/sparkserve-demo-w4``) and on the demo
model. The runner executes hand-built plans (greedy; c sequences, each at ``--context`` cached
tokens, verifying 7 one-hot drafts or decoding one token), no scheduler and no drafter, so the ratio
is the target's own cost of a verify block. Shapes and thread counts alternate inside every round
(torch.set_num_threads between blocks) and medians over rounds are reported, so slow drift of the
machine lands on every cell alike. ``--dtypes`` loads one engine per ``--dtype`` (``auto`` stores the
linear weights in bf16 where exact, ``float32`` keeps fp32 storage) and interleaves them too.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench.common import print_table  # noqa: E402

DRAFTS = 7


def plan(runner, concurrency: int, context: int, drafts: int):
    from sparkserve.step import SamplingMeta, ScheduledSeq, StepPlan

    bs = runner.block_size
    per_seq = -(-(context + drafts + 2) // bs)
    seqs = []
    for i in range(concurrency):
        blocks = list(range(1 + i * per_seq, 1 + (i + 1) * per_seq))
        tokens = [(7 * i + j) % 1000 + 3 for j in range(1 + drafts)]
        seqs.append(ScheduledSeq(f"shape-{i}", tokens, context, blocks, SamplingMeta(temperature=0.0),
                                 num_draft_tokens=drafts))
    return StepPlan(seqs, draft=False)


def time_step(runner, step_plan, repeats: int) -> float:
    """Median seconds of ``repeats`` executions of the same plan (the KV writes are idempotent)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        runner.execute(step_plan)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="target (default: the demo model)")
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=5, help="executions per cell and round")
    ap.add_argument("--dtypes", nargs="+", default=["auto"], help="one engine per --dtype, interleaved")
    args = ap.parse_args(argv)
    from sparkserve import LLM

    runners = {}
    for dtype in args.dtypes:
        llm = LLM(args.model, dtype=dtype, num_threads=1, max_num_seqs=max(args.concurrency),
                  max_model_len=max(args.context + 64, 512))
        runners[dtype] = llm.engine.runner
    need = max(args.concurrency) * -(-(args.context + DRAFTS + 2) // llm.engine.runner.block_size) + 1
    if need > llm.engine.runner.num_blocks:
        raise SystemExit(f"the KV cache has {llm.engine.runner.num_blocks} blocks, the largest shape needs {need}")
    cells = [(w, c, d, t) for w in args.dtypes for c in args.concurrency for d in (0, DRAFTS) for t in args.threads]
    plans = {(w, c, d): plan(runners[w], c, args.context, d)
             for w in args.dtypes for c in args.concurrency for d in (0, DRAFTS)}
    samples: dict[tuple, list[float]] = {cell: [] for cell in cells}
    for w, c, d, t in cells:  # warm-up: first calls allocate and fill caches
        torch.set_num_threads(t)
        time_step(runners[w], plans[(w, c, d)], 2)
    for r in range(args.rounds):
        for cell in (cells if r % 2 == 0 else cells[::-1]):
            w, c, d, t = cell
            torch.set_num_threads(t)
            samples[cell].append(time_step(runners[w], plans[(w, c, d)], args.repeats))
    med = {cell: statistics.median(v) * 1e3 for cell, v in samples.items()}
    rows = []
    for w in args.dtypes:
        for c in args.concurrency:
            for t in args.threads:
                one, block = med[(w, c, 0, t)], med[(w, c, DRAFTS, t)]
                rows.append([f"{w} ({runners[w].weight_dtypes})", c, t, f"{one:.2f}", f"{block:.2f}",
                             f"{block / one:.2f}", f"{med[(w, c, 0, args.threads[0])] / one:.2f}"])
    print(f"model {llm.engine.config.model.model}, context {args.context}, medians of {args.rounds} rounds")
    print_table(["dtype (weights)", "c", "threads", "1-token step ms", f"1+{DRAFTS} verify step ms",
                 "verify / 1-token", f"speed-up vs {args.threads[0]} thread(s), 1-token"], rows)

if __name__ == "__main__":
    main()
