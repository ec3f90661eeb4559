"""Deadlines, an engine crash and a failed start: requests get errors instead of hanging.

The requests here ask for ``FOREVER_TOKENS`` tokens: they cannot finish before the deadline or the
kill however fast the engine is, so what ends them is always what the test is about."""
import json
import os
import signal
import threading
import time

import httpx
import pytest

from tests.models.hf_fixtures import make_hf_model
from tests.server.conftest import FOREVER_TOKENS, LONG_ARGS, MODEL_NAME
from tests.server.server_proc import ServerProcess, pid_alive, wait_for

LONG = {"model": MODEL_NAME, "prompt": "go", "max_tokens": FOREVER_TOKENS, "ignore_eos": True}
# The deadline only has to outlast the crash test's reaction (first streamed chunk -> kill, well
# under a second even on a loaded machine); the timeout test waits for it once.
TIMEOUT_S = 4


@pytest.fixture(scope="module")
def fragile_server(server_model_dir, tmp_path_factory):
    log = str(tmp_path_factory.mktemp("logs") / "fragile.log")
    # --engine-death-exit-s: stays up after the crash test kills its engine (the exit itself is
    # test_engine_death.py's), so the 503s can be checked
    proc = ServerProcess(server_model_dir, log, *LONG_ARGS, "--max-num-seqs", "1",
                         "--request-timeout", str(TIMEOUT_S), "--engine-death-exit-s", "600")
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def _sse_events(server, body) -> list[str]:
    with httpx.stream("POST", server.url + "/v1/completions", json=body, headers=server.headers, timeout=60) as r:
        assert r.status_code == 200
        return [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]


def _idle(server):
    m = server.metrics()
    return m["sparkserve:num_requests_running"] == 0 and m["sparkserve:num_requests_waiting"] == 0 and m


def test_request_timeout(fragile_server):
    """One request streamed and one not, sent together (one runs, one waits: one sequence slot);
    both end at their deadline, measured from arrival."""
    before = wait_for(lambda: _idle(fragile_server), 60)
    streamed = {}
    t = threading.Thread(target=lambda: streamed.update(events=_sse_events(fragile_server, {**LONG, "stream": True})))
    t0 = time.monotonic()
    t.start()
    r = httpx.post(fragile_server.url + "/v1/completions", json=LONG, headers=fragile_server.headers, timeout=60)
    assert r.status_code == 504 and r.json()["error"]["code"] == "request_timeout"
    assert TIMEOUT_S <= time.monotonic() - t0 < TIMEOUT_S + 30  # the upper bound only catches a hang
    t.join(60)
    events = streamed["events"]
    assert events[-1] == "[DONE]" and '"request_timeout"' in events[-2]
    after = wait_for(lambda: _idle(fragile_server), 60)
    assert after  # the engine let go of both
    aborted = "sparkserve:request_success_total{finished_reason=abort}"
    assert after[aborted] - before[aborted] == 2  # neither could finish: both were aborted


def test_engine_crash_fails_requests_and_health(fragile_server):
    core = fragile_server.core_pid()
    with httpx.stream("POST", fragile_server.url + "/v1/completions", json={**LONG, "stream": True},
                      headers=fragile_server.headers, timeout=60) as r:
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
        os.kill(core, signal.SIGKILL)
        rest = [line for line in lines if line.startswith("data: ")]
    assert rest[-1] == "data: [DONE]" and '"engine_dead"' in rest[-2]
    health = wait_for(lambda: (h := httpx.get(fragile_server.url + "/health")).status_code == 503 and h, 60)
    assert health and health.json()["error"]["code"] == "engine_dead"
    assert httpx.get(fragile_server.url + "/ready").status_code == 503
    r = httpx.post(fragile_server.url + "/v1/completions", json=LONG, headers=fragile_server.headers, timeout=30)
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_dead"
    assert fragile_server.stop() == 1  # drained, but the engine died: the supervisor must restart it
    assert not pid_alive(core)


def test_engine_start_failure_exits_nonzero(tmp_path):
    # passes the launcher's checks (config.json and weights present), fails in the engine core
    bad = make_hf_model(str(tmp_path / "not-a-model"), "qwen3", tied=True, seed=1)
    config = json.loads((tmp_path / "not-a-model" / "config.json").read_text())
    (tmp_path / "not-a-model" / "config.json").write_text(json.dumps({**config, "architectures": ["NoSuchForCausalLM"]}))
    proc = ServerProcess(bad, str(tmp_path / "bad.log"))
    try:
        assert proc.proc.wait(180) == 1
    finally:
        proc.stop()
    assert "could not start the engine" in proc.log()
