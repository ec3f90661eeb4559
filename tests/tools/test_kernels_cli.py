"""``sparkserve kernels``: builds (or checks) the native CPU kernels for this machine, exit 0 when they load,
1 with the reason when this machine runs the torch references."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sparkserve import native


def kernels(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sparkserve", "kernels", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **env})


def test_check_reports_a_missing_build_without_building(tmp_path):
    out = kernels("--check", SPARKSERVE_CACHE_DIR=str(tmp_path))
    assert out.returncode == 1 and "not built" in out.stdout
    assert not any(tmp_path.iterdir())  # nothing was compiled


def test_build_then_check():
    if not native.enabled_by_env():
        pytest.skip("SPARKSERVE_NATIVE=0: the kernels are forced off")
    out = kernels()  # the suite's own cache: built once, then loaded
    assert out.returncode == 0 and "native CPU kernels ready" in out.stdout, out.stdout + out.stderr
    check = kernels("--check")
    assert check.returncode == 0 and "built" in check.stdout


def test_forced_off_says_so():
    out = kernels(SPARKSERVE_NATIVE="0")
    assert out.returncode == 1 and "torch references" in out.stdout and "SPARKSERVE_NATIVE=0" in out.stderr
