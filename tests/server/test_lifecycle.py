"""Admission (429 before a stream starts) and graceful shutdown, on a one-slot server:
``--max-num-seqs 1 --max-waiting 1`` (one running, one waiting, the third is turned away).
Its context is 512 tokens so one request can keep the slot busy for a while."""
import asyncio
import signal
import threading

import httpx
import openai
import pytest

from tests.server.conftest import COMMON_ARGS, MODEL_NAME
from tests.server.server_proc import API_KEY, ServerProcess, pid_alive, wait_for

LONG = {"model": MODEL_NAME, "max_tokens": 200, "ignore_eos": True}


@pytest.fixture(scope="module")
def busy_server(server_model_dir, tmp_path_factory):
    log = str(tmp_path_factory.mktemp("logs") / "busy.log")
    proc = ServerProcess(server_model_dir, log, *COMMON_ARGS, "--max-model-len", "512", "--max-num-seqs", "1",
                         "--max-waiting", "1",
                         "--shutdown-timeout", "60")
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def _idle(server):
    m = server.metrics()
    return m["sparkserve:num_requests_running"] == 0 and m["sparkserve:num_requests_waiting"] == 0


async def _fill_then_overflow(server):
    oa = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=60) as http:
        body = {**LONG, "prompt": "one", "stream": True, "max_tokens": 500}
        async with http.stream("POST", "/v1/completions", json=body) as running:
            assert running.status_code == 200
            lines = running.aiter_lines()  # keep a reference: a collected iterator closes the stream
            async for line in lines:
                if line.startswith("data:"):
                    break  # generating: it holds the only slot
            async with http.stream("POST", "/v1/completions", json={**body, "prompt": "two"}) as waiting:
                assert waiting.status_code == 200  # admitted into the waiting queue
                rejected = [await http.post("/v1/completions", json={**LONG, "prompt": "three"}),
                            await http.post("/v1/chat/completions",
                                            json={**LONG, "stream": True, "messages": [{"role": "user", "content": "x"}]})]
                with pytest.raises(openai.RateLimitError) as e:
                    await oa.completions.create(model=MODEL_NAME, prompt="four", max_tokens=5)
                assert e.value.code == "queue_full"
    return rejected


def test_queue_full_is_429_before_the_stream_starts(busy_server):
    assert wait_for(lambda: _idle(busy_server), timeout=30)
    for r in asyncio.run(_fill_then_overflow(busy_server)):
        assert r.status_code == 429, r.text
        assert r.headers["content-type"].startswith("application/json")  # not an SSE stream
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "queue_full" and r.json()["error"]["type"] == "rate_limit_error"
    assert wait_for(lambda: _idle(busy_server), timeout=30)  # the dropped streams were aborted


def test_sigterm_finishes_in_flight_then_exits_cleanly(busy_server):
    assert wait_for(lambda: _idle(busy_server), timeout=30)
    core = busy_server.core_pid()
    result = {}

    def in_flight():
        result["r"] = httpx.post(busy_server.url + "/v1/completions", headers=busy_server.headers, timeout=120,
                                 json={**LONG, "prompt": "finish me", "max_tokens": 500})

    t = threading.Thread(target=in_flight)
    t.start()
    assert wait_for(lambda: busy_server.metrics()["sparkserve:num_requests_running"] == 1, timeout=30)
    busy_server.proc.send_signal(signal.SIGTERM)

    def not_ready():
        r = httpx.get(busy_server.url + "/ready", timeout=5)
        return r.status_code == 503 and r.json()["error"]["code"] == "draining"

    assert wait_for(not_ready, timeout=10)
    try:
        r = httpx.post(busy_server.url + "/v1/completions", headers=busy_server.headers, timeout=30,
                       json={"model": MODEL_NAME, "prompt": "too late", "max_tokens": 2})
        assert r.status_code == 503 and r.json()["error"]["code"] == "draining"
    except httpx.ConnectError:
        pass  # already gone: also a refusal
    t.join(120)
    r = result["r"]
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["finish_reason"] == "length" and r.json()["usage"]["completion_tokens"] == 500
    assert busy_server.proc.wait(60) == 0
    assert wait_for(lambda: not pid_alive(core), timeout=15)
