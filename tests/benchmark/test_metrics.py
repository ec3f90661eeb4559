"""Every metric from recorded timestamps, checked on a hand-made timeline."""
import math

import pytest

from sparkserve.benchmark.metrics import RequestRecord, stats_ms, summarize, user_tok_s
from sparkserve.benchmark.slo import goodput, meets_slo, parse_slo


def timeline():
    """Three requests over a 10 s run (times in s); one fails.

    a: sent 0, events 1, 2, 4 (ITLs 1, 2), ends 4, 5 output tokens -> TTFT 1, TPOT 3/4, E2E 4, 1.25 tok/s
    b: sent 2, events 5, 6 (ITL 1), ends 10, 9 output tokens -> TTFT 3, TPOT 5/8, E2E 8, 1.125 tok/s
    c: sent 3, fails with an HTTP 400 before any event
    """
    a = RequestRecord(send_s=0.0, event_times_s=[1.0, 2.0, 4.0], end_s=4.0, prompt_tokens=10, output_tokens=5)
    b = RequestRecord(send_s=2.0, event_times_s=[5.0, 6.0], end_s=10.0, prompt_tokens=20, output_tokens=9)
    c = RequestRecord(send_s=3.0, end_s=3.5, error="HTTP 400: too long")
    return [a, b, c]


def test_one_request_from_its_timestamps():
    a, b, c = timeline()
    assert (a.ttft_s, a.itls_s, a.e2e_s, a.tpot_s, a.user_tok_s) == (1.0, [1.0, 2.0], 4.0, 0.75, 1.25)
    assert (b.ttft_s, b.itls_s, b.e2e_s, b.tpot_s, b.user_tok_s) == (3.0, [1.0], 8.0, 0.625, 1.125)
    assert not c.success and a.success
    assert RequestRecord(0.0, [1.0], 1.0, output_tokens=1).tpot_s is None  # one token has no TPOT
    assert user_tok_s(10, 2.0) == 5.0 and user_tok_s(3, 0.0) == 0.0


def test_run_summary_on_the_timeline():
    s = summarize(timeline(), duration_s=10.0)
    assert (s["completed"], s["failed"], s["num_prompts"]) == (2, 1, 3)
    assert (s["total_input_tokens"], s["total_output_tokens"]) == (30, 14)
    assert s["request_throughput"] == pytest.approx(0.2)
    assert s["output_throughput"] == pytest.approx(1.4)
    assert s["total_token_throughput"] == pytest.approx(4.4)
    assert s["mean_ttft_ms"] == pytest.approx(2000) and s["median_ttft_ms"] == pytest.approx(2000)
    assert s["std_ttft_ms"] == pytest.approx(1000)
    assert s["p99_ttft_ms"] == pytest.approx(1000 + 0.99 * 2000)  # linear interpolation between 1 s and 3 s
    assert s["mean_tpot_ms"] == pytest.approx(687.5) and s["p50_tpot_ms"] == pytest.approx(687.5)
    # ITLs pooled over requests: 1, 2, 1 s
    assert s["mean_itl_ms"] == pytest.approx(4000 / 3) and s["median_itl_ms"] == pytest.approx(1000)
    assert s["p90_itl_ms"] == pytest.approx(1800)
    assert s["mean_e2el_ms"] == pytest.approx(6000) and s["p99_e2el_ms"] == pytest.approx(4000 + 0.99 * 4000)
    assert s["median_user_tok_s"] == pytest.approx(1.1875) and s["mean_user_tok_s"] == pytest.approx(1.1875)
    assert s["p10_user_tok_s"] == pytest.approx(1.125 + 0.1 * 0.125)
    assert s["request_goodput"] == pytest.approx(0.2) and s["good_requests"] == 2  # no SLO: every success


def test_goodput_under_slos():
    a, b, c = timeline()
    assert parse_slo("ttft_ms=2000, tpot_ms=700") == {"ttft_ms": 2000.0, "tpot_ms": 700.0}
    assert meets_slo(a, {"ttft_ms": 1000}) and not meets_slo(b, {"ttft_ms": 2999})
    assert meets_slo(b, {"tpot_ms": 625}) and not meets_slo(a, {"tpot_ms": 749})
    assert meets_slo(a, {"itl_ms": 2000}) and not meets_slo(a, {"itl_ms": 1999})  # a's largest gap is 2 s
    assert not meets_slo(c, {})  # a failed request is never good
    assert goodput([a, b, c], {"ttft_ms": 2000}, 10.0) == (1, 0.1)
    assert summarize([a, b, c], 10.0, {"e2el_ms": 5000})["request_goodput"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="ttft_ms"):
        parse_slo("ttft=3")


def test_empty_and_percentile_keys():
    s = stats_ms("ttft", [], percentiles=(50, 99.9))
    assert s == {"mean_ttft_ms": 0.0, "median_ttft_ms": 0.0, "std_ttft_ms": 0.0, "p50_ttft_ms": 0.0,
                 "p99.9_ttft_ms": 0.0}
    s = summarize([], 0.0)
    assert s["completed"] == 0 and math.isnan(s["request_throughput"])


def test_spec_decode_from_usage_sums():
    a, b, _ = timeline()
    a.spec_decode = {"num_drafts": 2, "num_draft_tokens": 8, "num_verified_draft_tokens": 6, "num_accepted_tokens": 3}
    b.spec_decode = {"num_drafts": 1, "num_draft_tokens": 4, "num_verified_draft_tokens": 2, "num_accepted_tokens": 1}
    s = summarize([a, b], 10.0)
    assert (s["spec_decode_num_drafts"], s["spec_decode_verified_draft_tokens"], s["spec_decode_accepted_tokens"]) \
        == (3, 8, 4)
    assert s["spec_decode_acceptance_rate"] == 0.5
