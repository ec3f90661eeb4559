"""The memory-bound bench world keeps the demo's behaviour (issue #14, must-show 2).

    python bench/inflate_check.py [--inflated /tmp/sparkserve-demo-w4] [--width 4] [--per-set 200]
        [--max-tokens 64] [--spec-per-set 32] [--methods dspark dflash eagle3] [--out bench/results/inflate_check]

Writes the inflated copy first when ``--inflated`` holds none (``sparkserve demo inflate``; keep it
out of the repo). Then, on the demo prompt sets (demo-math, demo-code, demo-chat, first turns in the
chat template, as bench/concurrency_sweep.py sends them):

1. greedy outputs (``--max-tokens`` each) of the demo target and of the inflated target: the share
   of prompts whose token ids are identical (goal >= 95%); for each that differs, where it first
   differs and the demo target's top-2 logprob gap there (a near-tie if small);
2. per drafter, speculative decoding with every draft verified (``verify: fixed``, so no
   timing-driven planner changes the rounds), greedy or at ``--temperature`` (request i seeded with
   i): the mean acceptance length (emitted tokens per round, as bench/load.py counts it) with the
   original pair and with the inflated pair (goal: within 2%).

Prints both tables and writes ``check.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench.common import load_prompts, print_table  # noqa: E402

DATASETS = ("demo-math", "demo-code", "demo-chat")


def chat_prompts(tokenizer, per_set: int) -> list[str]:
    """The first ``per_set`` prompts of every demo set (all of a smaller set), chat template applied."""
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}])
            for name in DATASETS for p in load_prompts(name, per_set)]


def generate(model: str, prompts: list[str], params, spec: dict | None = None, threads: int | None = None):
    from sparkserve import LLM

    llm = LLM(model, speculative_config=spec, num_threads=threads, max_num_seqs=64)
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params)
    return outs, time.perf_counter() - t0


def first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def top2_gap(out, i: int) -> float | None:
    """The demo target's logprob gap between its top two tokens at output position i."""
    lps = out.outputs[0].logprobs
    if not lps or i >= len(lps) or len(lps[i].top) < 2:
        return None
    top = sorted((lp for _, lp in lps[i].top), reverse=True)
    return top[0] - top[1]


def compare_greedy(demo: str, wide: str, prompts: list[str], max_tokens: int, threads) -> dict:
    from sparkserve import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, logprobs=2)
    small, t_small = generate(demo, prompts, params, threads=threads)
    large, t_large = generate(wide, prompts, params, threads=threads)
    diffs = []
    for k, (a, b) in enumerate(zip(small, large)):
        ta, tb = a.outputs[0].token_ids, b.outputs[0].token_ids
        if ta != tb:
            i = first_difference(ta, tb)
            diffs.append({"prompt": k, "first_diff": i, "top2_gap": top2_gap(a, i)})
    return {"num_prompts": len(prompts), "identical": len(prompts) - len(diffs),
            "identical_share": 1 - len(diffs) / len(prompts), "differences": diffs,
            "demo_s": t_small, "inflated_s": t_large,
            "tokens": sum(len(o.outputs[0].token_ids) for o in small)}


def acceptance(model: str, drafter: str, prompts: list[str], max_tokens: int, gamma: int, temperature: float,
               threads) -> dict:
    from sparkserve import SamplingParams

    spec = {"method": os.path.basename(drafter), "model": drafter, "num_speculative_tokens": gamma,
            "verify": "fixed"}
    params = [SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=i) for i in range(len(prompts))]
    outs, seconds = generate(model, prompts, params, spec, threads)
    rounds = sum(o.spec_decode.num_rounds for o in outs)
    emitted = sum(o.spec_decode.num_emitted_tokens for o in outs)
    return {"tau": emitted / rounds if rounds else 0.0, "rounds": rounds, "emitted": emitted, "seconds": seconds,
            "token_ids": [o.outputs[0].token_ids for o in outs]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inflated", default="/tmp/sparkserve-demo-w4", help="inflated model dir (written if absent)")
    ap.add_argument("--width", type=int, default=4)
    ap.add_argument("--per-set", type=int, default=200, help="greedy comparison: prompts per set (200 = all)")
    ap.add_argument("--spec-per-set", type=int, default=32, help="acceptance comparison: prompts per set")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--gamma", type=int, default=7)
    ap.add_argument("--temperature", type=float, default=0.0, help="acceptance comparison (greedy: 0)")
    ap.add_argument("--skip-greedy", action="store_true", help="only the acceptance comparison")
    ap.add_argument("--methods", nargs="+", default=["dspark", "dflash", "eagle3"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "inflate_check"))
    args = ap.parse_args(argv)
    from sparkserve.assets import demo_model_path
    from sparkserve.demo.inflate import inflate
    from sparkserve.models.tokenizer import Tokenizer

    demo = demo_model_path()
    if not os.path.exists(os.path.join(args.inflated, "config.json")):
        print(json.dumps(inflate(demo, args.inflated, args.width), indent=2), flush=True)
    tokenizer = Tokenizer(demo)
    report = {"inflated": args.inflated, "max_tokens": args.max_tokens, "temperature": args.temperature}
    if not args.skip_greedy:
        report["greedy"] = report_greedy(demo, args, tokenizer)
    report["acceptance"] = report_acceptance(demo, args, tokenizer)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "check.json"), "w") as f:
        json.dump(report, f, indent=2)


def report_acceptance(demo: str, args, tokenizer) -> dict:
    spec_prompts = chat_prompts(tokenizer, args.spec_per_set)
    rows, result = [], {}
    for method in args.methods:
        pair = {}
        for name, target in (("demo", demo), ("inflated", args.inflated)):
            pair[name] = acceptance(target, os.path.join(target, "drafters", method), spec_prompts,
                                    args.max_tokens, args.gamma, args.temperature, args.threads)
            print(f"{method} {name}: tau {pair[name]['tau']:.4f} ({pair[name]['seconds']:.0f} s)", flush=True)
        same = sum(a == b for a, b in zip(pair["demo"].pop("token_ids"), pair["inflated"].pop("token_ids")))
        ratio = pair["inflated"]["tau"] / pair["demo"]["tau"]
        result[method] = {**pair, "ratio": ratio, "identical_outputs": same}
        rows.append([method, len(spec_prompts), f"{pair['demo']['tau']:.4f}", f"{pair['inflated']['tau']:.4f}",
                     f"{ratio:.4f}", f"{same}/{len(spec_prompts)}"])
    print_table(["drafter", "prompts", "tau demo", "tau inflated", "ratio", "identical outputs"], rows)
    return result


def report_greedy(demo: str, args, tokenizer) -> dict:
    greedy = compare_greedy(demo, args.inflated, chat_prompts(tokenizer, args.per_set), args.max_tokens,
                            args.threads)
    gaps = sorted(d["top2_gap"] for d in greedy["differences"] if d["top2_gap"] is not None)
    print_table(["prompts", "identical", "share", "max top-2 gap at a difference", "demo s", "inflated s"],
                [[greedy["num_prompts"], greedy["identical"], f"{greedy['identical_share']:.4f}",
                  gaps[-1] if gaps else "-", greedy["demo_s"], greedy["inflated_s"]]])
    return greedy


if __name__ == "__main__":
    main()
