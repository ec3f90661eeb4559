"""Before/after on one machine, interleaved: the same workloads run alternately from two source trees.

    git worktree add /tmp/before <rev>
    python bench/ab_trees.py --before /tmp/before --after . [--rounds 3] [--out bench/results/ab]

A refactor is judged by ratios, and this 2-core VM drifts ±20% in speed over minutes, so each round
runs every workload once from each tree, in alternating order (A B, then B A, ...), as separate
processes; each process imports only its own tree's ``sparkserve`` and ``bench`` (cwd and sys.path
point at that tree). Two workloads, both from the trees' own bench code:

* ``offline``: ``bench/offline_throughput.py``'s ``run_engine`` (random-weight ~29M Qwen3, greedy,
  ignore_eos, 64 output tokens) at each ``--offline-concurrency``;
* ``sweep``: the demo concurrency sweep's closed loop (``bench/load.py: run_closed_loop``, mixed
  demo prompts, the model's sampling defaults) for no speculation and for the shipped DSpark with the
  launch-default planner, at each ``--sweep-concurrency``.

Two rates per run: output tokens per wall second, and per CPU second of the process (``time.process_time``),
which other load on the machine disturbs far less than wall time (each engine runs one torch thread).
Prints and writes (``--out``/ab.json, ab.md) the per-round numbers, medians, and after/before ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

DRIVER = r'''
import json, os, sys, time
sys.path.insert(0, os.getcwd())
import torch
job = json.loads(sys.argv[1])
out = []
if job["kind"] == "offline":
    from bench.common import make_random_qwen3
    from sparkserve import LLM, SamplingParams
    model = make_random_qwen3("/tmp/sparkserve-bench-qwen3-29m")
    from sparkserve.models.hf_config import DecoderConfig
    vocab = DecoderConfig.from_file(model).vocab_size
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(1, vocab, (max(job["concurrency"]), 32), generator=g).tolist()
    params = SamplingParams(temperature=0.0, max_tokens=64, ignore_eos=True)
    for c in job["concurrency"]:  # as bench/offline_throughput.py: run_engine, timed by wall and CPU
        llm = LLM(model, max_num_seqs=c, max_num_batched_tokens=2048, max_model_len=512,
                  enable_prefix_caching=False, num_threads=1)
        llm.generate([{"prompt_token_ids": prompts[0]}], SamplingParams(temperature=0.0, max_tokens=4))
        wall0, cpu0 = time.perf_counter(), time.process_time()
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts[:c]], params)
        wall, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        out.append({"workload": f"offline c={c}", "tok_s": tokens / wall, "cpu_tok_s": tokens / cpu_s})
        del llm
else:
    from sparkserve import LLM, SamplingParams
    from sparkserve.assets import demo_speculative_config
    from sparkserve.train.drafter.data import target_sampling
    from bench.concurrency_sweep import mixed_prompts
    from bench.load import run_closed_loop
    spec = demo_speculative_config() if job["setup"] == "dspark" else None
    llm = LLM(None, speculative_config=spec, num_threads=1, max_num_seqs=max(job["concurrency"]),
              kv_cache_memory_bytes=512 << 20)
    prompts = mixed_prompts(llm.tokenizer, 64)
    gen = target_sampling(llm.engine.config.model.model)
    params = SamplingParams(temperature=gen["temperature"], top_p=gen["top_p"], top_k=gen["top_k"],
                            max_tokens=job["max_tokens"], seed=0)
    for c in job["concurrency"]:
        cpu0 = time.process_time()
        r = run_closed_loop(llm.engine, prompts, params, c, max(2 * c, 16))
        cpu_s = time.process_time() - cpu0
        out.append({"workload": f"sweep {job['setup']} c={c}", "tok_s": r.throughput,
                    "cpu_tok_s": r.output_tokens / cpu_s, "p50_user_tok_s": r.p50_user_tok_s})
print("AB-RESULT " + json.dumps(out))
'''


def run_job(tree: str, job: dict, driver: str) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, driver, json.dumps(job)], cwd=os.path.abspath(tree), env=env,
                          capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("AB-RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"job {job} failed in {tree} (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(line[len("AB-RESULT "):])


def markdown(medians: dict[str, dict[str, float]], rounds: int) -> str:
    lines = [f"| workload | before tok/s | after tok/s | ratio | before tok/CPU-s | after tok/CPU-s | ratio |",
             "|---|---|---|---|---|---|---|"]
    for name, m in medians.items():
        lines.append(f"| {name} | {m['before']:.1f} | {m['after']:.1f} | {m['after'] / m['before']:.3f} | "
                     f"{m['before_cpu']:.1f} | {m['after_cpu']:.1f} | {m['after_cpu'] / m['before_cpu']:.3f} |")
    return "\n".join(lines) + f"\n\n(medians of {rounds} rounds; ratio = after / before)"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="source tree of the old version (a git worktree)")
    ap.add_argument("--after", default=".", help="source tree of the new version")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--offline-concurrency", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--sweep-concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "ab"))
    args = ap.parse_args(argv)
    jobs = [{"kind": "offline", "concurrency": args.offline_concurrency}]
    jobs += [{"kind": "sweep", "setup": s, "concurrency": args.sweep_concurrency, "max_tokens": args.max_tokens}
             for s in ("none", "dspark")]
    trees = {"before": args.before, "after": args.after}
    samples: dict[str, dict[str, list[float]]] = {}
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(DRIVER)
    for r in range(args.rounds):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for job in jobs:
            for side in order:
                for row in run_job(trees[side], job, f.name):
                    got = samples.setdefault(row["workload"], {k: [] for k in ("before", "after", "before_cpu",
                                                                                "after_cpu")})
                    got[side].append(row["tok_s"])
                    got[side + "_cpu"].append(row["cpu_tok_s"])
                    print(f"round {r} {side:>6} {row['workload']:<22} {row['tok_s']:8.1f} tok/s "
                          f"{row['cpu_tok_s']:8.1f} tok/CPU-s", flush=True)
    os.unlink(f.name)
    medians = {w: {side: statistics.median(v) for side, v in s.items()} for w, s in samples.items()}
    table = markdown(medians, args.rounds)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "ab.json"), "w") as f:
        json.dump({"args": vars(args), "samples": samples, "medians": medians}, f, indent=1)
    with open(os.path.join(args.out, "ab.md"), "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
