"""Tensor parallelism on the CPU: TP=2 against TP=1, plain greedy decoding, interleaved (issue 17).

    python bench/tp_decode.py [--model DIR] [--concurrency 1 16] [--rounds 2] [--output-len 32]

Two ranks on a 2-core machine is a correctness run, not a speed claim: every layer's row-parallel products
end in a gloo all-reduce (about 0.2-1 ms each here), which a 2-core CPU cannot hide. Reports output tok/s
per setup and concurrency (medians of the rounds) and whether the greedy tokens of the two setups agree.
"""
from __future__ import annotations

import argparse
import statistics
import time


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="target (default: the demo model)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--output-len", type=int, default=32)
    args = ap.parse_args(argv)
    import torch

    from sparkserve import LLM, SamplingParams

    llms = {tp: LLM(args.model, tensor_parallel_size=tp, num_threads=1, max_num_seqs=max(args.concurrency))
            for tp in (1, 2)}
    vocab = llms[1].engine.model_config.vocab_size
    prompts = torch.randint(4, vocab, (max(args.concurrency), 32), generator=torch.Generator().manual_seed(0))
    params = SamplingParams(temperature=0.0, max_tokens=args.output_len, ignore_eos=True)
    rates: dict[tuple[int, int], list[float]] = {}
    tokens: dict[tuple[int, int], list] = {}
    for r in range(args.rounds):
        for c in args.concurrency:
            for tp in ((1, 2) if r % 2 == 0 else (2, 1)):
                batch = [{"prompt_token_ids": p} for p in prompts[:c].tolist()]
                t0 = time.perf_counter()
                outs = llms[tp].generate(batch, params)
                wall = time.perf_counter() - t0
                rates.setdefault((tp, c), []).append(sum(len(o.outputs[0].token_ids) for o in outs) / wall)
                tokens[(tp, c)] = [o.outputs[0].token_ids for o in outs]
    print(f"model {llms[1].engine.config.model.model}, {args.output_len} greedy tokens, medians of {args.rounds} rounds")
    print("| c | TP=1 tok/s | TP=2 tok/s | TP=2 / TP=1 | greedy tokens equal |")
    print("|---|---|---|---|---|")
    for c in args.concurrency:
        one, two = statistics.median(rates[(1, c)]), statistics.median(rates[(2, c)])
        same = sum(a == b for a, b in zip(tokens[(1, c)], tokens[(2, c)]))
        print(f"| {c} | {one:.1f} | {two:.1f} | {two / one:.2f} | {same}/{c} |")
    for llm in llms.values():
        llm.engine.close()


if __name__ == "__main__":
    main()
