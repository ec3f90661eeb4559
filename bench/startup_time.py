"""Time from ``sparkserve launch`` to ``/ready`` = 200, with the console lines timestamped (issue 14).

    python bench/startup_time.py [--cache-dir DIR] [--port 18731] [-- LAUNCH ARGS...]

``--cache-dir`` is passed as ``SPARKSERVE_CACHE_DIR``: an empty folder measures a first start on a fresh
machine (the native kernels built, the step-time table profiled), the same folder again a warm start.
Prints the seconds to ready and the server's log lines with their offsets, then stops the server.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import threading
import time
import urllib.request


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", default=None, help="SPARKSERVE_CACHE_DIR for the server (default: the user's)")
    ap.add_argument("--port", type=int, default=18731)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("launch_args", nargs="*", help="extra arguments for sparkserve launch (after --)")
    args = ap.parse_args(argv)
    env = dict(os.environ, **({"SPARKSERVE_CACHE_DIR": args.cache_dir} if args.cache_dir else {}))
    t0 = time.time()
    proc = subprocess.Popen(["sparkserve", "launch", "--host", "127.0.0.1", "--port", str(args.port),
                             *args.launch_args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []

    def pump() -> None:
        for line in proc.stdout:
            lines.append(f"[{time.time() - t0:6.1f} s] {line.rstrip()}")

    threading.Thread(target=pump, daemon=True).start()
    ready = None
    while ready is None and time.time() - t0 < args.timeout and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{args.port}/ready", timeout=2) as r:
                ready = time.time() - t0 if r.status == 200 else None
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    proc.wait(60)
    print("\n".join(lines))
    print(f"/ready after {ready:.1f} s" if ready is not None else "never ready (see the log above)")


if __name__ == "__main__":
    main()
