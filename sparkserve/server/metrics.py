"""Prometheus metrics, under vLLM-compatible names with a ``sparkserve:`` prefix.

Engine-level gauges come from the core's stats snapshots (every step that produced output, plus
the heartbeat); request-level counters and histograms are recorded in the API process as outputs
arrive, so they count every request that reached the engine, including aborted ones.

``sparkserve:request_success_total{finished_reason}`` counts finished *sequences* (a request
with ``n`` = 4 counts 4), as vLLM v1 does for its fanned-out child requests. A request's prompt
tokens are counted when its first output token arrives; inter-token latency is observed once per
engine message that carries new tokens (with speculation one message may carry several).
"""
from __future__ import annotations

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sparkserve.engine.client import OutputEvent
from sparkserve.engine.wire import DraftGateStats, EngineStats, SpecEngineStats

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
        # -- speculative decoding (vLLM names, plus verified drafts and the verify-length counts) --------
        self.spec_counters = {
            "num_drafts": counter("spec_decode_num_drafts", "Verify rounds that carried at least one draft"),
            "num_draft_tokens": counter("spec_decode_num_draft_tokens", "Draft tokens proposed"),
            "num_verified_draft_tokens": counter("spec_decode_num_verified_draft_tokens",
                                                 "Draft tokens sent to the target for verification"),
            "num_accepted_tokens": counter("spec_decode_num_accepted_tokens", "Draft tokens accepted"),
        }
        self._per_pos = Counter(PREFIX + "spec_decode_num_accepted_tokens_per_pos",
                                "Accepted draft tokens by position in the block", ["model_name", "position"],
                                registry=r)
        self._verify_len = Counter(PREFIX + "spec_decode_verify_length",
                                   "Decode rounds by verify length (drafts sent to the target)",
                                   ["model_name", "length"], registry=r)
        self._last_spec = SpecEngineStats()
        self.cost_table_age = gauge("spec_decode_cost_table_age_seconds", "Age of the SPS(B, R) cost table")
        self.cost_table_error = gauge("spec_decode_cost_table_prediction_error",
                                      "Recent mean relative error of predicted step time")
        self.calibration_ece = gauge("spec_decode_calibration_ece", "Confidence calibration error (ECE, window)")
        self.calibration_refits = counter("spec_decode_calibration_refits", "Online STS temperature refits")
        self.gate_steps = counter("spec_decode_draft_gate_steps", "Steps the draft gate decided on")
        self.gate_plain_steps = counter("spec_decode_draft_gate_plain_steps",
                                        "Steps the draft gate ran without drafting (drafting did not pay)")
        self._fallback = Counter(PREFIX + "spec_decode_scheduler_fallback", "Verify planner fallbacks by reason",
                                 ["model_name", "reason"], registry=r)

    def record_stats(self, stats: EngineStats) -> None:
        self.num_requests_running.set(stats.num_running)
        self.num_requests_waiting.set(stats.num_waiting)
        self.kv_cache_usage_perc.set(stats.kv_usage)
        if stats.num_preemptions > self._last_preemptions:
            self.num_preemptions.inc(stats.num_preemptions - self._last_preemptions)
            self._last_preemptions = stats.num_preemptions
        if stats.spec_decode is not None:
            self.record_spec_decode(stats.spec_decode)

    def record_output(self, event: OutputEvent) -> None:
        """One engine message for one request (``engine.client`` times it)."""
        if event.ttft_s is not None:
            self.ttft.observe(event.ttft_s)
            self.prompt_tokens.inc(event.num_prompt_tokens)
        if event.itl_s is not None:
            self.itl.observe(event.itl_s)
        if event.num_new_tokens:
            self.generation_tokens.inc(event.num_new_tokens)
        for reason in event.finish_reasons:
            self.record_finished(reason)
        if event.e2e_s is not None:
            self.e2e.observe(event.e2e_s)

    def record_spec_decode(self, spec: SpecEngineStats | dict) -> None:
        """Cumulative engine-wide spec-decode counters (``EngineStats.spec_decode``) -> Prometheus:
        counters move by the increase since the previous snapshot. A dict of the same shape is
        converted first."""
        if isinstance(spec, dict):
            spec = msgspec.convert(spec, SpecEngineStats)
        last = self._last_spec
        for name, metric in self.spec_counters.items():
            _inc(metric, getattr(spec.total, name), getattr(last.total, name))
        old_pos = last.total.accepted_per_pos
        for k, v in enumerate(spec.total.accepted_per_pos):
            _inc(self._per_pos.labels(self.model_name, str(k)), v, old_pos[k] if k < len(old_pos) else 0)
        for length, v in spec.verify_length_counts.items():
            _inc(self._verify_len.labels(self.model_name, str(length)), v, last.verify_length_counts.get(length, 0))
        self._record_control(spec, last)
        self._last_spec = spec

    def _record_control(self, spec: SpecEngineStats, last: SpecEngineStats) -> None:
        if spec.cost_table is not None:
            self.cost_table_age.set(spec.cost_table.age_s)
            self.cost_table_error.set(spec.cost_table.prediction_error)
        if spec.calibration is not None:
            self.calibration_ece.set(spec.calibration.ece)
            _inc(self.calibration_refits, spec.calibration.num_refits,
                 last.calibration.num_refits if last.calibration else 0)
        if spec.draft_gate is not None:
            old = last.draft_gate or DraftGateStats()
            _inc(self.gate_steps, spec.draft_gate.num_steps, old.num_steps)
            _inc(self.gate_plain_steps, spec.draft_gate.num_plain_steps, old.num_plain_steps)
        if spec.planner is not None:
            old_reasons = last.planner.fallback_reason if last.planner else {}
            for reason, n in spec.planner.fallback_reason.items():
                _inc(self._fallback.labels(self.model_name, reason), n, old_reasons.get(reason, 0))

    def record_finished(self, finished_reason: str) -> None:
        self._request_success.labels(self.model_name, finished_reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _inc(counter, value: float, last: float) -> None:
    """Move a Prometheus counter to a cumulative ``value`` (it never moves back)."""
    if value > last:
        counter.inc(value - last)
