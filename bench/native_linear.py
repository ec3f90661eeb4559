"""The weight-streaming linear (csrc/linear.cpp) against torch's GEMM, by row count, interleaved.

    python bench/native_linear.py [--shapes 1536x1024 6144x1024 1024x3072 8192x1024] [--rows 1 4 8 16 32 64]
                                  [--rounds 5] [--threads 1]

The shapes default to the W=4 world's projections (``sparkserve demo inflate --width 4``: fused qkv,
gate/up, down, lm_head). Each cell cycles through 4 copies of the weight (together larger than the L2
cache, as in a real step) and reports the median over rounds of microseconds per call, measured in CPU
time of the calling thread (``time.thread_time``; with one thread other load on the machine disturbs it
far less than wall time). Variants: torch fp32 (``F.linear``), stream fp32 weights, stream bf16-stored
weights (fp32 math), torch bf16 (bf16 activations and weights) and stream bf16 x bf16 (vdpbf16ps).
This is where ``layers/linear.py``'s ``STREAM_MAX_ROWS`` comes from.
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

COPIES = 4


def variants(n: int, k: int, rows: int):
    """name -> a zero-argument callable that runs one product (cycling through COPIES weights)."""
    g = torch.Generator().manual_seed(n + k)
    w32 = [torch.randn(n, k, generator=g).bfloat16().float() for _ in range(COPIES)]
    w16 = [w.bfloat16() for w in w32]
    x32 = torch.randn(rows, k, generator=g)
    x16 = x32.bfloat16()
    op = torch.ops.sparkserve.linear_stream
    turn = [0]

    def cycle(ws):
        turn[0] = (turn[0] + 1) % COPIES
        return ws[turn[0]]

    return {
        "torch fp32": lambda: torch.nn.functional.linear(x32, cycle(w32)),
        "stream fp32 w": lambda: op(x32, cycle(w32), None),
        "stream bf16 w": lambda: op(x32, cycle(w16), None),
        "torch bf16": lambda: torch.nn.functional.linear(x16, cycle(w16)),
        "stream bf16 x bf16": lambda: op(x16, cycle(w16), None),
    }


def time_us(fn, calls: int) -> float:
    fn()
    t0 = time.thread_time()
    for _ in range(calls):
        fn()
    return (time.thread_time() - t0) / calls * 1e6


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=["1536x1024", "6144x1024", "1024x3072", "8192x1024"],
                    help="out x in")
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    from sparkserve import native

    native.require()
    torch.set_num_threads(args.threads)
    rows_out = []
    for shape in args.shapes:
        n, k = (int(v) for v in shape.split("x"))
        for rows in args.rows:
            fns = variants(n, k, rows)
            samples: dict[str, list[float]] = {name: [] for name in fns}
            for r in range(args.rounds):
                for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                    samples[name].append(time_us(fns[name], args.calls))
            med = {name: statistics.median(v) for name, v in samples.items()}
            base = med["torch fp32"]
            rows_out.append([shape, rows] + [f"{med[name]:.0f} ({base / med[name]:.2f}x)" for name in fns])
    print(f"us per call (speed-up vs torch fp32), median of {args.rounds} rounds, {args.threads} thread(s)")
    print_table(["out x in", "rows"] + list(variants(1, 1, 1)), rows_out)


if __name__ == "__main__":
    main()
