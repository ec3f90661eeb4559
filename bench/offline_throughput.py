"""Offline decode throughput: sparkserve's engine vs transformers' generate on the same weights.

    python bench/offline_throughput.py [--model DIR] [--output-len 64] [--concurrency 1 8 32 64]

Without --model a ~29M-parameter random-weight Qwen3 is built in /tmp. Prompts are random token
ids (prompt length 32), greedy, ignore_eos, so every request decodes exactly --output-len tokens.
Reports output tok/s per concurrency, the ratio to transformers (batch 1 and static batch 8), and the
engine overhead: the share of engine step wall time spent outside model forwards.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench.common import make_random_qwen3, num_params, print_table  # noqa: E402


def run_engine(model: str, prompts: list[list[int]], output_len: int, concurrency: int, threads: int) -> dict:
    from sparkserve import LLM, SamplingParams

    llm = LLM(model, max_num_seqs=concurrency, max_num_batched_tokens=2048, max_model_len=512,
              enable_prefix_caching=False, num_threads=threads)
    params = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True)
    llm.generate([{"prompt_token_ids": prompts[0]}], SamplingParams(temperature=0.0, max_tokens=4))  # warm-up
    eng = llm.engine
    eng.forward_time_s, steps0 = 0.0, eng.num_steps
    t0 = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts[:max(concurrency, 1)]], params)
    wall = time.perf_counter() - t0
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"tok_s": tokens / wall, "overhead": 1 - eng.forward_time_s / wall, "steps": eng.num_steps - steps0}


def run_hf(model: str, prompts: list[list[int]], output_len: int, batch: int) -> float:
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    ids = torch.tensor(prompts[:batch])
    kw = dict(max_new_tokens=output_len, min_new_tokens=output_len, do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        hf.generate(ids[:, :8], max_new_tokens=4, do_sample=False, pad_token_id=0)  # warm-up
        t0 = time.perf_counter()
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), **kw)
        wall = time.perf_counter() - t0
    return (out.shape[1] - ids.shape[1]) * batch / wall


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for both systems")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = args.model or make_random_qwen3("/tmp/sparkserve-bench-qwen3-29m")
    from sparkserve.models.hf_config import DecoderConfig

    vocab = DecoderConfig.from_file(model).vocab_size
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(1, vocab, (max(args.concurrency), args.prompt_len), generator=g).tolist()
    print(f"model {model}: {num_params(model) / 1e6:.1f}M params, prompt {args.prompt_len}, output {args.output_len}, "
          f"threads {args.threads}", flush=True)
    hf1 = run_hf(model, prompts, args.output_len, 1)
    hf8 = run_hf(model, prompts, args.output_len, 8)
    rows = [["transformers generate", 1, hf1, 1.0, "-"], ["transformers generate (static)", 8, hf8, hf8 / hf1, "-"]]
    for c in args.concurrency:
        r = run_engine(model, prompts, args.output_len, c, args.threads)
        base = hf1 if c == 1 else hf8
        rows.append([f"sparkserve (vs hf b={1 if c == 1 else 8})", c, r["tok_s"], r["tok_s"] / base,
                     f"{100 * r['overhead']:.1f}%"])
    print_table(["system", "concurrency", "output tok/s", "ratio", "engine overhead"], rows)


if __name__ == "__main__":
    main()
