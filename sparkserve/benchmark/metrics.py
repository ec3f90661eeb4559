"""Every metric of a run, computed from the timestamps recorded per request.

Definitions (``vllm bench serve``'s): TTFT = first content event - send; ITL = gaps between content
events (with speculation one event may carry several tokens); TPOT = (E2E - TTFT) / (output tokens
- 1); E2E = last byte - send. Per-user speed (tok/s/user) = output tokens / E2E: what one user
sees, queueing and prefill included. JSON keys follow ``vllm bench serve`` (``mean_ttft_ms``,
``p99_itl_ms``, ``request_throughput``, ...).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass
class RequestRecord:
    """One request as the client saw it. Times are ``time.perf_counter()`` seconds."""

    send_s: float
    event_times_s: list[float] = field(default_factory=list)  # arrival of each content-bearing event
    end_s: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None
    spec_decode: dict | None = None  # the server's usage.spec_decode, when it sent one
    text: str = ""

    @property
    def success(self) -> bool:
        return self.error is None and bool(self.event_times_s)

    @property
    def ttft_s(self) -> float:
        return self.event_times_s[0] - self.send_s

    @property
    def e2e_s(self) -> float:
        return self.end_s - self.send_s

    @property
    def itls_s(self) -> list[float]:
        t = self.event_times_s
        return [b - a for a, b in zip(t, t[1:])]

    @property
    def tpot_s(self) -> float | None:
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1) if self.output_tokens > 1 else None

    @property
    def user_tok_s(self) -> float:
        return user_tok_s(self.output_tokens, self.e2e_s)


def user_tok_s(output_tokens: int, latency_s: float) -> float:
    """Per-user speed: output tokens over the request's whole latency (the one definition; the
    in-process ``bench/load.py`` uses it too)."""
    return output_tokens / latency_s if latency_s > 0 else 0.0


def stats_ms(name: str, values_s: list[float], percentiles=PERCENTILES) -> dict[str, float]:
    """``mean_/median_/std_/pNN_{name}_ms`` of seconds values (zeros when empty, as vLLM)."""
    v = np.asarray(values_s, dtype=float) * 1e3
    if v.size == 0:
        v = np.zeros(1)
    out = {f"mean_{name}_ms": float(v.mean()), f"median_{name}_ms": float(np.median(v)),
           f"std_{name}_ms": float(v.std())}
    out.update({f"p{p:g}_{name}_ms": float(np.percentile(v, p)) for p in percentiles})
    return out


def summarize(records: list[RequestRecord], duration_s: float, slo: dict[str, float] | None = None,
              percentiles=PERCENTILES) -> dict:
    """The run summary: counts, throughputs, latency statistics, per-user speed, goodput."""
    from sparkserve.benchmark.slo import goodput

    ok = [r for r in records if r.success]
    failed = [r for r in records if not r.success]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_tokens for r in ok)
    d = duration_s if duration_s > 0 else float("nan")
    summary = {
        "duration": duration_s, "completed": len(ok), "failed": len(failed), "num_prompts": len(records),
        "total_input_tokens": in_tokens, "total_output_tokens": out_tokens,
        "request_throughput": len(ok) / d, "output_throughput": out_tokens / d,
        "total_token_throughput": (in_tokens + out_tokens) / d,
    }
    good, rate = goodput(ok, slo or {}, duration_s)
    summary.update({"request_goodput": rate, "good_requests": good})
    summary.update(stats_ms("ttft", [r.ttft_s for r in ok], percentiles))
    summary.update(stats_ms("tpot", [r.tpot_s for r in ok if r.tpot_s is not None], percentiles))
    summary.update(stats_ms("itl", [g for r in ok for g in r.itls_s], percentiles))
    summary.update(stats_ms("e2el", [r.e2e_s for r in ok], percentiles))
    speeds = np.asarray([r.user_tok_s for r in ok] or [0.0])
    summary.update({"mean_user_tok_s": float(speeds.mean()), "median_user_tok_s": float(np.median(speeds))})
    summary.update({f"p{p:g}_user_tok_s": float(np.percentile(speeds, p)) for p in (10, 90)})
    summary.update(spec_decode_from_usage(ok))
    return summary


def spec_decode_from_usage(records: list[RequestRecord]) -> dict:
    """Sums of the per-request ``usage.spec_decode`` counters (empty when no request carried them)."""
    spec = [r.spec_decode for r in records if r.spec_decode]
    if not spec:
        return {}
    drafts = sum(s.get("num_drafts", 0) for s in spec)
    verified = sum(s.get("num_verified_draft_tokens", 0) for s in spec)
    accepted = sum(s.get("num_accepted_tokens", 0) for s in spec)
    return {"spec_decode_num_drafts": drafts, "spec_decode_draft_tokens": sum(s.get("num_draft_tokens", 0)
                                                                             for s in spec),
            "spec_decode_verified_draft_tokens": verified, "spec_decode_accepted_tokens": accepted,
            "spec_decode_acceptance_rate": accepted / verified if verified else 0.0,
            "spec_decode_requests": len(spec)}


def per_request_lists(records: list[RequestRecord]) -> dict:
    """vLLM's per-request arrays (``input_lens``, ``output_lens``, ``ttfts``, ``itls``, ``errors``)."""
    return {"input_lens": [r.prompt_tokens for r in records], "output_lens": [r.output_tokens for r in records],
            "ttfts": [r.ttft_s if r.success else 0.0 for r in records],
            "e2els": [r.e2e_s if r.success else 0.0 for r in records],
            "user_tok_s": [r.user_tok_s if r.success else 0.0 for r in records],
            "itls": [r.itls_s if r.success else [] for r in records],
            "errors": [r.error or "" for r in records]}
