"""Speculative decoding over HTTP: per-request control, usage.spec_decode, and /metrics agreeing."""
import json

import httpx
import pytest

from tests.server.conftest import COMMON_ARGS
from tests.server.server_proc import ServerProcess, wait_for


@pytest.fixture(scope="module")
def spec_server(server_model_dir, tmp_path_factory):
    log = str(tmp_path_factory.mktemp("logs") / "spec.log")
    proc = ServerProcess(server_model_dir, log, *COMMON_ARGS, "--speculative-config",
                         json.dumps({"method": "ngram", "num_speculative_tokens": 4}), api_key=None)
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def complete(server, **extra):
    body = {"model": "tiny", "prompt": [5, 6, 7, 8] * 8, "max_tokens": 24, "temperature": 0, "ignore_eos": True,
            **extra}
    r = httpx.post(server.url + "/v1/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_per_request_control_and_metrics_agree(spec_server):
    before = spec_server.metrics()
    off = complete(spec_server, speculative={"disable": True})
    two = complete(spec_server, speculative={"max_draft_tokens": 2})
    full = complete(spec_server)
    assert off["choices"][0]["text"] == two["choices"][0]["text"] == full["choices"][0]["text"]
    assert "spec_decode" not in off["usage"] or off["usage"]["spec_decode"]["num_verified_draft_tokens"] == 0
    s2, s4 = two["usage"]["spec_decode"], full["usage"]["spec_decode"]
    assert 0 < s2["num_verified_draft_tokens"] <= 2 * s2["num_drafts"]
    assert s4["num_accepted_tokens"] > 0 and s4["mean_acceptance_length"] > 1.0

    def moved():
        m = spec_server.metrics()
        delta = {k: m.get(f"sparkserve:spec_decode_{k}_total", 0) - before.get(f"sparkserve:spec_decode_{k}_total", 0)
                 for k in ("num_drafts", "num_verified_draft_tokens", "num_accepted_tokens")}
        want = {k: s2[k] + s4[k] for k in delta}
        return delta if delta == want else None

    assert wait_for(moved, timeout=60), (spec_server.metrics(), s2, s4)
    m = spec_server.metrics()
    per_pos = sum(v for k, v in m.items() if k.startswith("sparkserve:spec_decode_num_accepted_tokens_per_pos_total"))
    assert per_pos == m["sparkserve:spec_decode_num_accepted_tokens_total"]
