"""``sparkserve bench serve --help`` and ``python -m sparkserve.benchmark serve --help`` document the flags."""
import subprocess
import sys

import pytest

from sparkserve import cli
from tests.server.server_proc import ROOT

FLAGS = ["--base-url", "--launch", "--model", "--api-key", "--endpoint", "--compare", "--dataset", "--num-prompts",
         "--output-len", "--ignore-eos", "--max-concurrency", "--request-rate", "--burstiness", "--duration-s",
         "--warmup-requests", "--repeats", "--seed", "--slo", "--frontier", "--min-tok-s-user", "--out"]


def test_installed_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "serve", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert not [f for f in FLAGS if f not in out]
    assert "bench" in cli.COMMANDS


def test_module_help():
    out = subprocess.run([sys.executable, "-m", "sparkserve.benchmark", "serve", "--help"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and "--min-tok-s-user" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "sparkserve.benchmark", "serve", "--slo", "ttft=1"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: bad SLO 'ttft=1'")
