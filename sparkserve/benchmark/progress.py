"""A one-line progress bar with the ETA, on stderr (a line per 10% when stderr is not a terminal)."""
from __future__ import annotations

import sys
import time


def format_s(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60:02d}:{seconds % 60:02d}"


class Progress:
    """``total`` requests expected over the whole invocation; ``advance()`` once per finished one.
    The ETA is the elapsed time per request so far times the requests left."""

    def __init__(self, total: int, stream=None, width: int = 30, enabled: bool = True):
        self.total, self.done, self.failed, self.width = max(1, total), 0, 0, width
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.t0 = time.perf_counter()
        self.label = ""
        self._last_decile = -1

    def restart(self) -> None:
        self.t0 = time.perf_counter()

    def eta_s(self) -> float | None:
        if self.done == 0:
            return None
        return (time.perf_counter() - self.t0) / self.done * max(0, self.total - self.done)

    def line(self) -> str:
        frac = min(1.0, self.done / self.total)
        bar = "#" * int(frac * self.width) + "-" * (self.width - int(frac * self.width))
        eta = self.eta_s()
        failed = f" {self.failed} failed" if self.failed else ""
        return (f"[{bar}] {self.done}/{self.total} {frac:4.0%} elapsed {format_s(time.perf_counter() - self.t0)} "
                f"ETA {'--:--' if eta is None else format_s(eta)}{failed} {self.label}")

    def advance(self, ok: bool = True, n: int = 1) -> None:
        self.done += n
        self.failed += 0 if ok else n
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + self.line().ljust(100))
            self.stream.flush()
        elif (decile := int(10 * self.done / self.total)) != self._last_decile:
            self._last_decile = decile
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
