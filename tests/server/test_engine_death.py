"""Engine death ends the process (issue 17): a killed or frozen engine core fails every request
the engine held (streamed ones with an SSE error event, the others with the 503 envelope), turns
/health red, zeroes the queue gauges, and the API process exits 1 within ``--engine-death-exit-s``
so its supervisor (Kubernetes) restarts it; no process is left behind.

Requests ask for ``FOREVER_TOKENS`` tokens on a one-slot server, so one is running and the others
are waiting when the core goes away, however fast the engine is."""
import json
import os
import signal
import threading
import time

import httpx
import openai
import pytest

from tests.server.conftest import FOREVER_TOKENS, LONG_ARGS, MODEL_NAME
from tests.server.server_proc import API_KEY, ServerProcess, pid_alive, wait_for

LONG = {"model": MODEL_NAME, "max_tokens": FOREVER_TOKENS, "ignore_eos": True}
RUNNING, WAITING = "sparkserve:num_requests_running", "sparkserve:num_requests_waiting"
# Long enough to look at /health and /metrics on a loaded machine before the exit; the exit bound
# below only catches a server that never exits.
EXIT_DELAY_S = 8


def _start(model_dir, tmp_path, *args) -> ServerProcess:
    proc = ServerProcess(model_dir, str(tmp_path / "server.log"), *LONG_ARGS, "--max-num-seqs", "1",
                         "--engine-death-exit-s", str(EXIT_DELAY_S), *args)
    try:
        return proc.wait_ready()
    except BaseException:
        proc.stop()
        raise


class Load:
    """One streamed completion (runs), one streamed chat and one plain completion through the
    ``openai`` client (both wait): each thread records how its request ended."""

    def __init__(self, server: ServerProcess):
        self.server, self.results, self.threads = server, {}, []
        self.first_chunk = threading.Event()

    def start(self) -> "Load":
        self._spawn("stream", self._stream, "/v1/completions", {**LONG, "prompt": "run", "stream": True})
        assert self.first_chunk.wait(120), self.server.log()  # it holds the only slot
        self._spawn("chat", self._stream, "/v1/chat/completions",
                    {**LONG, "messages": [{"role": "user", "content": "wait"}], "stream": True})
        self._spawn("plain", self._plain)
        waiting = wait_for(lambda: (m := self.server.metrics())[RUNNING] == 1 and m[WAITING] == 2, 120)
        assert waiting, self.server.metrics()
        return self

    def _spawn(self, name, fn, *args) -> None:
        def run():
            try:
                self.results[name] = fn(*args)
            except Exception as e:  # noqa: BLE001 - recorded for the asserts
                self.results[name] = e
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    def _stream(self, path, body) -> list[str]:
        events = []
        with httpx.stream("POST", self.server.url + path, json=body, headers=self.server.headers, timeout=120) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[len("data: "):])
                    self.first_chunk.set()
        return events

    def _plain(self):
        oa = openai.OpenAI(base_url=self.server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
        return oa.completions.create(model=MODEL_NAME, prompt="wait too", max_tokens=FOREVER_TOKENS,
                                     extra_body={"ignore_eos": True})

    def join(self) -> dict:
        for t in self.threads:
            t.join(120)
        return self.results


def _assert_engine_dead_errors(results: dict, reason_word: str) -> None:
    for name in ("stream", "chat"):
        events = results[name]
        assert isinstance(events, list), events
        assert events[-1] == "[DONE]", events[-3:]
        error = json.loads(events[-2])["error"]
        assert error["code"] == "engine_dead" and reason_word in error["message"], error
    plain = results["plain"]
    assert isinstance(plain, openai.APIStatusError) and plain.status_code == 503, plain
    assert plain.code == "engine_dead", plain.body


def _assert_red_then_exit(server: ServerProcess, core: int, t_dead: float) -> None:
    health = httpx.get(server.url + "/health", timeout=30)
    assert health.status_code == 503 and health.json()["error"]["code"] == "engine_dead"
    assert httpx.get(server.url + "/ready", timeout=30).status_code == 503
    m = server.metrics()
    assert m[RUNNING] == 0 and m[WAITING] == 0, m  # not the last values the dead engine reported
    code = server.proc.wait(EXIT_DELAY_S + 60)
    assert code == 1, server.log()
    assert time.monotonic() - t_dead >= EXIT_DELAY_S - 1  # it waited as configured (lower bound only)
    assert not pid_alive(core)  # no orphan: the core is gone and reaped
    assert "exiting with code 1" in server.log()


def test_killed_engine_core_fails_requests_and_exits_nonzero(server_model_dir, tmp_path):
    server = _start(server_model_dir, tmp_path)
    try:
        core = server.core_pid()
        load = Load(server).start()
        os.kill(core, signal.SIGKILL)
        t_dead = time.monotonic()
        results = load.join()
        _assert_engine_dead_errors(results, "exited")
        _assert_red_then_exit(server, core, t_dead)
    finally:
        server.stop()


def test_frozen_engine_core_is_killed_after_the_heartbeat_timeout(server_model_dir, tmp_path):
    """SIGSTOP freezes the whole core (its heartbeat thread too): after --engine-heartbeat-timeout
    the server kills it, and the running and waiting requests get errors rather than silence."""
    server = _start(server_model_dir, tmp_path, "--engine-heartbeat-timeout", "4")
    try:
        core = server.core_pid()
        load = Load(server).start()
        os.kill(core, signal.SIGSTOP)
        t_frozen = time.monotonic()
        results = load.join()
        _assert_engine_dead_errors(results, "frozen")
        _assert_red_then_exit(server, core, t_frozen)
    finally:
        if pid_alive(core):
            os.kill(core, signal.SIGKILL)
        server.stop()


@pytest.mark.parametrize("flag", ["--engine-death-exit-s=-1", "--engine-heartbeat-timeout=0"])
def test_engine_death_flags_are_checked(flag, tmp_path, server_model_dir):
    proc = ServerProcess(server_model_dir, str(tmp_path / "bad.log"), flag)
    assert proc.proc.wait(120) == 2
    proc.stop()
