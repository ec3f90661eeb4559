"""DSpark draft step (``propose``): the captured block layers (``csrc/draft_stack.cpp``) vs the fused modules,
interleaved in one process.

    python bench/draft_step.py [--model DIR] [--concurrency 1 16] [--context 128] [--rounds 20] [--threads 1]

The model's shipped DSpark drafter (``DIR/drafters/dspark``: the demo's, or an inflated world's from
``sparkserve demo inflate``) is loaded as the engine loads it (fused for serving, bf16 storage where exact).
Each request observes ``--context`` positions of random target features (a proposal's cost does not depend
on their values), then greedy ``propose`` calls are timed with the captured stack on and off, alternating
inside every round; medians over rounds and modules / captured are printed.
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
from sparkserve.assets import ASSETS_DIR  # noqa: E402
from sparkserve.models.loader import load_model  # noqa: E402
from sparkserve.spec_decode.checkpoint import load_drafter  # noqa: E402
from sparkserve.spec_decode.types import ProposeRequest  # noqa: E402
from sparkserve.step import SamplingMeta  # noqa: E402

BLOCK_SIZE = 16


def _setup(model_dir: str, context: int, max_requests: int):
    target, _ = load_model(model_dir, "auto")
    target.fuse_for_inference(bf16_when_exact=True)
    per_request = (context + 16) // BLOCK_SIZE + 1
    proposer = load_drafter(os.path.join(model_dir, "drafters", "dspark"), target, num_blocks=max_requests * per_request + 1,
                            block_size=BLOCK_SIZE, fuse=True)
    feat_dim = len(proposer.target_layer_ids) * target.config.hidden_size
    tables = [list(range(1 + i * per_request, 1 + (i + 1) * per_request)) for i in range(max_requests)]
    gen = torch.Generator().manual_seed(0)
    for table in tables:
        slots = [table[p // BLOCK_SIZE] * BLOCK_SIZE + p % BLOCK_SIZE for p in range(context)]
        proposer.observe(torch.randn(context, feat_dim, generator=gen), torch.zeros(context, dtype=torch.long),
                         torch.arange(context), torch.tensor(slots), torch.full((context,), -1))
    return proposer, tables


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.path.join(ASSETS_DIR, "demo"))
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--calls", type=int, default=5, help="propose calls per timed cell")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    proposer, tables = _setup(args.model, args.context, max(args.concurrency))
    gamma = proposer.num_speculative_tokens
    reason = proposer.capture_step()
    if reason is not None:
        raise SystemExit(f"the draft step cannot be captured here: {reason}")
    stack = proposer.native_stack
    times: dict[tuple[int, str], list[float]] = {}
    for _ in range(args.rounds):
        for c in args.concurrency:
            reqs = [ProposeRequest(f"r{i}", 100 + 17 * i, args.context, None, tables[i], SamplingMeta(temperature=0.0),
                                   None, gamma) for i in range(c)]
            for mode in ("captured", "modules"):
                proposer.native_stack = stack if mode == "captured" else None
                proposer.propose(reqs)  # warm
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    proposer.propose(reqs)
                times.setdefault((c, mode), []).append((time.perf_counter() - t0) / args.calls)
    rows = []
    for c in args.concurrency:
        cap, mod = statistics.median(times[(c, "captured")]), statistics.median(times[(c, "modules")])
        rows.append([c, f"{mod * 1e3:.2f}", f"{cap * 1e3:.2f}", f"{mod / cap:.2f}"])
    print(f"model {args.model}, drafter gamma={gamma}, context {args.context}, {args.threads} thread(s), "
          f"{args.rounds} rounds x {args.calls} calls")
    print_table(["c", "modules ms", "captured ms", "modules / captured"], rows)


if __name__ == "__main__":
    main()
