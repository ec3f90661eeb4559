"""``--launch ARGS``: a ``sparkserve launch`` subprocess on 127.0.0.1 and a free port, ready when
``/ready`` answers 200, stopped with SIGTERM (the server drains) when the benchmark ends."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LaunchedServer:
    """The server's output goes to ``log_path`` (a temp file unless given); ``url`` is its base URL."""

    def __init__(self, args: tuple[str, ...] | list[str], log_path: str | None = None, api_key: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or tempfile.mkstemp(prefix="sparkserve-bench-", suffix=".log")[1]
        cmd = [sys.executable, "-m", "sparkserve.cli", "launch", *args, "--host", "127.0.0.1", "--port",
               str(self.port), "--disable-uvicorn-access-log"]
        if api_key:
            cmd += ["--api-key", api_key]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 900.0) -> "LaunchedServer":
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the launched server exited with {self.proc.returncode}: {self.last_error()}")
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"the launched server was not ready after {timeout_s:.0f} s; log: {self.log_path}")

    def last_error(self) -> str:
        """The log's last ERROR line (or its last line): why the server did not come up."""
        lines = [ln.strip() for ln in self.log_tail().splitlines() if ln.strip()]
        errors = [ln for ln in lines if " ERROR " in ln or "Error" in ln]
        return (errors or lines or ["(empty log)"])[-1]

    def log_tail(self, num_chars: int = 3000) -> str:
        self._log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()[-num_chars:]

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

