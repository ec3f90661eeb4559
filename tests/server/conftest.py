"""Fixtures for the server tests: the tiny fixture model and the shared server.

Timing rule for these tests: a request whose lifetime matters is made to outlive the test, not to
be faster or slower than some sleep. The fixture model accepts ``CONTEXT_TOKENS`` positions and the
long-context servers are started with ``LONG_ARGS``, so a request for ``FOREVER_TOKENS`` tokens
needs >= 65,000 engine steps (minutes here; seconds even at an implausible 0.1 ms per step) and
only ends when the test aborts it (client disconnect, deadline, engine kill). Tests then wait on
observable state (/metrics, the first streamed chunk) with timeouts that only bound a failure.
"""
import json
import os

import openai
import pytest

from tests.models.hf_fixtures import make_hf_model
from tests.server.server_proc import API_KEY, ServerProcess

MODEL_NAME = "tiny"
BLOCK_SIZE = 16  # tokens per KV block
# Small limits keep the tiny fixture model fast: 256-token context, 128 KV blocks.
COMMON_ARGS = ("--served-model-name", MODEL_NAME, "--max-model-len", "256", "--block-size", str(BLOCK_SIZE),
               "--num-kv-blocks", "128")
CONTEXT_TOKENS = 1 << 16  # the fixture model's position range (RoPE: its weights work at any length)
FOREVER_TOKENS = CONTEXT_TOKENS - 64  # max_tokens of a request that runs until the test ends it
# One full-context sequence fits the KV cache (plus the null block and slack), so a long request is
# never ended early for outgrowing it: 4160 blocks of ~8 KiB.
NUM_KV_BLOCKS = CONTEXT_TOKENS // BLOCK_SIZE + 64
LONG_ARGS = (*COMMON_ARGS, "--max-model-len", str(CONTEXT_TOKENS), "--num-kv-blocks", str(NUM_KV_BLOCKS))
# Room for a prompt of CONTEXT_TOKENS token ids (the context-length error cases).
MAX_BODY_BYTES = 1 << 18


def kv_blocks_in_use(metrics: dict) -> int:
    """KV blocks held by requests, from ``kv_cache_usage_perc`` (a fraction of the usable blocks)."""
    return round(metrics["sparkserve:kv_cache_usage_perc"] * (NUM_KV_BLOCKS - 1))


@pytest.fixture(scope="session")
def server_model_dir(tmp_path_factory):
    path = make_hf_model(str(tmp_path_factory.mktemp("server-qwen3")), "qwen3", tied=True, seed=5)
    config_path = os.path.join(path, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["max_position_embeddings"] = CONTEXT_TOKENS  # only sizes the RoPE tables (2 x 2 MiB)
    with open(config_path, "w") as f:
        json.dump(config, f)
    return path


@pytest.fixture(scope="session")
def server(server_model_dir, tmp_path_factory):
    """The shared server for API, error and disconnect tests (one process for the whole session)."""
    log = str(tmp_path_factory.mktemp("logs") / "server.log")
    proc = ServerProcess(server_model_dir, log, *LONG_ARGS, "--max-num-seqs", "32", "--max-n", "8",
                         "--max-logprobs", "5", "--max-body-bytes", str(MAX_BODY_BYTES))
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)
