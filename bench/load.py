"""A closed-loop load driver over the Engine (one process, no HTTP): keeps ``concurrency`` requests
in flight until ``num_requests`` have finished, and measures each request's output speed.

A library for the in-process sweeps (``concurrency_sweep.py``, ``spec_decode.py``, ``ab_trees.py``),
which isolate the engine from HTTP. To load-test a server (this one or another engine's), use
``sparkserve bench serve``; per-user speed has one definition, ``sparkserve.benchmark.metrics.user_tok_s``.
"""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field

from sparkserve.benchmark.metrics import user_tok_s


@dataclass
class LoadResult:
    concurrency: int
    wall_s: float
    output_tokens: int
    per_user_tok_s: list[float] = field(default_factory=list)  # each request: output tokens / its latency
    mean_acceptance_length: float = 0.0
    mean_verify_length: float = 0.0

    @property
    def throughput(self) -> float:
        return self.output_tokens / self.wall_s

    @property
    def p50_user_tok_s(self) -> float:
        return statistics.median(self.per_user_tok_s) if self.per_user_tok_s else 0.0


def run_closed_loop(engine, prompts: list, params, concurrency: int, num_requests: int) -> LoadResult:
    """prompts are cycled; ``params`` is one SamplingParams for every request."""
    from sparkserve.engine.llm import OutputAccumulator

    acc = OutputAccumulator()  # the engine emits per-step deltas; whole outputs are folded here
    started: dict[str, float] = {}
    finished = 0
    next_i = 0
    tokens = 0
    per_user: list[float] = []
    rounds = emitted = verified = 0
    t0 = time.perf_counter()

    def submit():
        nonlocal next_i
        rid = f"load-{next_i}"
        engine.add_request(rid, prompts[next_i % len(prompts)], params)
        started[rid] = time.perf_counter()
        next_i += 1

    for _ in range(min(concurrency, num_requests)):
        submit()
    while finished < num_requests:
        for out in acc.update(engine.step()):
            now = time.perf_counter()
            n = len(out.outputs[0].token_ids)
            tokens += n
            per_user.append(user_tok_s(n, now - started.pop(out.request_id)))
            s = out.spec_decode
            rounds += s.num_rounds
            emitted += s.num_emitted_tokens
            verified += s.num_verified_draft_tokens
            finished += 1
            if next_i < num_requests:
                submit()
    wall = time.perf_counter() - t0
    return LoadResult(concurrency, wall, tokens, per_user, emitted / rounds if rounds else 1.0,
                      verified / rounds if rounds else 0.0)


if __name__ == "__main__":  # a library, not a script: say so instead of printing nothing
    print(__doc__)
    sys.exit(0 if "--help" in sys.argv or "-h" in sys.argv else 2)
