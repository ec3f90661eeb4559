"""The fused layer ops (csrc/layer_ops.cpp via sparkserve/layers/fused.py): native vs their torch references.

    python bench/native_ops.py [--ops-only | --decode-only] [--rounds 5] [--output-len 64]

1. Per op, at decode shapes (1, 16, 64 rows; the demo's hidden 256 / 8 q heads / 2 kv heads / head_dim 32 /
   intermediate 768, and the W=4 inflated world's 1024 / 32 / 8 / 32 / 3072), fp32, one thread: microseconds
   per call through the same wrappers the model calls, native and torch interleaved in one process
   (the best of ``--rounds`` alternating blocks of 200 calls: the machine is shared, the minimum is the stable figure).
2. Plain decode on the demo model (LLM.generate, greedy, ignore_eos, c = 1 and 16, one thread, the torch
   attention backend so that only the layer ops differ): first in one process, the layer ops on and off in
   alternating generate calls of one engine; then one subprocess per (mode, c), modes alternating
   round by round: ``native`` (kernels on), ``layer-ops-off`` (kernels on, the layer ops forced onto torch)
   and ``env-off`` (SPARKSERVE_NATIVE=0: every kernel off). Reports ms per engine step and the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
from bench.common import print_table  # noqa: E402

SHAPES = {"demo": dict(hidden=256, hq=8, hk=2, d=32, inter=768), "W=4": dict(hidden=1024, hq=32, hk=8, d=32, inter=3072)}
ROWS = (1, 16, 64)
MODES = ("native", "layer-ops-off", "env-off")


class Heads:
    def __init__(self, hq, hk, d, norm_cls):
        self.num_heads, self.num_kv_heads, self.head_dim, self.qk_norm = hq, hk, d, True
        self.q_norm, self.k_norm = norm_cls(d), norm_cls(d)


def op_calls(shape: dict, rows: int) -> dict:
    """name -> zero-argument callable running one op through sparkserve.layers.fused (or RMSNorm)."""
    from sparkserve.layers import fused
    from sparkserve.layers.norm import RMSNorm
    from sparkserve.layers.rotary import RotaryEmbedding

    g = torch.Generator().manual_seed(0)
    h, hq, hk, d, inter = shape["hidden"], shape["hq"], shape["hk"], shape["d"], shape["inter"]
    x, delta = torch.randn(rows, h, generator=g), torch.randn(rows, h, generator=g)
    qkv = torch.randn(rows, (hq + 2 * hk) * d, generator=g)
    gate_up = torch.randn(rows, 2 * inter, generator=g)
    positions = torch.randint(0, 2048, (rows,), generator=g)
    norm, heads, rotary = RMSNorm(h), Heads(hq, hk, d, RMSNorm), RotaryEmbedding(d, 2048, 1e6)
    return {"rms_norm": lambda: norm(x), "add_rms_norm": lambda: fused.add_rms_norm(x, delta, norm),
            "qk_norm_rope": lambda: fused.qkv_norm_rope(heads, qkv, positions, rotary),
            "silu_and_mul": lambda: fused.silu_and_mul(gate_up)}


def time_call(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def bench_ops(rounds: int) -> None:
    from sparkserve import native
    from sparkserve.layers import fused

    native.require()
    on = fused.use_native
    rows_out = []
    with torch.inference_mode():
        for world, shape in SHAPES.items():
            for rows in ROWS:
                for name, fn in op_calls(shape, rows).items():
                    times = {"native": [], "torch": []}
                    for _ in range(rounds):
                        for mode in ("native", "torch"):
                            fused.use_native = on if mode == "native" else (lambda *t: False)
                            time_call(fn, 20)  # warm
                            times[mode].append(time_call(fn, 200))
                    fused.use_native = on
                    nat, ref = min(times["native"]), min(times["torch"])
                    rows_out.append([world, rows, name, round(nat, 1), round(ref, 1), round(ref / nat, 2)])
    print("\nper-op time, us per call (best of alternating blocks), fp32, 1 thread")
    print_table(["world", "rows", "op", "native us", "torch us", "torch/native"], rows_out)


def decode_child(mode: str, concurrency: int, output_len: int) -> None:
    """One measurement in a fresh process: ms per engine step of plain greedy decode on the demo model."""
    from bench.common import load_prompts
    from sparkserve import LLM, SamplingParams
    from sparkserve.assets import demo_model_path
    from sparkserve.layers import fused

    if mode == "layer-ops-off":
        fused.use_native = lambda *tensors: False
    llm = LLM(demo_model_path(), max_num_seqs=concurrency, max_model_len=512, enable_prefix_caching=False,
              num_threads=1, attention_backend="torch")
    prompts = load_prompts("demo-chat", concurrency)
    params = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True)
    llm.generate(prompts[:1], SamplingParams(temperature=0.0, max_tokens=8))  # warm-up
    eng = llm.engine
    steps0, t0 = eng.num_steps, time.perf_counter()
    outs = llm.generate(prompts, params)
    wall = time.perf_counter() - t0
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    print(json.dumps({"ms_per_step": wall / (eng.num_steps - steps0) * 1e3, "tok_s": tokens / wall}))


def bench_decode_in_process(rounds: int, output_len: int) -> None:
    """The layer ops on and off (forced onto torch) in alternating generate calls of one engine."""
    from bench.common import load_prompts
    from sparkserve import LLM, SamplingParams
    from sparkserve.assets import demo_model_path
    from sparkserve.layers import fused

    on, table = fused.use_native, []
    for c in (1, 16):
        llm = LLM(demo_model_path(), max_num_seqs=c, max_model_len=512, enable_prefix_caching=False, num_threads=1,
                  attention_backend="torch")
        prompts, eng = load_prompts("demo-chat", c), llm.engine
        params = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True)
        llm.generate(prompts[:1], SamplingParams(temperature=0.0, max_tokens=8))  # warm-up
        ms = {"on": [], "off": []}
        for r in range(2 * rounds):
            mode = ("on", "off")[r % 2]
            fused.use_native = on if mode == "on" else (lambda *tensors: False)
            steps0, t0 = eng.num_steps, time.perf_counter()
            llm.generate(prompts, params)
            ms[mode].append((time.perf_counter() - t0) / (eng.num_steps - steps0) * 1e3)
        fused.use_native = on
        best = {m: min(v) for m, v in ms.items()}
        med = {m: statistics.median(v) for m, v in ms.items()}
        table.append([c, round(best["on"], 3), round(best["off"], 3), round(best["off"] / best["on"], 3),
                      round(med["on"], 3), round(med["off"], 3), round(med["off"] / med["on"], 3)])
    print(f"\nplain decode, demo model, one process, layer ops on/off in alternating generate calls ({rounds} each), "
          f"{output_len} tokens per request, 1 thread, torch attention backend")
    print_table(["c", "on ms/step (best)", "off ms/step (best)", "off/on (best)", "on (median)", "off (median)",
                 "off/on (median)"], table)


def bench_decode(rounds: int, output_len: int) -> None:
    results = {(m, c): [] for m in MODES for c in (1, 16)}
    for r in range(rounds):
        order = MODES if r % 2 == 0 else MODES[::-1]
        for c in (1, 16):
            for mode in order:
                env = dict(os.environ, SPARKSERVE_NATIVE="0" if mode == "env-off" else "1")
                out = subprocess.run([sys.executable, __file__, "--child", mode, str(c), str(output_len)], env=env,
                                     cwd=ROOT, capture_output=True, text=True, check=True).stdout
                results[(mode, c)].append(json.loads(out.strip().splitlines()[-1]))
    table = []
    for c in (1, 16):
        med = {m: statistics.median(x["ms_per_step"] for x in results[(m, c)]) for m in MODES}
        tok = {m: statistics.median(x["tok_s"] for x in results[(m, c)]) for m in MODES}
        table.append([c, *(round(med[m], 3) for m in MODES), *(round(tok[m]) for m in MODES),
                      round(med["layer-ops-off"] / med["native"], 3), round(med["env-off"] / med["native"], 3)])
    print(f"\nplain decode, demo model, {output_len} tokens per request, 1 thread, torch attention backend, "
          f"median of {rounds} alternating rounds")
    print_table(["c", *(f"{m} ms/step" for m in MODES), *(f"{m} tok/s" for m in MODES),
                 "layer-ops-off/native", "env-off/native"], table)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        torch.set_num_threads(1)
        decode_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--ops-only", action="store_true")
    ap.add_argument("--decode-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not args.decode_only:
        bench_ops(args.rounds)
    if not args.ops_only:
        bench_decode_in_process(args.rounds, args.output_len)
        bench_decode(args.rounds, args.output_len)


if __name__ == "__main__":
    main()
