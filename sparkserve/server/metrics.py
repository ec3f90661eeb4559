"""Prometheus metrics, under vLLM-compatible names with a ``sparkserve:`` prefix.

Engine-level gauges come from the core's stats snapshots (every step that produced output, plus
the heartbeat); request-level counters and histograms are recorded in the API process as outputs
arrive, so they count every request that reached the engine, including aborted ones.

``sparkserve:request_success_total{finished_reason}`` counts finished *sequences* (a request
with ``n`` = 4 counts 4), as vLLM v1 does for its fanned-out child requests.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sparkserve.server.ipc import EngineStats

PREFIX = "sparkserve:"
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                 20.0, 40.0, 80.0)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
                0.4, 0.5, 0.75, 1.0, 2.5, 5.0)
_E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
                240.0, 480.0, 960.0)


class Metrics:
    def __init__(self, model_name: str):
        self.registry = CollectorRegistry(auto_describe=True)
        self.model_name = model_name
        r, labels = self.registry, ["model_name"]

        def gauge(name, doc):
            return Gauge(PREFIX + name, doc, labels, registry=r).labels(model_name)

        def counter(name, doc):
            return Counter(PREFIX + name, doc, labels, registry=r).labels(model_name)

        def histogram(name, doc, buckets):
            return Histogram(PREFIX + name, doc, labels, buckets=buckets, registry=r).labels(model_name)

        self.num_requests_running = gauge("num_requests_running", "Requests in the running batch")
        self.num_requests_waiting = gauge("num_requests_waiting", "Requests waiting to be scheduled")
        self.kv_cache_usage_perc = gauge("kv_cache_usage_perc", "KV-cache usage, 0..1 (1 = full)")
        self.num_preemptions = counter("num_preemptions", "Cumulative preemptions")
        self.prompt_tokens = counter("prompt_tokens", "Prefill tokens processed")
        self.generation_tokens = counter("generation_tokens", "Generated tokens")
        self._request_success = Counter(PREFIX + "request_success", "Finished sequences by finish reason",
                                        ["model_name", "finished_reason"], registry=r)
        for reason in ("stop", "length", "abort"):  # export zeros from the start
            self._request_success.labels(model_name, reason)
        self.ttft = histogram("time_to_first_token_seconds", "Time to first token", _TTFT_BUCKETS)
        self.itl = histogram("inter_token_latency_seconds", "Time between output messages", _ITL_BUCKETS)
        self.e2e = histogram("e2e_request_latency_seconds", "Request latency, arrival to finish", _E2E_BUCKETS)
        self._last_preemptions = 0
        # -- speculative decoding ------------------------------------------------------------------
        # Owned by the spec-decode work: create the vLLM-named counters here
        # (``spec_decode_num_drafts_total``, ``spec_decode_num_draft_tokens_total``,
        # ``spec_decode_num_accepted_tokens_total``, ``spec_decode_num_accepted_tokens_per_pos_total``)
        # and our own (verified draft tokens, verify-length histogram, cost-table age, calibration
        # error), then fill them in ``record_spec_decode``.

    def record_stats(self, stats: EngineStats) -> None:
        self.num_requests_running.set(stats.num_running)
        self.num_requests_waiting.set(stats.num_waiting)
        self.kv_cache_usage_perc.set(stats.kv_usage)
        if stats.num_preemptions > self._last_preemptions:
            self.num_preemptions.inc(stats.num_preemptions - self._last_preemptions)
            self._last_preemptions = stats.num_preemptions
        if stats.spec_decode is not None:
            self.record_spec_decode(stats.spec_decode)

    def record_spec_decode(self, counters: dict) -> None:
        """Hook: cumulative engine-wide spec-decode counters (``EngineStats.spec_decode``)."""

    def record_finished(self, finished_reason: str) -> None:
        self._request_success.labels(self.model_name, finished_reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
