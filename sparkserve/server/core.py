"""The engine core process: ``python -m sparkserve.server.core --fd N``.

The API process starts it with one end of a socketpair as fd N (see ``engine_client``). The
core owns the ``Engine`` (and so torch); the API process never imports this module.

Threads:
* main: builds the engine, then loops: apply queued ``Add``/``Abort`` messages, ``engine.step()``
  while there is work, send each step's deltas. Blocks on the inbox when idle.
* reader (started before the engine is built): decodes frames into the inbox. EOF (the API
  process is gone, or closed the socket to shut us down) exits the process at once: this is the
  watchdog that prevents orphans.
* heartbeat: sends the latest stats snapshot every ``HEARTBEAT_INTERVAL_S``.

A step that raises is fatal: the core sends ``Fatal`` and exits 1 (engine state is unknown).
Bad requests are not: ``add_request`` errors are answered with an ``AddAck`` carrying the error.
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

from sparkserve.server import ipc

log = logging.getLogger("sparkserve.core")
HEARTBEAT_INTERVAL_S = 0.5


class Conn:
    """Blocking framed connection (sends are serialized: main and heartbeat threads both send)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._lock = threading.Lock()

    def send(self, msg) -> None:
        data = ipc.encode_frame(msg)
        with self._lock:
            self.sock.sendall(data)

    def recv(self):
        """The next message; None at EOF."""
        header = self._recv_exact(ipc.HEADER_BYTES)
        if header is None:
            return None
        payload = self._recv_exact(ipc.frame_length(header))
        if payload is None:
            return None
        return ipc.to_core_decoder.decode(payload)

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
        self.stats = self._stats()
        self._lp_sent: dict[str, dict[int, int]] = {}  # request -> choice index -> logprobs sent
        self._done: dict[str, set[int]] = {}  # request -> choice indices whose finish was sent

    # -- threads --------------------------------------------------------------------------------------
    def run(self) -> None:
        threading.Thread(target=self._heartbeat_loop, name="core-heartbeat", daemon=True).start()
        eng = self.engine
        self.conn.send(ipc.Ready(eng.config.scheduler.max_model_len, eng.model_config.vocab_size,
                                 eng.num_blocks, eng.config.spec.method))
        while True:
            msgs = self._drain(block=not eng.has_unfinished())
            deltas: list[ipc.ReqDelta] = []
            for msg in msgs:
                deltas += self._handle(msg)
            if eng.has_unfinished():
                try:
                    outs = eng.step()
                except Exception as e:  # engine state is unknown: report and die
                    log.error("engine step failed:\n%s", traceback.format_exc())
                    self._fatal(f"engine step failed: {type(e).__name__}: {e}")
                deltas += [d for d in map(self._delta, outs) if d is not None]
            if deltas or msgs:
                self.stats = self._stats()
                self.conn.send(ipc.StepOutputs(deltas, self.stats))

    def _heartbeat_loop(self) -> None:
        while True:
            time.sleep(HEARTBEAT_INTERVAL_S)
            try:
                self.conn.send(ipc.Heartbeat(self.stats))
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
            self.conn.send(ipc.Fatal(message))
        finally:
            os._exit(1)

    # -- messages -------------------------------------------------------------------------------------
    def _handle(self, msg) -> list[ipc.ReqDelta]:
        if isinstance(msg, ipc.Abort):
            return [d for d in map(self._delta, self.engine.abort(msg.request_ids)) if d is not None]
        if isinstance(msg, ipc.Add):
            self.conn.send(self._add(msg))
        return []

    def _add(self, msg: ipc.Add) -> ipc.AddAck:
        from sparkserve.sampling_params import SamplingParams
        from sparkserve.scheduler import QueueFullError

        rid = msg.request_id
        try:
            params = SamplingParams(**msg.params)
            self.engine.add_request(rid, {"prompt_token_ids": msg.prompt_token_ids, "prompt": msg.prompt}, params)
            return ipc.AddAck(rid)
        except QueueFullError as e:
            self._forget(rid)
            return ipc.AddAck(rid, str(e), "queue_full")
        except (ValueError, TypeError) as e:
            self._forget(rid)
            return ipc.AddAck(rid, str(e), "invalid")
        except Exception as e:
            log.error("add_request failed:\n%s", traceback.format_exc())
            self._forget(rid)
            return ipc.AddAck(rid, f"{type(e).__name__}: {e}", "internal")

    def _forget(self, rid: str) -> None:
        """Undo a partly added request (n > 1 children queued before the failure); emit nothing."""
        try:
            self.engine.abort(rid)
        except Exception:  # pragma: no cover - nothing was added
            pass
        self._lp_sent.pop(rid, None)
        self._done.pop(rid, None)

    def _delta(self, out) -> ipc.ReqDelta | None:
        rid = out.request_id
        lp_sent = self._lp_sent.setdefault(rid, {})
        done = self._done.setdefault(rid, set())
        seqs = []
        for c in out.outputs:
            if c.index in done:
                continue
            lps = None
            if c.logprobs is not None:
                start = lp_sent.get(c.index, 0)
                lps = [(int(lp.token_id), float(lp.logprob), [(int(t), float(v)) for t, v in lp.top])
                       for lp in c.logprobs[start:]]
                lp_sent[c.index] = len(c.logprobs)
            if not (c.delta_token_ids or c.delta_text or c.finish_reason or lps):
                continue
            if c.finish_reason is not None:
                done.add(c.index)
            stop_reason = c.stop_reason if isinstance(c.stop_reason, (int, str)) else None
            seqs.append(ipc.SeqDelta(c.index, c.delta_text, [int(t) for t in c.delta_token_ids], len(c.token_ids),
                                     c.finish_reason, stop_reason, lps))
        spec = None
        if out.finished:
            self._lp_sent.pop(rid, None)
            self._done.pop(rid, None)
            if out.spec_decode is not None and out.spec_decode.num_drafts:
                spec = out.spec_decode.as_dict()
        if not seqs and not out.finished:
            return None
        return ipc.ReqDelta(rid, out.finished, len(out.prompt_token_ids), out.num_cached_tokens, seqs, spec)

    def _stats(self) -> ipc.EngineStats:
        s = self.engine.stats()
        return ipc.EngineStats(s["num_running"], s["num_waiting"], float(s["kv_usage"]), s["num_preemptions"],
                               s["num_blocks"], self.engine.num_steps, s.get("spec_decode"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="sparkserve engine core (started by `sparkserve launch`)")
    parser.add_argument("--fd", type=int, required=True, help="file descriptor of the socket to the API process")
    args = parser.parse_args(argv)
    # Ctrl-C in a terminal reaches the whole process group: the API process drains and then closes
    # our socket, which is what ends this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Conn(socket.socket(fileno=args.fd))
    start = conn.recv()
    if not isinstance(start, ipc.Start):
        return 0 if start is None else 2
    logging.basicConfig(level=start.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    inbox = start_reader(conn)  # from here on, losing the API process ends this one, even mid-load
    try:
        from sparkserve.engine.engine import Engine
        from sparkserve.engine.llm import build_engine_config

        engine = Engine(build_engine_config(**start.engine_kwargs))
    except Exception as e:
        log.debug("engine build failed:\n%s", traceback.format_exc())
        conn.send(ipc.Fatal(f"could not start the engine: {e}"))
        return 1
    log.info("engine core ready (pid %d, %d KV blocks)", os.getpid(), engine.num_blocks)
    try:
        CoreLoop(engine, conn, inbox).run()
    except OSError:  # the API process went away while we were sending
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
