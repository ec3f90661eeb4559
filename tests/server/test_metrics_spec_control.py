"""/metrics for the speculative control loop: cost table age and error, planner fallbacks by
reason, calibration drift, and the draft gate, from the engine's cumulative stats (no server)."""
from prometheus_client.parser import text_string_to_metric_families

from sparkserve.server.metrics import Metrics


def samples(metrics: Metrics) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "model_name") + "}"
                            if len(s.labels) > 1 else "")
            out[key] = s.value
    return out


def stats(steps: int, plain: int, fallbacks: int, refits: int) -> dict:
    return {"num_drafts": 0, "cost_table": {"age_s": 12.5, "prediction_error": 0.08},
            "calibration": {"ece": 0.02, "num_refits": refits},
            "planner": {"fallback_reason": {"lagged_warmup": fallbacks}},
            "draft_gate": {"num_steps": steps, "num_plain_steps": plain, "buckets": {"1": {"spec": 50.0, "plain": 90.0}}}}


def test_control_loop_metrics_are_exported_and_counters_only_move_by_deltas():
    m = Metrics("demo")
    m.record_spec_decode(stats(10, 4, 2, 1))
    m.record_spec_decode(stats(25, 14, 2, 3))
    got = samples(m)
    assert got["sparkserve:spec_decode_cost_table_age_seconds"] == 12.5
    assert got["sparkserve:spec_decode_cost_table_prediction_error"] == 0.08
    assert got["sparkserve:spec_decode_calibration_ece"] == 0.02
    assert got["sparkserve:spec_decode_calibration_refits_total"] == 3
    assert got["sparkserve:spec_decode_scheduler_fallback_total{reason=lagged_warmup}"] == 2
    assert got["sparkserve:spec_decode_draft_gate_steps_total"] == 25
    assert got["sparkserve:spec_decode_draft_gate_plain_steps_total"] == 14
