"""One real sparkserve server for the harness tests: the tiny fixture model with n-gram speculation
(so responses carry usage.spec_decode and /metrics moves), no API key."""
import json
import os

import pytest

from tests.models.hf_fixtures import make_hf_model
from tests.server.server_proc import ServerProcess

MODEL_NAME = "tiny"
CONTEXT = 4096  # room for two turns in the byte-level fixture tokenizer (mt-bench's are ~1,500 tokens)
# a multi-turn prompt set in mt-bench's format, shipped with the tests: a clone may have no ../shared
MULTI_TURN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "multi-turn.jsonl")
SERVER_ARGS = ("--served-model-name", MODEL_NAME, "--max-model-len", str(CONTEXT), "--num-kv-blocks", "1024",
               "--max-num-seqs", "8",
               "--speculative-config", json.dumps({"method": "ngram", "num_speculative_tokens": 3}))


@pytest.fixture(scope="session")
def bench_model_dir(tmp_path_factory):
    path = make_hf_model(str(tmp_path_factory.mktemp("bench-qwen3")), "qwen3", tied=True, seed=5)
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    config["max_position_embeddings"] = CONTEXT  # only sizes the RoPE tables
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    return path


@pytest.fixture(scope="session")
def bench_server(bench_model_dir, tmp_path_factory):
    log = str(tmp_path_factory.mktemp("logs") / "bench-server.log")
    proc = ServerProcess(bench_model_dir, log, *SERVER_ARGS, api_key=None)
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()
