"""Sampler and verify() time, native kernels vs the torch reference, interleaved in one process.

V = 8192 (the demo's vocabulary), logits ~ N(0, 2.5^2). Two samplings: the demo's (T = 0.7, top-k 20,
top-p 0.8) and top-p only (T = 1, top-p 0.8, the full-sort path of the reference). For 1, 16 and 64
rows: ``Sampler.sample`` on that many rows, and ``verify`` on that many requests with 1 + 7-token
blocks whose drafts come from a q near p (a mix of accepts and rejects), fp32 q tensors. Each round
times every case with both backends back to back; the table gives the median per-call time and
torch / native. Usage: ``python bench/native_sampling.py [--rounds 15] [--threads 1]``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from sparkserve import native
from sparkserve.sample import Sampler
from sparkserve.spec_decode.verify import VerifyInput, verify
from sparkserve.step import SamplingMeta

VOCAB = 8192
BLOCK = 7  # drafts per verify block (1 + 7 rows)
SAMPLINGS = {"demo T0.7 k20 p0.8": SamplingMeta(temperature=0.7, top_k=20, top_p=0.8),
             "top-p 0.8 only": SamplingMeta(top_p=0.8)}


def _sample_case(rows: int, meta: SamplingMeta, g: torch.Generator):
    logits = torch.randn(rows, VOCAB, generator=g) * 2.5
    gens = [torch.Generator().manual_seed(i) for i in range(rows)]

    def run(backend: str):
        return Sampler(backend=backend).sample(logits, [meta] * rows, gens)
    return run


def _verify_case(requests: int, meta: SamplingMeta, g: torch.Generator):
    logits = torch.randn(requests * (BLOCK + 1), VOCAB, generator=g) * 2.5
    inputs = []
    for i in range(requests):
        rows = logits[i * (BLOCK + 1): i * (BLOCK + 1) + BLOCK]
        q = torch.softmax(rows * 1.5 + 0.3 * torch.randn(BLOCK, VOCAB, generator=g), dim=-1)  # [7, V]
        drafts = torch.multinomial(q, 1, generator=g).squeeze(1).tolist()
        inputs.append(VerifyInput(drafts, q, meta, torch.Generator().manual_seed(i)))

    def run(backend: str):
        return verify(logits, inputs, backend=backend)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    native.require()
    g = torch.Generator().manual_seed(0)
    cases = {}
    for name, meta in SAMPLINGS.items():
        for n in (1, 16, 64):
            cases[("sample", name, n)] = _sample_case(n, meta, g)
            cases[("verify 1+7", name, n)] = _verify_case(n, meta, g)
    times = {(key, b): [] for key in cases for b in ("torch", "native")}
    for run in cases.values():  # warm-up
        run("torch"), run("native")
    for _ in range(args.rounds):
        for key, run in cases.items():
            for backend in ("torch", "native"):
                start = time.perf_counter()
                run(backend)
                times[(key, backend)].append(time.perf_counter() - start)
    print(f"threads {args.threads}, rounds {args.rounds}, V {VOCAB}; median ms per call")
    print(f"| {'op':10} | {'sampling':18} | {'rows/requests':>13} | {'torch ms':>9} | {'native ms':>9} | {'torch/native':>12} |")
    print(f"|{'-' * 12}|{'-' * 20}|{'-' * 15}|{'-' * 11}|{'-' * 11}|{'-' * 14}|")
    for key in cases:
        t, n = (statistics.median(times[(key, b)]) * 1e3 for b in ("torch", "native"))
        print(f"| {key[0]:10} | {key[1]:18} | {key[2]:>13} | {t:9.3f} | {n:9.3f} | {t / n:12.1f} |")


if __name__ == "__main__":
    main()
