"""DSpark proposal time with the Markov loop native (``csrc/markov.cpp``) vs torch, interleaved in one process.

The shipped demo drafter (``assets/demo/drafters/dspark``: 7 drafts, vanilla head of rank 64, confidence
head, V = 8192) loaded on the demo target as the engine loads it. Each request gets a context of
``--context`` positions observed from random target features (the proposal's cost does not depend on
their values), then ``propose`` is timed for c = 1 and 16 requests, greedy and at the demo's
temperature 0.7 (drafts are drawn from softmax(z / T)). Per case: the whole proposal (the draft step:
block forward, lm_head, the loop) and the loop alone (the same base logits and rows handed to
``DSparkProposer._draft_torch`` or ``markov_native.markov_draft``). Backends alternate within every
round; the table gives medians and torch / native. Last, the share of the loop both backends spend
in the same call: gamma W2 u products through the drafter's own ``markov_w2`` module.
Usage: ``python bench/native_markov.py [--rounds 30] [--threads 1] [--context 128]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from sparkserve import native
from sparkserve.assets import ASSETS_DIR
from sparkserve.models.loader import load_model
from sparkserve.spec_decode import markov_native
from sparkserve.spec_decode.checkpoint import load_drafter
from sparkserve.spec_decode.drafters.common import is_greedy_request
from sparkserve.spec_decode.drafters.dspark import DSparkProposer
from sparkserve.spec_decode.types import ProposeRequest
from sparkserve.step import SamplingMeta

BLOCK_SIZE = 16
BACKENDS = ("torch", "native")


def _proposer(context: int, max_requests: int) -> DSparkProposer:
    demo = os.path.join(ASSETS_DIR, "demo")
    target, _ = load_model(demo, "float32")
    blocks_per_request = (context + 8) // BLOCK_SIZE + 1
    proposer = load_drafter(os.path.join(demo, "drafters", "dspark"), target,
                            num_blocks=max_requests * blocks_per_request + 1, block_size=BLOCK_SIZE)
    feat_dim = len(proposer.target_layer_ids) * target.config.hidden_size
    g = torch.Generator().manual_seed(0)
    for i in range(max_requests):
        slots = [_table(i, blocks_per_request)[p // BLOCK_SIZE] * BLOCK_SIZE + p % BLOCK_SIZE for p in range(context)]
        proposer.observe(torch.randn(context, feat_dim, generator=g), torch.zeros(context, dtype=torch.long),
                         torch.arange(context), torch.tensor(slots), torch.full((context,), -1))
    return proposer


def _table(i: int, blocks_per_request: int) -> list[int]:
    return list(range(1 + i * blocks_per_request, 1 + (i + 1) * blocks_per_request))


def _requests(c: int, temperature: float, context: int, gamma: int) -> list[ProposeRequest]:
    bpr = (context + 8) // BLOCK_SIZE + 1
    return [ProposeRequest(f"r{i}", 100 + 17 * i, context, None, _table(i, bpr), SamplingMeta(temperature=temperature),
                           torch.Generator().manual_seed(i), gamma) for i in range(c)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--context", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    native.require()
    proposer = _proposer(args.context, 16)
    gamma = proposer.num_speculative_tokens
    markov, conf = proposer.model.markov_head, proposer.model.confidence_head
    cases = {(c, t): _requests(c, t, args.context, gamma) for c in (1, 16) for t in (0.0, 0.7)}
    loops = {}
    with torch.inference_mode():
        for key, reqs in cases.items():
            rows = proposer._block_hidden(reqs)[:, :gamma]
            loops[key] = (proposer._logits(rows), rows, [gamma] * len(reqs), [is_greedy_request(r) for r in reqs])

    def propose(key, backend):
        DSparkProposer.markov_backend = backend
        proposer.propose(cases[key])

    @torch.inference_mode()
    def loop(key, backend):
        base, rows, nums, greedy = loops[key]
        if backend == "torch":
            proposer._draft_torch(base, rows, cases[key], nums, greedy)
        else:
            markov_native.markov_draft(markov, conf, base, rows, cases[key], nums, greedy)

    work = {"propose": propose, "loop": loop}
    times = {(w, key, b): [] for w in work for key in cases for b in BACKENDS}
    for _ in range(3):  # warm-up
        for w, fn in work.items():
            for key in cases:
                for b in BACKENDS:
                    fn(key, b)
    for _ in range(args.rounds):
        for w, fn in work.items():
            for key in cases:
                for b in BACKENDS:
                    start = time.perf_counter()
                    fn(key, b)
                    times[(w, key, b)].append(time.perf_counter() - start)
    DSparkProposer.markov_backend = "auto"
    w2_ms = {}
    with torch.inference_mode():
        for c in (1, 16):
            u = markov.markov_w1.weight[:c].clone()  # [c, r]
            samples = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                for _ in range(gamma):
                    markov.markov_w2(u)
                samples.append(time.perf_counter() - start)
            w2_ms[c] = statistics.median(samples) * 1e3
    linear = type(markov.markov_w2).__name__
    print(f"threads {args.threads}, rounds {args.rounds}, context {args.context}, gamma {gamma}, "
          f"drafter linears {linear}; median ms per call")
    print(f"| {'what':8} | {'c':>3} | {'T':>4} | {'torch ms':>9} | {'native ms':>9} | {'torch/native':>12} |")
    print(f"|{'-' * 10}|{'-' * 5}|{'-' * 6}|{'-' * 11}|{'-' * 11}|{'-' * 14}|")
    for w in work:
        for key in cases:
            t, n = (statistics.median(times[(w, key, b)]) * 1e3 for b in BACKENDS)
            print(f"| {w:8} | {key[0]:>3} | {key[1]:>4} | {t:9.3f} | {n:9.3f} | {t / n:12.2f} |")
    print("of the loop, gamma W2 u products (" + linear + "): " + ", ".join(f"c={c} {ms:.3f} ms" for c, ms in w2_ms.items()))


if __name__ == "__main__":
    main()
