"""The API process's handle on the engine core process.

``start()`` creates a socketpair, starts ``python -m sparkserve.server.core --fd N`` with one end
and keeps the other. One asyncio reader task decodes the core's frames and dispatches them:
``AddAck`` resolves the future ``add()`` awaits, ``StepOutputs`` go to per-request asyncio queues
(and into the metrics), ``Heartbeat``/stats update health and gauges. If the core dies (EOF),
every pending request gets a 503 ``APIError`` in its queue instead of hanging.

The core exits when this process closes the socket or dies, so it cannot be orphaned.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from sparkserve.server import ipc
from sparkserve.server.errors import APIError, internal, invalid_request, queue_full, unavailable
from sparkserve.server.metrics import Metrics
from sparkserve.server.settings import ServerSettings

log = logging.getLogger("sparkserve.server")
HEARTBEAT_TIMEOUT_S = 10.0  # no message from the core for this long: unhealthy
STALL_TIMEOUT_S = 300.0  # requests running but no step finished for this long: unhealthy
CONTEXT_LENGTH_PREFIX = "this model's maximum context length"


@dataclass
class RequestState:
    """A request the engine holds. ``queue`` receives ``ipc.ReqDelta`` or an ``Exception`` (the end)."""

    request_id: str
    num_prompt_tokens: int
    arrival: float = field(default_factory=time.monotonic)
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    first_token_time: float | None = None
    last_token_time: float | None = None


class EngineClient:
    def __init__(self, settings: ServerSettings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.proc: subprocess.Popen | None = None
        self.info: ipc.Ready | None = None  # set once the engine is built
        self.stats = ipc.EngineStats()
        self.last_heartbeat = time.monotonic()
        self.last_progress = time.monotonic()  # when ``stats.num_steps`` last moved
        self.dead_reason: str | None = None
        self.requests: dict[str, RequestState] = {}
        self._acks: dict[str, asyncio.Future] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._fatal: str | None = None
        self._closing = False
        self.ready_event = asyncio.Event()  # set when ready *or* dead

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cmd = [sys.executable, "-m", "sparkserve.server.core", "--fd", str(theirs.fileno())]
        # A session of its own: terminal signals reach only this process, which drains first.
        self.proc = subprocess.Popen(cmd, pass_fds=(theirs.fileno(),), start_new_session=True)
        theirs.close()
        log.info("engine core started (pid %d)", self.proc.pid)
        reader, self._writer = await asyncio.open_unix_connection(sock=ours)
        self._send(ipc.Start(self.settings.engine_kwargs, self.settings.log_level))
        self._reader_task = asyncio.create_task(self._read_loop(reader))

    async def close(self) -> None:
        """Close the socket (the core exits on EOF) and reap the process."""
        self._closing = True
        if self._writer is not None:
            self._writer.close()
        if self.proc is not None and self.proc.poll() is None:
            try:
                await asyncio.to_thread(self.proc.wait, 10)
            except subprocess.TimeoutExpired:
                log.warning("engine core did not exit; killing it")
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        if self._reader_task is not None:
            self._reader_task.cancel()

    @property
    def ready(self) -> bool:
        return self.info is not None and self.dead_reason is None

    @property
    def heartbeat_age(self) -> float:
        return time.monotonic() - self.last_heartbeat

    def health_problem(self) -> str | None:
        """None when the engine core is alive and responsive, else why not."""
        if self.dead_reason is not None:
            return self.dead_reason
        if self.proc is None or self.proc.poll() is not None:
            return "the engine core process is not running"
        if self.info is not None and self.heartbeat_age > HEARTBEAT_TIMEOUT_S:
            return f"no heartbeat from the engine core for {self.heartbeat_age:.0f} s"
        stalled = time.monotonic() - self.last_progress
        if self.stats.num_running and stalled > STALL_TIMEOUT_S:
            return f"the engine has not finished a step in {stalled:.0f} s"
        return None

    # -- requests -------------------------------------------------------------------------------------
    async def add(self, request_id: str, prompt_token_ids: list[int], prompt: str | None, params: dict,
                  prompt_param: str) -> RequestState:
        """Queue a request in the engine; raises the APIError the core's verdict maps to."""
        if self.dead_reason is not None:
            raise unavailable(f"the engine is not running: {self.dead_reason}", "engine_dead")
        state = RequestState(request_id, len(prompt_token_ids))
        self.requests[request_id] = state
        ack_future = asyncio.get_running_loop().create_future()
        self._acks[request_id] = ack_future
        try:
            self._send(ipc.Add(request_id, prompt_token_ids, params, prompt))
            ack: ipc.AddAck = await ack_future
        except BaseException:
            self._acks.pop(request_id, None)
            self.abort(request_id)
            self.requests.pop(request_id, None)
            raise
        if ack.error is None:
            return state
        self.requests.pop(request_id, None)
        if ack.kind == "queue_full":
            raise queue_full(ack.error)
        if ack.kind == "invalid":
            code = "context_length_exceeded" if ack.error.startswith(CONTEXT_LENGTH_PREFIX) else None
            raise invalid_request(ack.error, prompt_param, code)
        raise internal(f"the engine failed to queue the request: {ack.error}")

    def abort(self, request_id: str) -> None:
        """Ask the engine to drop a request (its final 'abort' output still updates metrics)."""
        if request_id in self.requests and self.dead_reason is None:
            try:
                self._send(ipc.Abort([request_id]))
            except APIError:  # shutting down: the core is going away with the request
                pass

    def fail_all(self, error: APIError) -> None:
        """End every request with ``error`` (and abort them in the engine)."""
        if self.requests and self.dead_reason is None:
            self._send(ipc.Abort(list(self.requests)))
        for state in self.requests.values():
            state.queue.put_nowait(error)

    def _send(self, msg) -> None:
        if self._writer is None or self._writer.is_closing():
            raise unavailable("the engine is not running", "engine_dead")
        self._writer.write(ipc.encode_frame(msg))

    # -- reader ---------------------------------------------------------------------------------------
    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header = await reader.readexactly(ipc.HEADER_BYTES)
                payload = await reader.readexactly(ipc.frame_length(header))
                self._dispatch(ipc.from_core_decoder.decode(payload))
        except asyncio.IncompleteReadError:
            reason = "the engine core process exited"
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("engine connection failed")
            reason = f"the connection to the engine core failed: {e}"
        if self._fatal:
            reason = self._fatal
        elif self.proc is not None:
            code = await asyncio.to_thread(_wait_code, self.proc)
            if code is not None:
                reason += f" (exit code {code})"
        self._die(reason)

    def _dispatch(self, msg) -> None:
        if isinstance(msg, ipc.StepOutputs):
            self._on_stats(msg.stats)
            for delta in msg.outputs:
                self._on_delta(delta)
        elif isinstance(msg, ipc.Heartbeat):
            self._on_stats(msg.stats)
        elif isinstance(msg, ipc.AddAck):
            future = self._acks.pop(msg.request_id, None)
            if future is not None and not future.done():
                future.set_result(msg)
        elif isinstance(msg, ipc.Ready):
            self.info = msg
            self.last_heartbeat = time.monotonic()
            log.info("engine ready: max_model_len=%d, %d KV blocks, speculation=%s", msg.max_model_len,
                     msg.num_blocks, msg.spec_method)
            self.ready_event.set()
        elif isinstance(msg, ipc.Fatal):
            self._fatal = msg.message

    def _on_stats(self, stats: ipc.EngineStats) -> None:
        self.last_heartbeat = time.monotonic()
        if stats.num_steps != self.stats.num_steps or not self.stats.num_running:
            self.last_progress = self.last_heartbeat
        self.stats = stats
        self.metrics.record_stats(stats)

    def _on_delta(self, delta: ipc.ReqDelta) -> None:
        state = self.requests.get(delta.request_id)
        if state is None:
            return
        now, m = time.monotonic(), self.metrics
        num_new = sum(len(s.delta_token_ids) for s in delta.seqs)
        if num_new:
            if state.first_token_time is None:
                state.first_token_time = now
                m.ttft.observe(now - state.arrival)
                m.prompt_tokens.inc(state.num_prompt_tokens)
            else:
                m.itl.observe(now - state.last_token_time)
            state.last_token_time = now
            m.generation_tokens.inc(num_new)
        for seq in delta.seqs:
            if seq.finish_reason is not None:
                m.record_finished(seq.finish_reason)
        if delta.finished:
            m.e2e.observe(now - state.arrival)
            del self.requests[delta.request_id]
        state.queue.put_nowait(delta)

    def _die(self, reason: str) -> None:
        if self.dead_reason is not None:
            return
        self.dead_reason = reason
        if not self._closing:
            log.error("engine core is gone: %s", reason)
        error = unavailable(f"the engine stopped: {reason}", "engine_dead")
        for future in self._acks.values():
            if not future.done():
                future.set_exception(error)
        for state in self.requests.values():
            state.queue.put_nowait(error)
        self._acks.clear()
        self.requests.clear()
        self.ready_event.set()


def _wait_code(proc: subprocess.Popen) -> int | None:
    try:
        return proc.wait(2)
    except subprocess.TimeoutExpired:
        return None
