"""The API process's handle on the engine core process (torch-free; knows nothing of HTTP).

``start()`` creates a socketpair, starts ``python -m sparkserve.engine.core --fd N`` with one end
and keeps the other. One asyncio reader task decodes the core's frames and dispatches them:
``AddAck`` resolves the future ``add()`` awaits, ``StepOutputs`` go to per-request asyncio queues
(and to the observer: metrics), ``Heartbeat``/stats update health and gauges. If the core dies
(EOF), every pending request gets an ``EngineError`` of kind ``ENGINE_DEAD`` in its queue instead
of hanging. Errors are typed by ``ErrorKind``; the caller maps them to its protocol's errors.

A watchdog task treats a frozen core the same way: once the model is loaded, no message for
``heartbeat_timeout_s`` (the core heartbeats every 0.5 s from its own thread, even mid-step), or
requests running with no finished step for ``STALL_TIMEOUT_S``, kills the core and fails every
request. ``dead`` is set either way, for the server to exit (``server/app.py: watch_engine``).

The core exits when this process closes the socket or dies, so it cannot be orphaned.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from sparkserve.engine import wire
from sparkserve.errors import EngineError, ErrorKind

log = logging.getLogger("sparkserve.server")
HEARTBEAT_TIMEOUT_S = 10.0  # default: no message from the core for this long: frozen, killed
WATCHDOG_INTERVAL_S = 0.25
STALL_TIMEOUT_S = 300.0  # requests running but no step finished for this long: unhealthy


@dataclass
class OutputEvent:
    """What one engine message meant for one request, for metrics (seconds; None: not this time)."""

    num_new_tokens: int
    num_prompt_tokens: int  # the request's prompt, counted once: with its first output token
    ttft_s: float | None  # arrival -> first output token
    itl_s: float | None  # since the previous message that carried tokens
    e2e_s: float | None  # arrival -> finished
    finish_reasons: list[str]  # one per sequence that finished


class Observer(Protocol):
    """Receives engine stats and per-request output events (``server/metrics.py: Metrics``)."""

    def record_stats(self, stats: wire.EngineStats) -> None: ...

    def record_output(self, event: OutputEvent) -> None: ...


@dataclass
class RequestState:
    """A request the engine holds. ``queue`` receives ``wire.RequestDelta`` or an ``Exception`` (the end)."""

    request_id: str
    num_prompt_tokens: int
    arrival: float = field(default_factory=time.monotonic)
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    first_token_time: float | None = None
    last_token_time: float | None = None


class EngineClient:
    def __init__(self, engine_kwargs: dict[str, Any], log_level: str, observer: Observer,
                 heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S):
        self.engine_kwargs, self.log_level = engine_kwargs, log_level
        self.observer = observer
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.proc: subprocess.Popen | None = None
        self.info: wire.Ready | None = None  # set once the engine is built
        self.stats = wire.EngineStats()
        self.last_heartbeat = time.monotonic()
        self.last_progress = time.monotonic()  # when ``stats.num_steps`` last moved
        self.dead_reason: str | None = None
        self.requests: dict[str, RequestState] = {}
        self._acks: dict[str, asyncio.Future] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._fatal: str | None = None
        self._closing = False
        self._watchdog_task: asyncio.Task | None = None
        self.ready_event = asyncio.Event()  # set when ready *or* dead
        self.dead = asyncio.Event()  # set when the core died, froze or was shut down

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cmd = [sys.executable, "-m", "sparkserve.engine.core", "--fd", str(theirs.fileno())]
        # A session of its own: terminal signals reach only this process, which drains first.
        self.proc = subprocess.Popen(cmd, pass_fds=(theirs.fileno(),), start_new_session=True)
        theirs.close()
        log.info("engine core started (pid %d)", self.proc.pid)
        reader, self._writer = await asyncio.open_unix_connection(sock=ours)
        self._send(wire.Start(self.engine_kwargs, self.log_level))
        self._reader_task = asyncio.create_task(self._read_loop(reader))
        self._watchdog_task = asyncio.create_task(self._watchdog())

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
        for task in (self._reader_task, self._watchdog_task):
            if task is not None:
                task.cancel()

    @property
    def closing(self) -> bool:
        """True once ``close()`` began: a death after that is our own shutdown."""
        return self._closing

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
        if self.info is not None and self.heartbeat_age > self.heartbeat_timeout_s:
            return f"no heartbeat from the engine core for {self.heartbeat_age:.0f} s"
        stalled = time.monotonic() - self.last_progress
        if self.stats.num_running and stalled > STALL_TIMEOUT_S:
            return f"the engine has not finished a step in {stalled:.0f} s"
        return None

    # -- requests -------------------------------------------------------------------------------------
    async def add(self, request_id: str, prompt_token_ids: list[int], prompt: str | None,
                  params: wire.RequestParams) -> RequestState:
        """Queue a request in the engine; raises ``EngineError`` (its kind says why) if it was refused."""
        if self.dead_reason is not None:
            raise EngineError(f"the engine is not running: {self.dead_reason}", ErrorKind.ENGINE_DEAD)
        state = RequestState(request_id, len(prompt_token_ids))
        self.requests[request_id] = state
        ack_future = asyncio.get_running_loop().create_future()
        self._acks[request_id] = ack_future
        try:
            self._send(wire.Add(request_id, prompt_token_ids, params, prompt))
            ack: wire.AddAck = await ack_future
        except BaseException:
            self._acks.pop(request_id, None)
            self.abort(request_id)
            self.requests.pop(request_id, None)
            raise
        if ack.error is None:
            return state
        self.requests.pop(request_id, None)
        kind = ack.kind or ErrorKind.INTERNAL
        if kind is ErrorKind.INTERNAL:
            raise EngineError(f"the engine failed to queue the request: {ack.error}", kind)
        raise EngineError(ack.error, kind)

    def abort(self, request_id: str) -> None:
        """Ask the engine to drop a request (its final 'abort' output still updates metrics)."""
        if request_id in self.requests and self.dead_reason is None:
            try:
                self._send(wire.Abort([request_id]))
            except EngineError:  # shutting down: the core is going away with the request
                pass

    def fail_all(self, error: Exception) -> None:
        """End every request with ``error`` (and abort them in the engine)."""
        if self.requests and self.dead_reason is None:
            self._send(wire.Abort(list(self.requests)))
        for state in self.requests.values():
            state.queue.put_nowait(error)

    def _send(self, msg) -> None:
        if self._writer is None or self._writer.is_closing():
            raise EngineError("the engine is not running", ErrorKind.ENGINE_DEAD)
        self._writer.write(wire.encode_frame(msg))

    # -- watchdog -------------------------------------------------------------------------------------
    async def _watchdog(self) -> None:
        """A loaded core that stops talking (or stepping) is frozen: kill it, fail its requests."""
        while self.dead_reason is None:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            if self.info is None or self._closing or self.dead_reason is not None:
                continue
            problem = self.health_problem()
            if problem is None or self.proc is None or self.proc.poll() is not None:
                continue  # healthy, or it exited: the reader sees EOF and reports the exit code
            self._die(f"engine core frozen: {problem}; killed it")
            self.proc.send_signal(signal.SIGKILL)  # also ends a SIGSTOPped process

    # -- reader ---------------------------------------------------------------------------------------
    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header = await reader.readexactly(wire.HEADER_BYTES)
                payload = await reader.readexactly(wire.frame_length(header))
                self._dispatch(wire.from_core_decoder.decode(payload))
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
        if isinstance(msg, wire.StepOutputs):
            self._on_stats(msg.stats)
            for delta in msg.outputs:
                self._on_delta(delta)
        elif isinstance(msg, wire.Heartbeat):
            self._on_stats(msg.stats)
        elif isinstance(msg, wire.AddAck):
            future = self._acks.pop(msg.request_id, None)
            if future is not None and not future.done():
                future.set_result(msg)
        elif isinstance(msg, wire.Ready):
            self.info = msg
            self.last_heartbeat = time.monotonic()
            log.info("engine ready: max_model_len=%d, %d KV blocks, speculation=%s", msg.max_model_len,
                     msg.num_blocks, msg.spec_method)
            self.ready_event.set()
        elif isinstance(msg, wire.Fatal):
            self._fatal = msg.message

    def _on_stats(self, stats: wire.EngineStats) -> None:
        self.last_heartbeat = time.monotonic()
        if stats.num_steps != self.stats.num_steps or not self.stats.num_running:
            self.last_progress = self.last_heartbeat
        self.stats = stats
        self.observer.record_stats(stats)

    def _on_delta(self, delta: wire.RequestDelta) -> None:
        state = self.requests.get(delta.request_id)
        if state is None:
            return
        now = time.monotonic()
        num_new = sum(len(s.new_token_ids) for s in delta.seqs)
        num_prompt = 0
        ttft_s = itl_s = e2e_s = None
        if num_new:
            if state.first_token_time is None:
                state.first_token_time = now
                ttft_s, num_prompt = now - state.arrival, state.num_prompt_tokens
            else:
                itl_s = now - state.last_token_time
            state.last_token_time = now
        if delta.finished:
            e2e_s = now - state.arrival
            del self.requests[delta.request_id]
        finished = [s.finish_reason for s in delta.seqs if s.finish_reason is not None]
        self.observer.record_output(OutputEvent(num_new, num_prompt, ttft_s, itl_s, e2e_s, finished))
        state.queue.put_nowait(delta)

    def _die(self, reason: str) -> None:
        if self.dead_reason is not None:
            return
        self.dead_reason = reason
        if not self._closing:
            log.error("engine core is gone: %s", reason)
        # nothing runs or waits any more: the gauges must not keep their last values
        self.stats = msgspec.structs.replace(self.stats, num_running=0, num_waiting=0, kv_usage=0.0)
        self.observer.record_stats(self.stats)
        error = EngineError(f"the engine stopped: {reason}", ErrorKind.ENGINE_DEAD)
        for future in self._acks.values():
            if not future.done():
                future.set_exception(error)
        for state in self.requests.values():
            state.queue.put_nowait(error)
        self._acks.clear()
        self.requests.clear()
        self.ready_event.set()
        self.dead.set()


def _wait_code(proc: subprocess.Popen) -> int | None:
    try:
        return proc.wait(2)
    except subprocess.TimeoutExpired:
        return None
