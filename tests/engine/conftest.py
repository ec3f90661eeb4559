import pytest

from tests.models.hf_fixtures import make_hf_model


@pytest.fixture(scope="session")
def qwen3_dir(tmp_path_factory):
    return make_hf_model(str(tmp_path_factory.mktemp("qwen3-tiny")), "qwen3", tied=True, seed=3)


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory):
    return make_hf_model(str(tmp_path_factory.mktemp("llama-tiny")), "llama", tied=False, seed=4)
