"""Admission (429 before a stream starts) and graceful shutdown, on a one-slot server:
``--max-num-seqs 1 --max-waiting 1`` (one running, one waiting, the third is turned away).

The request holding the slot asks for ``FOREVER_TOKENS`` tokens, so it keeps the slot (and
whatever waits behind it waits) until the test drops its connection, however fast the engine is."""
import asyncio
import signal
import threading

import httpx
import openai
import pytest

from tests.server.conftest import FOREVER_TOKENS, LONG_ARGS, MODEL_NAME
from tests.server.server_proc import API_KEY, ServerProcess, pid_alive, wait_for

SHORT = {"model": MODEL_NAME, "max_tokens": 200, "ignore_eos": True}
FOREVER = {**SHORT, "max_tokens": FOREVER_TOKENS}
RUNNING, WAITING = "sparkserve:num_requests_running", "sparkserve:num_requests_waiting"


@pytest.fixture(scope="module")
def busy_server(server_model_dir, tmp_path_factory):
    log = str(tmp_path_factory.mktemp("logs") / "busy.log")
    proc = ServerProcess(server_model_dir, log, *LONG_ARGS, "--max-num-seqs", "1", "--max-waiting", "1",
                         "--shutdown-timeout", "120")
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def _idle(server):
    m = server.metrics()
    return m[RUNNING] == 0 and m[WAITING] == 0


async def _fill_then_overflow(server):
    oa = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=60) as http:
        body = {**FOREVER, "prompt": "one", "stream": True}
        async with http.stream("POST", "/v1/completions", json=body) as running:
            assert running.status_code == 200
            lines = running.aiter_lines()  # keep a reference: a collected iterator closes the stream
            async for line in lines:
                if line.startswith("data:"):
                    break  # generating: it holds the only slot until this block closes the stream
            async with http.stream("POST", "/v1/completions", json={**body, "prompt": "two"}) as waiting:
                assert waiting.status_code == 200  # admitted into the waiting queue
                chat = {**SHORT, "stream": True, "messages": [{"role": "user", "content": "x"}]}
                rejected = [await http.post("/v1/completions", json={**SHORT, "prompt": "three"}),
                            await http.post("/v1/chat/completions", json=chat)]
                with pytest.raises(openai.RateLimitError) as e:
                    await oa.completions.create(model=MODEL_NAME, prompt="four", max_tokens=5)
                assert e.value.code == "queue_full"
    return rejected


def test_queue_full_is_429_before_the_stream_starts(busy_server):
    assert wait_for(lambda: _idle(busy_server), timeout=60)
    for r in asyncio.run(_fill_then_overflow(busy_server)):
        assert r.status_code == 429, r.text
        assert r.headers["content-type"].startswith("application/json")  # not an SSE stream
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "queue_full" and r.json()["error"]["type"] == "rate_limit_error"
    assert wait_for(lambda: _idle(busy_server), timeout=60)  # the dropped streams were aborted


def test_sigterm_finishes_in_flight_then_exits_cleanly(busy_server):
    """SIGTERM while one request runs (streamed, unbounded) and one waits behind it: the server
    stops admitting, the running one is dropped by its client, the waiting one then runs to its
    end during the drain, and the server exits 0."""
    assert wait_for(lambda: _idle(busy_server), timeout=60)
    core = busy_server.core_pid()
    result = {}

    def waiting_request():
        result["r"] = httpx.post(busy_server.url + "/v1/completions", headers=busy_server.headers, timeout=120,
                                 json={**SHORT, "prompt": "finish me", "max_tokens": 32})

    with httpx.stream("POST", busy_server.url + "/v1/completions", headers=busy_server.headers, timeout=60,
                      json={**FOREVER, "prompt": "hold the slot", "stream": True}) as holder:
        assert holder.status_code == 200
        lines = holder.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))  # it holds the only slot
        t = threading.Thread(target=waiting_request)
        t.start()
        queued = wait_for(lambda: (m := busy_server.metrics())[RUNNING] == 1 and m[WAITING] == 1, timeout=60)
        assert queued, busy_server.metrics()
        busy_server.proc.send_signal(signal.SIGTERM)

        def not_ready():
            r = httpx.get(busy_server.url + "/ready", timeout=5)
            return r.status_code == 503 and r.json()["error"]["code"] == "draining"

        assert wait_for(not_ready, timeout=60)
        r = httpx.post(busy_server.url + "/v1/completions", headers=busy_server.headers, timeout=30,
                       json={"model": MODEL_NAME, "prompt": "too late", "max_tokens": 2})
        assert r.status_code == 503 and r.json()["error"]["code"] == "draining"
        assert t.is_alive()  # still waiting for the slot
    # leaving the block dropped the holder: it is aborted and the waiting request runs
    t.join(120)
    r = result["r"]
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["finish_reason"] == "length" and r.json()["usage"]["completion_tokens"] == 32
    assert busy_server.proc.wait(60) == 0
    assert wait_for(lambda: not pid_alive(core), timeout=60)
