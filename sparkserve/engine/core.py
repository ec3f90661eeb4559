"""The engine core process: ``python -m sparkserve.engine.core --fd N``.

The API process starts it with one end of a socketpair as fd N (see ``client``). The core owns
the ``Engine`` (and so torch); the API process never imports this module. Messages are the
structs of ``wire``; the engine's per-step deltas are sent as they come out of ``Engine.step``.

Threads:
* main: builds the engine, then loops: apply queued ``Add``/``Abort`` messages, ``engine.step()``
  while there is work, send each step's deltas. Blocks on the inbox when idle.
* reader (started before the engine is built): decodes frames into the inbox. EOF (the API
  process is gone, or closed the socket to shut us down) exits the process at once: this is the
  watchdog that prevents orphans.
* heartbeat: sends the latest stats snapshot every ``HEARTBEAT_INTERVAL_S``.

A step that raises is fatal: the core sends ``Fatal`` and exits 1 (engine state is unknown).
Bad requests are not: ``add_request`` errors are answered with an ``AddAck`` carrying the error
and its ``ErrorKind``.
"""
from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import socket
import threading
import time
import traceback

from sparkserve.engine import wire
from sparkserve.errors import ErrorKind, error_kind

log = logging.getLogger("sparkserve.core")
HEARTBEAT_INTERVAL_S = 0.5


class Conn:
    """Blocking framed connection (sends are serialized: main and heartbeat threads both send)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._lock = threading.Lock()

    def send(self, msg) -> None:
        data = wire.encode_frame(msg)
        with self._lock:
            self.sock.sendall(data)

    def recv(self):
        """The next message; None at EOF."""
        header = self._recv_exact(wire.HEADER_BYTES)
        if header is None:
            return None
        payload = self._recv_exact(wire.frame_length(header))
        if payload is None:
            return None
        return wire.to_core_decoder.decode(payload)

    def _recv_exact(self, n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)


def start_reader(conn: Conn) -> queue.SimpleQueue:
    """Decode frames into a queue on a daemon thread; EOF exits the process (the watchdog)."""
    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def read_loop() -> None:
        try:
            while (msg := conn.recv()) is not None:
                inbox.put(msg)
        except Exception as e:  # corrupt stream or a reset socket: nobody to talk to any more
            log.error("engine core connection failed: %s", e)
            os._exit(1)
        log.info("API process closed the connection; engine core exiting")
        os._exit(0)

    threading.Thread(target=read_loop, name="core-reader", daemon=True).start()
    return inbox


class CoreLoop:
    def __init__(self, engine, conn: Conn, inbox: queue.SimpleQueue):
        self.engine = engine
        self.conn = conn
        self.inbox = inbox
        self.stats = engine.stats()

    # -- threads --------------------------------------------------------------------------------------
    def run(self) -> None:
        threading.Thread(target=self._heartbeat_loop, name="core-heartbeat", daemon=True).start()
        eng = self.engine
        self.conn.send(wire.Ready(eng.config.scheduler.max_model_len, eng.model_config.vocab_size,
                                 eng.num_blocks, eng.config.spec.method))
        while True:
            msgs = self._drain(block=not eng.has_unfinished())
            deltas: list[wire.RequestDelta] = []
            for msg in msgs:
                deltas += self._handle(msg)
            if eng.has_unfinished():
                try:
                    outs = eng.step()
                except Exception as e:  # engine state is unknown: report and die
                    log.error("engine step failed:\n%s", traceback.format_exc())
                    self._fatal(f"engine step failed: {type(e).__name__}: {e}")
                deltas += outs
            if deltas or msgs:
                self.stats = eng.stats()
                self.conn.send(wire.StepOutputs(deltas, self.stats))

    def _heartbeat_loop(self) -> None:
        while True:
            time.sleep(HEARTBEAT_INTERVAL_S)
            try:
                self.conn.send(wire.Heartbeat(self.stats))
            except OSError:
                os._exit(0)

    def _drain(self, block: bool) -> list:
        msgs = [self.inbox.get()] if block else []
        while True:
            try:
                msgs.append(self.inbox.get_nowait())
            except queue.Empty:
                return msgs

    def _fatal(self, message: str) -> None:
        try:
            self.conn.send(wire.Fatal(message))
        finally:
            os._exit(1)

    # -- messages -------------------------------------------------------------------------------------
    def _handle(self, msg) -> list[wire.RequestDelta]:
        if isinstance(msg, wire.Abort):
            return self.engine.abort(msg.request_ids)
        if isinstance(msg, wire.Add):
            self.conn.send(self._add(msg))
        return []

    def _add(self, msg: wire.Add) -> wire.AddAck:
        rid = msg.request_id
        try:
            params = msg.params.to_sampling()
            self.engine.add_request(rid, {"prompt_token_ids": msg.prompt_token_ids, "prompt": msg.prompt}, params)
            return wire.AddAck(rid)
        except Exception as e:
            kind, message = error_kind(e), str(e)
            if kind is ErrorKind.INTERNAL:
                log.error("add_request failed:\n%s", traceback.format_exc())
                message = f"{type(e).__name__}: {e}"
            self._forget(rid)
            return wire.AddAck(rid, message, kind)

    def _forget(self, rid: str) -> None:
        """Undo a partly added request (n > 1 children queued before the failure); emit nothing."""
        try:
            self.engine.abort(rid)
        except Exception:  # pragma: no cover - nothing was added
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="sparkserve engine core (started by `sparkserve launch`)")
    parser.add_argument("--fd", type=int, required=True, help="file descriptor of the socket to the API process")
    args = parser.parse_args(argv)
    # Ctrl-C in a terminal reaches the whole process group: the API process drains and then closes
    # our socket, which is what ends this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Conn(socket.socket(fileno=args.fd))
    start = conn.recv()
    if not isinstance(start, wire.Start):
        return 0 if start is None else 2
    logging.basicConfig(level=start.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    inbox = start_reader(conn)  # from here on, losing the API process ends this one, even mid-load
    try:
        from sparkserve.engine.engine import Engine
        from sparkserve.engine.args import build_engine_config

        engine = Engine(build_engine_config(**start.engine_kwargs))
    except Exception as e:
        log.debug("engine build failed:\n%s", traceback.format_exc())
        conn.send(wire.Fatal(f"could not start the engine: {e}"))
        return 1
    log.info("engine core ready (pid %d, %d KV blocks)", os.getpid(), engine.num_blocks)
    try:
        CoreLoop(engine, conn, inbox).run()
    except OSError:  # the API process went away while we were sending
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
