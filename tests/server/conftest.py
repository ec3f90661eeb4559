import openai
import pytest

from tests.models.hf_fixtures import make_hf_model
from tests.server.server_proc import API_KEY, ServerProcess

MODEL_NAME = "tiny"
# Small limits keep the tiny fixture model fast: 256-token context, 128 KV blocks of 16 tokens.
COMMON_ARGS = ("--served-model-name", MODEL_NAME, "--max-model-len", "256", "--block-size", "16",
               "--num-kv-blocks", "128")


@pytest.fixture(scope="session")
def server_model_dir(tmp_path_factory):
    return make_hf_model(str(tmp_path_factory.mktemp("server-qwen3")), "qwen3", tied=True, seed=5)


@pytest.fixture(scope="session")
def server(server_model_dir, tmp_path_factory):
    """The shared server for API, error and disconnect tests (one process for the whole session)."""
    log = str(tmp_path_factory.mktemp("logs") / "server.log")
    proc = ServerProcess(server_model_dir, log, *COMMON_ARGS, "--max-num-seqs", "32", "--max-n", "8",
                         "--max-logprobs", "5", "--max-body-bytes", "65536")
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)
