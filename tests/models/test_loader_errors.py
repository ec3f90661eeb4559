"""Bad checkpoints fail early with a ValueError that names the problem."""
import json
import os
import shutil

import pytest

from sparkserve.models.loader import load_model
from tests.models.hf_fixtures import make_hf_model


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_hf_model(str(tmp_path_factory.mktemp("good")), "qwen3", tied=True, with_tokenizer=False)


def _copy(good, tmp_path):
    dst = str(tmp_path / "m")
    shutil.copytree(good, dst)
    return dst


def test_missing_directory():
    with pytest.raises(ValueError, match="not a directory"):
        load_model("/nonexistent/model")


def test_missing_weights(good, tmp_path):
    d = _copy(good, tmp_path)
    os.remove(os.path.join(d, "model.safetensors"))
    with open(os.path.join(d, "pytorch_model.bin"), "wb") as f:
        f.write(b"pickle")
    with pytest.raises(ValueError, match="pickle checkpoints are not loaded"):
        load_model(d)


def test_corrupt_weights(good, tmp_path):
    d = _copy(good, tmp_path)
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(b"\x00" * 64)
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_model(d)


def test_unknown_architecture(good, tmp_path):
    d = _copy(good, tmp_path)
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg["architectures"] = ["MambaForCausalLM"]
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    with pytest.raises(ValueError, match="unsupported architecture 'MambaForCausalLM'"):
        load_model(d)


def test_shape_mismatch(good, tmp_path):
    d = _copy(good, tmp_path)
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg["intermediate_size"] = 99
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    with pytest.raises(ValueError, match="has shape"):
        load_model(d)


def test_bad_json(good, tmp_path):
    d = _copy(good, tmp_path)
    open(os.path.join(d, "config.json"), "w").write("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(d)


def test_sharded_checkpoint(good, tmp_path):
    """A model.safetensors.index.json with two shards loads the same weights."""
    from safetensors.torch import load_file, save_file

    d = _copy(good, tmp_path)
    state = load_file(os.path.join(d, "model.safetensors"))
    os.remove(os.path.join(d, "model.safetensors"))
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    weight_map = {}
    for fname, ks in halves.items():
        save_file({k: state[k] for k in ks}, os.path.join(d, fname))
        weight_map.update({k: fname for k in ks})
    json.dump({"metadata": {}, "weight_map": weight_map}, open(os.path.join(d, "model.safetensors.index.json"), "w"))
    model, _ = load_model(d)
    ref, _ = load_model(good)
    for (k, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert (a == b).all(), k
