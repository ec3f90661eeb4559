"""Client disconnects abort requests and free their KV blocks; /metrics parses and its counters move.

The dropped requests ask for ``FOREVER_TOKENS`` tokens, so none can finish before its client goes
away however fast the engine is; the test drops each one only after /metrics or its stream shows
it running, and then waits for the engine to be idle instead of sleeping."""
import asyncio

import httpx

from tests.server.conftest import FOREVER_TOKENS, MODEL_NAME, kv_blocks_in_use
from tests.server.server_proc import wait_for

RUNNING, WAITING = "sparkserve:num_requests_running", "sparkserve:num_requests_waiting"
ABORTS = "sparkserve:request_success_total{finished_reason=abort}"
LENGTHS = "sparkserve:request_success_total{finished_reason=length}"
FOREVER = {"model": MODEL_NAME, "max_tokens": FOREVER_TOKENS, "ignore_eos": True, "temperature": 0.8}


def _idle(server):
    """The metrics once nothing runs or waits, else False."""
    m = server.metrics()
    return m[RUNNING] == 0 and m[WAITING] == 0 and m


def test_metrics_parse_and_counters_move(server):
    before = wait_for(lambda: _idle(server), timeout=60)
    expected = {RUNNING, WAITING, "sparkserve:kv_cache_usage_perc", "sparkserve:prompt_tokens_total",
                "sparkserve:generation_tokens_total", "sparkserve:num_preemptions_total", LENGTHS,
                "sparkserve:time_to_first_token_seconds_count", "sparkserve:inter_token_latency_seconds_count",
                "sparkserve:e2e_request_latency_seconds_count"}
    assert expected <= set(before), expected - set(before)
    r = httpx.post(server.url + "/v1/completions", headers=server.headers, timeout=60,
                   json={"model": MODEL_NAME, "prompt": [5, 6, 7], "max_tokens": 5, "ignore_eos": True})
    assert r.status_code == 200
    after = server.metrics()  # request counters are recorded before the response is sent
    assert after["sparkserve:prompt_tokens_total"] - before["sparkserve:prompt_tokens_total"] == 3
    assert after["sparkserve:generation_tokens_total"] - before["sparkserve:generation_tokens_total"] == 5
    assert after[LENGTHS] - before[LENGTHS] == 1
    for h in ("time_to_first_token_seconds", "e2e_request_latency_seconds"):
        assert after[f"sparkserve:{h}_count"] - before[f"sparkserve:{h}_count"] == 1
    itl = "sparkserve:inter_token_latency_seconds_count"
    assert after[itl] > before[itl]


async def _open_and_drop_streams(server, count: int) -> int:
    """Open ``count`` streams, read until each has produced text, then close them all."""
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=60) as http:
        async def one(i):
            body = {**FOREVER, "messages": [{"role": "user", "content": f"story {i}"}], "stream": True, "seed": i}
            async with http.stream("POST", "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if '"content"' in line and '"role"' not in line:
                        return 1  # leaving the block closes the connection mid-generation
            return 0

        return sum(await asyncio.gather(*(one(i) for i in range(count))))


async def _drop_once_running(server, body: dict, num_seqs: int) -> dict:
    """POST ``body`` (not streamed), wait until /metrics shows its ``num_seqs`` sequences running,
    then go away without reading the response. Returns the metrics seen while it ran."""
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=60) as http:
        request = asyncio.create_task(http.post("/v1/completions", json=body))
        running = await asyncio.to_thread(
            wait_for, lambda: request.done() or ((m := server.metrics())[RUNNING] == num_seqs and m), 60)
        assert not request.done(), request.result().text
        request.cancel()  # drops the connection; leaving the client closes any that remain
        try:
            await request
        except asyncio.CancelledError:
            pass
    return running


def test_disconnects_abort_and_free_kv(server):
    before = wait_for(lambda: _idle(server), timeout=60)
    assert kv_blocks_in_use(before) == 0
    assert asyncio.run(_open_and_drop_streams(server, 20)) == 20
    mid = wait_for(lambda: _idle(server), timeout=60)
    assert mid, server.metrics()
    assert mid[ABORTS] - before[ABORTS] == 20
    assert kv_blocks_in_use(mid) == 0

    # non-streaming: the client goes away while its n = 8 sequences are generating
    running = asyncio.run(_drop_once_running(server, {**FOREVER, "prompt": "a long one", "n": 8}, 8))
    assert running, server.metrics()
    assert kv_blocks_in_use(running) >= 8  # each sequence holds its own (partial) block
    after = wait_for(lambda: _idle(server), timeout=60)
    assert after, server.metrics()
    assert after[ABORTS] - mid[ABORTS] == 8
    assert kv_blocks_in_use(after) == 0  # every block came back
    assert after[LENGTHS] == before[LENGTHS]  # none of them ran to completion
