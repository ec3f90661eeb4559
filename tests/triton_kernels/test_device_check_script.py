"""bench/device_check.sh cannot rot between GPU runs: it parses, and its --dry-run (CPU, tiny shapes,
Triton interpreted) runs every step end to end and writes its profile, eager and with (stand-in) graphs."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "bench", "device_check.sh")


def test_script_parses():
    subprocess.run(["bash", "-n", SCRIPT], check=True)


def test_dry_run_end_to_end(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "TRITON_INTERPRET": "1"}
    env.pop("SPARKSERVE_WHEELS", None)
    proc = subprocess.run(["bash", SCRIPT, str(tmp_path), "--dry-run"], env=env, capture_output=True, text=True,
                          timeout=1200)
    log = (tmp_path / "device_check.log").read_text() if (tmp_path / "device_check.log").exists() else ""
    assert proc.returncode == 0, proc.stdout + log[-4000:]
    assert "failed steps: 0" in (tmp_path / "summary.txt").read_text()
    rows = json.loads((tmp_path / "profile.json").read_text())["rows"]
    assert {(r["backend"], r["mode"]) for r in rows} == {(b, m) for b in ("torch", "triton") for m in ("eager", "graphs")}
    assert not any("error" in r for r in rows)
    skipped = [r for r in rows if "skipped" in r]  # torch has no fixed-shape metadata: no graphs
    assert [(r["backend"], r["mode"]) for r in skipped] == [("torch", "graphs")]
    graphed = next(r for r in rows if r["backend"] == "triton" and r["mode"] == "graphs")
    assert graphed["graph_replays"]["1x8"] > 0 and graphed["graph_replays"]["3x1"] > 0  # decode and verify replayed
    assert (tmp_path / "profile.md").read_text().count("| tiny |") == 4
