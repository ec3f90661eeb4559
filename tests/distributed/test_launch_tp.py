"""``sparkserve launch --tensor-parallel-size 2`` through the real server, with the real ``openai`` client: a
chat completion, greedy completions token for token as TP=1 (the in-process engine, no drafter), the worker
process started under the engine core; killing that worker fails the next request with ``engine_dead`` and
the server exits 1 with no process left behind. A size that does not divide the model is refused before
the port is bound."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import openai

from sparkserve.assets import demo_model_path
from sparkserve.engine.llm import LLM
from sparkserve.sampling_params import SamplingParams
from tests.server.server_proc import API_KEY, ROOT, ServerProcess, pid_alive, wait_for

ARGS = ("--max-model-len", "256", "--num-kv-blocks", "64", "--served-model-name", "demo", "--generation-config", "none")
PROMPTS = ["The quick brown fox", "def add(a, b):", "Question: what is 3 + 4?", "Hello, my name is"]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return ""


def test_launch_tp2_serves_then_a_dead_worker_ends_the_server(tmp_path):
    server = ServerProcess(demo_model_path(), str(tmp_path / "server.log"), *ARGS, "--tensor-parallel-size", "2",
                           "--engine-death-exit-s", "1")
    try:
        server.wait_ready()
        core = server.core_pid()
        workers = [p for p in _children(core) if "spawn_main" in _cmdline(p) and "resource_tracker" not in _cmdline(p)]
        assert len(workers) == 1, [_cmdline(p) for p in _children(core)]
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
        reply = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "Hello!"}],
                                               max_tokens=12, temperature=0)
        assert reply.choices[0].message.content and reply.usage.completion_tokens > 0
        assert "tensor parallel: 2 ranks (gloo)" in server.log()
        tp2 = [client.completions.create(model="demo", prompt=p, max_tokens=20, temperature=0).choices[0].text
               for p in PROMPTS]
        tp1 = LLM(demo_model_path(), num_kv_blocks=64, max_model_len=256).generate(
            PROMPTS, SamplingParams(temperature=0, max_tokens=20))
        assert tp2 == [o.outputs[0].text for o in tp1]

        os.kill(workers[0], signal.SIGKILL)
        try:
            client.completions.create(model="demo", prompt=PROMPTS[0], max_tokens=20, temperature=0)
            raise AssertionError("a request after the worker died succeeded")
        except openai.APIStatusError as e:
            assert e.status_code == 503 and e.code == "engine_dead", e.body
        assert server.proc.wait(60) == 1, server.log()
        with open(server.log_path, errors="replace") as f:
            assert "TensorParallelError: tensor parallelism: worker rank 1 (exit code -9) died" in f.read()
    finally:
        server.stop()
    assert wait_for(lambda: not pid_alive(core) and not any(pid_alive(p) for p in workers), timeout=30)


def test_launch_refuses_a_size_that_does_not_divide():
    proc = subprocess.run([sys.executable, "-m", "sparkserve.cli", "launch", "--model", demo_model_path(), *ARGS,
                           "--tensor-parallel-size", "3", "--port", "1"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "tensor_parallel_size 3 does not divide this model's num_attention_heads 8" in proc.stderr
