"""Plain decoding throughput, three systems interleaved: this tree, a previous version (a git worktree), and
transformers' ``generate`` on the same weights (issue 14, must-show 3 a).

    git worktree add /tmp/before <rev>
    python bench/plain_decode.py --before /tmp/before [--model DIR ...] [--concurrency 1 16 64] [--rounds 3]

For each model (default: the demo model; add the memory-bound world from ``sparkserve demo inflate --width 4``)
and each concurrency c: c prompts of 32 random token ids, greedy, ``ignore_eos``, ``--output-len`` tokens each.
sparkserve runs them through ``LLM.generate`` (continuous batching, c sequences in flight); transformers runs
one static batch of c in fp32 with ``min_new_tokens`` (so both decode exactly the same number of tokens).
Every (model, c, system) runs as its own process with one torch thread, and the systems alternate order
each round (A B C, C B A, ...), so the machine's drift lands on all of them alike. Two rates: output tokens
per wall second and per CPU second of the process. Writes OUT/plain.json and OUT/plain.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench.ab_trees import run_job  # noqa: E402

DRIVER = r'''
import json, os, sys, time
sys.path.insert(0, os.getcwd())
import torch
torch.set_num_threads(1)
job = json.loads(sys.argv[1])
model, c, n = job["model"], job["concurrency"], job["output_len"]
with open(os.path.join(model, "config.json")) as f:
    vocab = json.load(f)["vocab_size"]
g = torch.Generator().manual_seed(0)
prompts = torch.randint(4, vocab, (c, 32), generator=g)
if job["system"] == "hf":
    import transformers
    hf = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        hf.generate(prompts[:1, :8], max_new_tokens=4, do_sample=False, pad_token_id=0)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        out = hf.generate(prompts, attention_mask=torch.ones_like(prompts), **kw)
        wall, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    tokens = (out.shape[1] - prompts.shape[1]) * c
else:
    from sparkserve import LLM, SamplingParams
    llm = LLM(model, max_num_seqs=c, max_num_batched_tokens=2048, max_model_len=512,
              enable_prefix_caching=False, num_threads=1)
    llm.generate([{"prompt_token_ids": prompts[0].tolist()}], SamplingParams(temperature=0.0, max_tokens=4))
    params = SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts.tolist()], params)
    wall, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
print("AB-RESULT " + json.dumps([{"tok_s": tokens / wall, "cpu_tok_s": tokens / cpu_s}]))
'''
SYSTEMS = ("after", "before", "hf")


def markdown(medians: dict, rounds: int) -> str:
    lines = ["| model | c | sparkserve tok/s | previous main tok/s | HF generate tok/s | vs previous | vs HF | "
             "vs previous (CPU-s) | vs HF (CPU-s) |", "|---|---|---|---|---|---|---|---|---|"]
    for (model, c), m in medians.items():
        lines.append(f"| {model} | {c} | {m['after']:.1f} | {m['before']:.1f} | {m['hf']:.1f} | "
                     f"{m['after'] / m['before']:.2f} | {m['after'] / m['hf']:.2f} | "
                     f"{m['after_cpu'] / m['before_cpu']:.2f} | {m['after_cpu'] / m['hf_cpu']:.2f} |")
    return "\n".join(lines) + f"\n\n(medians of {rounds} rounds; one torch thread each)"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="source tree of the previous version (a git worktree)")
    ap.add_argument("--after", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    ap.add_argument("--model", nargs="+", default=None, help="model dirs (default: the demo model)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "plain"))
    args = ap.parse_args(argv)
    if args.model is None:
        from sparkserve.assets import demo_model_path
        args.model = [demo_model_path()]
    trees = {"after": args.after, "before": args.before, "hf": args.after}
    samples: dict = {}
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(DRIVER)
    try:
        for r in range(args.rounds):
            for model in args.model:
                for c in args.concurrency:
                    for system in (SYSTEMS if r % 2 == 0 else SYSTEMS[::-1]):
                        job = {"system": system, "model": os.path.abspath(model), "concurrency": c,
                               "output_len": args.output_len}
                        row = run_job(trees[system], job, f.name)[0]
                        got = samples.setdefault((os.path.basename(model.rstrip("/")), c), {})
                        got.setdefault(system, []).append(row["tok_s"])
                        got.setdefault(system + "_cpu", []).append(row["cpu_tok_s"])
                        print(f"round {r} {system:>6} {model} c={c:<3} {row['tok_s']:8.1f} tok/s "
                              f"{row['cpu_tok_s']:8.1f} tok/CPU-s", flush=True)
    finally:
        os.unlink(f.name)
    medians = {key: {k: statistics.median(v) for k, v in s.items()} for key, s in samples.items()}
    table = markdown(medians, args.rounds)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "plain.json"), "w") as f:
        json.dump({"args": vars(args), "samples": {f"{m} c={c}": s for (m, c), s in samples.items()}}, f, indent=1)
    with open(os.path.join(args.out, "plain.md"), "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
