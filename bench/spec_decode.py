"""Speculative decoding per method: mean acceptance length (tau) and tok/s/user at concurrency 1 and 16.

    python bench/spec_decode.py [--model DIR] [--dataset demo-code] [--methods none ngram dspark ...]
        [--drafter dspark=DIR --drafter dflash=DIR --drafter eagle3=DIR] [--max-tokens 128]

Without --drafter, dspark/dflash/eagle3 use the drafters shipped next to the demo model (if any)
or are skipped. Greedy decoding (temperature 0) unless --temperature is given. All methods run in
one process, one after another, on the same prompts; ratios are against method "none".
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench.common import load_prompts, print_table  # noqa: E402
from bench.load import run_closed_loop  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--dataset", default="demo-code")
    ap.add_argument("--methods", nargs="+", default=["none", "ngram", "dspark", "dflash", "eagle3"])
    ap.add_argument("--drafter", action="append", default=[], help="METHOD=DIR")
    ap.add_argument("--gamma", type=int, default=None, help="num_speculative_tokens (default: the drafter's)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--num-requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    from sparkserve import LLM, SamplingParams
    from sparkserve.assets import demo_drafter_path

    drafters = dict(d.split("=", 1) for d in args.drafter)
    llm_chat = LLM(args.model, num_threads=args.threads)
    prompts = [llm_chat.tokenizer.apply_chat_template([{"role": "user", "content": p}])
               for p in load_prompts(args.dataset, args.num_requests)]
    del llm_chat
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens, seed=0)
    rows, base = [], {}
    for method in args.methods:
        spec = None
        if method != "none":
            spec = {"method": method}
            if method != "ngram":
                path = drafters.get(method) or demo_drafter_path(method)
                if path is None:
                    print(f"skip {method}: no drafter (pass --drafter {method}=DIR)", flush=True)
                    continue
                spec["model"] = path
            if args.gamma:
                spec["num_speculative_tokens"] = args.gamma
        llm = LLM(args.model, speculative_config=spec, num_threads=args.threads,
                  max_num_seqs=max(args.concurrency))
        for c in args.concurrency:
            r = run_closed_loop(llm.engine, prompts, params, c, max(args.num_requests, c))
            if method == "none":
                base[c] = r
            b = base.get(c)
            rows.append([method, c, r.mean_acceptance_length, r.mean_verify_length, r.throughput,
                         r.p50_user_tok_s, r.p50_user_tok_s / b.p50_user_tok_s if b else float("nan")])
            print(f"{method} c={c}: tau {r.mean_acceptance_length:.2f}, {r.throughput:.1f} tok/s", flush=True)
    print(f"\ndataset {args.dataset}, {args.num_requests} requests, max_tokens {args.max_tokens}, "
          f"temperature {args.temperature}")
    print_table(["method", "concurrency", "tau", "mean verify len", "output tok/s", "p50 tok/s/user",
                 "tok/s/user vs none"], rows)


if __name__ == "__main__":
    main()
