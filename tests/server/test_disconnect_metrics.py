"""Client disconnects abort requests and free their KV blocks; /metrics parses and its counters move."""
import asyncio

import httpx

from tests.server.conftest import MODEL_NAME
from tests.server.server_proc import wait_for

RUNNING, WAITING = "sparkserve:num_requests_running", "sparkserve:num_requests_waiting"
KV = "sparkserve:kv_cache_usage_perc"
ABORTS = "sparkserve:request_success_total{finished_reason=abort}"
LENGTHS = "sparkserve:request_success_total{finished_reason=length}"
LONG = {"model": MODEL_NAME, "max_tokens": 200, "ignore_eos": True, "temperature": 0.8}


def _idle(server, kv_idle: float | None = None):
    """The metrics once nothing runs or waits (and KV usage is back to ``kv_idle``), else False."""
    m = server.metrics()
    return m[RUNNING] == 0 and m[WAITING] == 0 and (kv_idle is None or m[KV] == kv_idle) and m


def test_metrics_parse_and_counters_move(server):
    before = server.metrics()
    expected = {RUNNING, WAITING, KV, "sparkserve:prompt_tokens_total", "sparkserve:generation_tokens_total",
                "sparkserve:num_preemptions_total", LENGTHS, "sparkserve:time_to_first_token_seconds_count",
                "sparkserve:inter_token_latency_seconds_count", "sparkserve:e2e_request_latency_seconds_count"}
    assert expected <= set(before), expected - set(before)
    r = httpx.post(server.url + "/v1/completions", headers=server.headers, timeout=60,
                   json={"model": MODEL_NAME, "prompt": [5, 6, 7], "max_tokens": 5, "ignore_eos": True})
    assert r.status_code == 200
    after = server.metrics()
    assert after["sparkserve:prompt_tokens_total"] - before["sparkserve:prompt_tokens_total"] == 3
    assert after["sparkserve:generation_tokens_total"] - before["sparkserve:generation_tokens_total"] == 5
    assert after[LENGTHS] - before[LENGTHS] == 1
    for h in ("time_to_first_token_seconds", "e2e_request_latency_seconds"):
        assert after[f"sparkserve:{h}_count"] - before[f"sparkserve:{h}_count"] == 1
    assert after["sparkserve:inter_token_latency_seconds_count"] > before["sparkserve:inter_token_latency_seconds_count"]


async def _open_and_drop_streams(server, count: int) -> int:
    """Open ``count`` streams, read until each has produced text, then close them all."""
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=60) as http:
        async def one(i):
            body = {**LONG, "messages": [{"role": "user", "content": f"story {i}"}], "stream": True, "seed": i}
            async with http.stream("POST", "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if '"content"' in line and '"role"' not in line:
                        return 1  # leaving the block closes the connection mid-generation
            return 0

        return sum(await asyncio.gather(*(one(i) for i in range(count))))


def test_disconnects_abort_and_free_kv(server):
    kv_idle = wait_for(lambda: _idle(server), timeout=30)[KV]
    before = server.metrics()
    assert asyncio.run(_open_and_drop_streams(server, 20)) == 20
    # non-streaming: the client gives up (read timeout) while the request is generating
    try:
        httpx.post(server.url + "/v1/completions", headers=server.headers, timeout=0.5,
                   json={**LONG, "prompt": "a long one", "max_tokens": 240, "n": 8})
        raise AssertionError("expected the client to time out")
    except httpx.ReadTimeout:
        pass
    after = wait_for(lambda: _idle(server, kv_idle), timeout=60)
    assert after, server.metrics()
    assert after[ABORTS] - before[ABORTS] == 20 + 8
    assert after[LENGTHS] == before[LENGTHS]  # none of them ran to completion
