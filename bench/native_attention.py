"""Native CPU paged attention (``--attention-backend cpu``) vs the torch backend, interleaved in one process.

    python bench/native_attention.py [--part kernel|e2e|all] [--threads 1] [--rounds 5]

``kernel``: one layer's attention call (K/V write + attention) for the demo's shapes (8 q heads,
2 kv heads, head_dim 32, block 16, fp32) at contexts 128..1024 and c = 1/16/64 sequences, each
sequence a decode row or a 1+7 verify block; plus each backend's per-step ``build_metadata``.
Median over rounds of the per-call time (thread CPU time with one thread), the two backends
alternating within every round.

``e2e``: the demo target's plain greedy decode (``LLM``, demo prompts, --max-tokens each,
ignore_eos) at c = 1 and 16 with ``attention_backend="cpu"`` and ``"torch"``, one engine each,
alternating generate calls; output tokens per wall second and per second of the calling thread's
CPU time (the engine runs in this thread; with one thread that discounts other processes' turns
on a shared machine), medians over rounds.
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench.common import load_prompts, print_table

BACKENDS = ("cpu", "torch")


def demo_step(num_seqs: int, context: int, rows: int, block_size: int = 16, heads=(8, 2), head_dim: int = 32):
    """A step of ``num_seqs`` sequences, each adding ``rows`` tokens to reach ``context`` positions,
    with scattered block tables; returns (PagedBatch, q, k, v, (k_cache, v_cache))."""
    from sparkserve.attention.base import PagedBatch

    gen = torch.Generator().manual_seed(context * 131 + num_seqs)
    per_seq = -(-context // block_size)
    num_blocks = num_seqs * per_seq + 1
    order = (torch.randperm(num_blocks - 1, generator=gen) + 1).tolist()
    tables = [order[i * per_seq:(i + 1) * per_seq] for i in range(num_seqs)]
    slots = [t[p // block_size] * block_size + p % block_size for t in tables for p in range(context - rows, context)]
    batch = PagedBatch([rows] * num_seqs, [context] * num_seqs, tables, block_size, slots)
    caches = tuple(torch.randn(num_blocks, block_size, heads[1], head_dim, generator=gen) for _ in range(2))
    t = num_seqs * rows
    q = torch.randn(t, heads[0], head_dim, generator=gen)
    k, v = (torch.randn(t, heads[1], head_dim, generator=gen) for _ in range(2))
    return batch, q, k, v, caches


def per_call_s(fn, min_time_s: float = 0.02) -> float:
    """Seconds per call; with one thread, the calling thread's CPU time (the bench machine is shared:
    wall time would count other processes' turns), else wall time."""
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    fn()
    n, t0 = 0, clock()
    while True:
        fn()
        n += 1
        elapsed = clock() - t0
        if elapsed >= min_time_s:
            return elapsed / n


def bench_kernel(rounds: int) -> None:
    from sparkserve.attention.registry import get_backend

    backends = {name: get_backend(name) for name in BACKENDS}
    rows_out = []
    for rows, kind in ((1, "decode"), (8, "verify 1+7")):
        for c in (1, 16, 64):
            for context in (128, 256, 512, 1024):
                batch, q, k, v, caches = demo_step(c, context, rows)
                metas = {n: b.build_metadata(batch, torch.device("cpu")) for n, b in backends.items()}
                outs = {n: b.forward(q, k, v, *caches, metas[n], 0.177) for n, b in backends.items()}
                torch.testing.assert_close(outs["cpu"], outs["torch"], atol=1e-5, rtol=1e-5)
                fwd = {n: [] for n in BACKENDS}
                meta = {n: [] for n in BACKENDS}
                for r in range(rounds):
                    for n in (BACKENDS if r % 2 == 0 else BACKENDS[::-1]):
                        b = backends[n]
                        fwd[n].append(per_call_s(functools.partial(b.forward, q, k, v, *caches, metas[n], 0.177)))
                        build = functools.partial(b.build_metadata, batch, torch.device("cpu"))
                        meta[n].append(per_call_s(build, 0.01))
                f = {n: statistics.median(x) * 1e6 for n, x in fwd.items()}
                m = {n: statistics.median(x) * 1e6 for n, x in meta.items()}
                rows_out.append([kind, c, context, f["torch"], f["cpu"], f["torch"] / f["cpu"], m["torch"], m["cpu"]])
                print(f"  {kind} c={c} ctx={context}: torch {f['torch']:.1f} us, cpu {f['cpu']:.1f} us", flush=True)
    print_table(["rows/seq", "c", "context", "torch us/layer", "cpu us/layer", "torch/cpu", "torch meta us/step",
                 "cpu meta us/step"], rows_out)


def bench_e2e(rounds: int, threads: int, max_tokens: int) -> None:
    from sparkserve import LLM, SamplingParams
    from sparkserve.assets import demo_model_path

    prompts = load_prompts("demo-chat", 16)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    rows_out = []
    for c in (1, 16):
        llms = {n: LLM(demo_model_path(), attention_backend=n, max_num_seqs=c, max_model_len=512, num_threads=threads,
                       enable_prefix_caching=False) for n in BACKENDS}
        for llm in llms.values():
            llm.generate(prompts[:c], SamplingParams(temperature=0.0, max_tokens=8))  # warm-up
        wall = {n: [] for n in BACKENDS}
        cpu = {n: [] for n in BACKENDS}
        for r in range(rounds):
            for n in (BACKENDS if r % 2 == 0 else BACKENDS[::-1]):
                t0, c0 = time.perf_counter(), time.thread_time()
                outs = llms[n].generate(prompts[:c], params)
                tokens = sum(len(o.outputs[0].token_ids) for o in outs)
                wall[n].append(tokens / (time.perf_counter() - t0))
                cpu[n].append(tokens / (time.thread_time() - c0))
        w = {n: statistics.median(x) for n, x in wall.items()}
        t = {n: statistics.median(x) for n, x in cpu.items()}
        rows_out.append([c, w["torch"], w["cpu"], w["cpu"] / w["torch"], t["torch"], t["cpu"], t["cpu"] / t["torch"]])
        print(f"  c={c}: torch {w['torch']:.0f} tok/s, cpu {w['cpu']:.0f} tok/s (wall)", flush=True)
        del llms
    print_table(["c", "torch tok/s", "cpu tok/s", "cpu/torch", "torch tok/cpu-s", "cpu tok/cpu-s", "cpu/torch (cpu-s)"],
                rows_out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("kernel", "e2e", "all"), default="all")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (both backends)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128, help="e2e: output tokens per request")
    args = ap.parse_args(argv)
    from sparkserve import native

    native.require()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, rounds {args.rounds}", flush=True)
    with torch.inference_mode():
        if args.part in ("kernel", "all"):
            bench_kernel(args.rounds)
    if args.part in ("e2e", "all"):
        bench_e2e(args.rounds, args.threads, args.max_tokens)


if __name__ == "__main__":
    main()
