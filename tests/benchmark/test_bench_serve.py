"""``sparkserve bench serve`` against a real sparkserve server: metrics agree with the server's own
counts, --compare runs interleave (one setup launched by the harness), failures are counted and
sampled, a down server or a wrong model is one clear line, and Ctrl-C keeps what was measured."""
import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

from sparkserve import cli
from sparkserve.benchmark.compare import interleaved_schedule
from tests.benchmark.conftest import MODEL_NAME, MULTI_TURN, SERVER_ARGS
from tests.server.server_proc import ROOT, free_port, wait_for


def bench(*args: str) -> int:
    return cli.main(["bench", "serve", "--no-progress", "--temperature", "0", *args])


def result(out_dir) -> dict:
    with open(os.path.join(out_dir, "result.json")) as f:
        return json.load(f)


def test_runs_report_what_the_server_counted(bench_server, tmp_path, capsys):
    before = bench_server.metrics()
    out = tmp_path / "out"
    assert bench("--base-url", bench_server.url, "--dataset", "demo-chat", "--num-prompts", "6",
                 "--max-concurrency", "1,3", "--output-len", "12", "--ignore-eos", "--slo", "ttft_ms=600000",
                 "--warmup-requests", "0", "--out", str(out)) == 0
    doc = result(out)
    runs = doc["setups"]["server"]
    assert [r["load"] for r in runs] == ["c=1", "c=3"] and doc["models"] == {"server": MODEL_NAME}
    for r in runs:
        assert (r["completed"], r["failed"], r["output_lens"]) == (6, 0, [12] * 6)  # ignore_eos: all 12 tokens
        assert r["total_output_tokens"] == 72 and r["request_goodput"] == r["request_throughput"]
        assert 0 < r["median_ttft_ms"] <= r["p99_ttft_ms"] and r["mean_tpot_ms"] > 0
        assert r["median_e2el_ms"] >= r["median_ttft_ms"]
        assert r["spec_decode_requests"] > 0 and r["spec_decode_acceptance_length"] >= 1.0  # usage and /metrics
    # the server generated exactly what the harness counted, took every prompt token it reported, and
    # verified the drafts the responses' usage.spec_decode summed to (waits only for /metrics to settle)
    want = {"sparkserve:generation_tokens_total": 144,
            "sparkserve:prompt_tokens_total": sum(r["total_input_tokens"] for r in runs),
            "sparkserve:spec_decode_num_verified_draft_tokens_total":
                sum(r["spec_decode_verified_draft_tokens"] for r in runs)}

    def deltas():
        after = bench_server.metrics()
        return {k: after[k] - before[k] for k in want}

    assert wait_for(lambda: deltas() == want, timeout=30), (deltas(), want)
    assert {"frontier.png", "latency_cdf.png", "verify_length.png", "summary.md"} <= set(os.listdir(out))
    assert "| server | c=3 | 6 | 0 |" in capsys.readouterr().out


def test_multi_turn_and_completions(bench_server, tmp_path):
    out = tmp_path / "mt"
    assert bench("--base-url", bench_server.url, "--dataset", MULTI_TURN, "--num-prompts", "2", "--output-len", "8",
                 "--max-concurrency", "2", "--out", str(out), "--no-plots") == 0
    r = result(out)["setups"]["server"][0]
    assert r["completed"] == 4  # two conversations of two turns
    assert bench("--base-url", bench_server.url, "--endpoint", "completions", "--dataset", "shared-prefix",
                 "--prefix-len", "32", "--random-input-len", "8", "--vocab-size", "320", "--num-prompts", "4",
                 "--output-len", "4",
                 "--ignore-eos", "--request-rate", "50", "--out", str(out), "--no-plots") == 0
    r = result(out)["setups"]["server"][0]
    assert (r["completed"], r["input_lens"], r["load"]) == (4, [40] * 4, "rate=50/s")
    # bounded by time: 300 conversations at c=1 cannot all start within half a second
    assert bench("--base-url", bench_server.url, "--dataset", "demo-math", "--num-prompts", "300", "--output-len",
                 "8", "--duration-s", "0.5", "--warmup-requests", "0", "--out", str(out), "--no-plots") == 0
    r = result(out)["setups"]["server"][0]
    assert 1 <= r["completed"] < 300 and r["failed"] == 0 and len(r["user_tok_s"]) == r["completed"]


def test_compare_interleaves_and_stops_what_it_launched(bench_server, bench_model_dir, tmp_path):
    out = tmp_path / "cmp"
    launch = " ".join(["--model", bench_model_dir, *(a if " " not in a else f"'{a}'" for a in SERVER_ARGS)])
    assert bench("--compare", f"a={bench_server.url}", f"b={launch}", "--dataset", "demo-math", "--num-prompts", "3",
                 "--output-len", "4", "--max-concurrency", "1,2", "--repeats", "2", "--out", str(out),
                 "--no-plots") == 0
    doc = result(out)
    runs = sorted((r for rs in doc["setups"].values() for r in rs), key=lambda r: r["start_time"])
    assert [(r["load"], r["repeat"], r["setup"]) for r in runs] == \
        interleaved_schedule(["a", "b"], ["c=1", "c=2"], repeats=2)
    assert all(r["completed"] == 3 for r in runs)
    assert doc["servers"]["a"] == bench_server.url and doc["servers"]["b"] != bench_server.url
    with pytest.raises(httpx.ConnectError):  # the launched server was stopped
        httpx.get(doc["servers"]["b"] + "/health", timeout=10)


def test_failures_are_counted_and_sampled(bench_server, tmp_path, capsys):
    out = tmp_path / "fail"
    assert bench("--base-url", bench_server.url, "--dataset", "demo-math", "--num-prompts", "3", "--output-len",
                 "100000", "--warmup-requests", "0", "--out", str(out), "--no-plots") == 0
    r = result(out)["setups"]["server"][0]
    assert (r["completed"], r["failed"]) == (0, 3)
    [sample] = r["error_samples"]
    assert sample["count"] == 3 and sample["error"].startswith("HTTP 400") and "context" in sample["error"].lower()
    assert "3 x HTTP 400" in capsys.readouterr().out


def test_down_server_and_wrong_model_are_one_line(bench_server, capsys):
    assert bench("--base-url", f"http://127.0.0.1:{free_port()}") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot reach the server") and "\n" not in err
    assert bench("--base-url", bench_server.url, "--model", "nope") == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: model 'nope' is not served at {bench_server.url} (it serves: {MODEL_NAME})"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_writes_what_was_measured(bench_server, tmp_path, signum):
    out = tmp_path / "int"
    cmd = [sys.executable, "-m", "sparkserve.benchmark", "serve", "--base-url", bench_server.url, "--dataset",
           "demo-code", "--num-prompts", "400", "--output-len", "32", "--max-concurrency", "1", "--out", str(out),
           "--no-plots", "--warmup-requests", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    first = proc.stderr.readline()  # the progress bar's first line: at least one request finished
    assert "/400" in first, first
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    doc = result(out)
    [run] = doc["setups"]["server"]
    assert doc["interrupted"] and run["partial"] and 0 < run["completed"] < 400
    assert "interrupted" in stdout
