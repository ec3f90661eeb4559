"""Play kubelet for one container, inside a private network namespace (``unshare -n``).

usage: python pod_sim.py SPEC.json  (written by test_pod_command.py); prints a JSON report.

It brings up the namespace's loopback, starts the container's argv with its env, runs the startup
probe until it succeeds (failing after initialDelay + period x failureThreshold, as kubelet
would), then the readiness and liveness probes once, one authenticated completion (and one
without the key), then the pod's deletion: the preStop sleep, SIGTERM, and the wait for the exit
within terminationGracePeriodSeconds. Probes poll every second rather than every period, so the
run is shorter than kubelet's; the deadlines are kubelet's.
"""
from __future__ import annotations

import fcntl
import json
import signal
import socket
import struct
import subprocess
import sys
import time

import httpx

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sh", b"lo", 0)))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))


def die_with_parent() -> None:
    """In the container process: SIGKILL when this stand-in dies (a timed-out test leaves nothing;
    the engine core follows its API process on its own)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and its children (the engine core), MiB."""
    total = 0
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def probe(url: str, timeout_s: float) -> int | None:
    """The HTTP status, or None when nothing answered (kubelet: failure)."""
    try:
        return httpx.get(url, timeout=timeout_s).status_code
    except httpx.HTTPError:
        return None


def main(spec_path: str) -> int:
    with open(spec_path) as f:
        spec = json.load(f)
    loopback_up()
    base = f"http://127.0.0.1:{spec['port']}"
    report: dict = {"startup_statuses": []}
    log = open(spec["log"], "wb")
    proc = subprocess.Popen(spec["argv"], env=spec["env"], cwd=spec["cwd"], stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent)
    try:
        sp = spec["probes"]["startupProbe"]
        deadline = time.monotonic() + sp.get("initialDelaySeconds", 0) + sp["periodSeconds"] * sp["failureThreshold"]
        t0 = time.monotonic()
        while True:
            status = probe(base + sp["httpGet"]["path"], sp["timeoutSeconds"])
            if not report["startup_statuses"] or report["startup_statuses"][-1] != status:
                report["startup_statuses"].append(status)
            if status is not None and 200 <= status < 400:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                report["startup_failed"] = f"exit code {proc.poll()}" if proc.poll() is not None else "deadline"
                return _finish(report, proc, log)
            time.sleep(1)
        report["startup_s"] = round(time.monotonic() - t0, 1)
        report["rss_mib"] = round(rss_mib(proc.pid))
        for name in ("readinessProbe", "livenessProbe"):
            p = spec["probes"][name]
            report[name] = probe(base + p["httpGet"]["path"], p["timeoutSeconds"])
        auth = {"Authorization": f"Bearer {spec['api_key']}"}
        models = httpx.get(base + "/v1/models", headers=auth, timeout=60).json()
        body = {"model": models["data"][0]["id"], "prompt": "def add(a, b):", "max_tokens": 8, "ignore_eos": True}
        r = httpx.post(base + "/v1/completions", json=body, headers=auth, timeout=300)
        report["completion"] = {"status": r.status_code, "tokens": r.json().get("usage", {}).get("completion_tokens")}
        report["without_key"] = httpx.post(base + "/v1/completions", json=body, timeout=60).status_code
        # pod deletion: preStop, then SIGTERM, then up to the grace period
        time.sleep(spec["pre_stop_s"])
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            report["exit_code"] = proc.wait(spec["grace_s"])
            report["exit_s"] = round(time.monotonic() - t_term, 1)
        except subprocess.TimeoutExpired:
            report["exit_code"] = "killed after the grace period"
        return _finish(report, proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _finish(report: dict, proc: subprocess.Popen, log) -> int:
    log.close()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
