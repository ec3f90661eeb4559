"""An interrupted and resumed training run ends with the same weights as an uninterrupted one."""

import os

import torch

from sparkserve.models.hf_config import DecoderConfig
from sparkserve.models.qwen3 import Qwen3ForCausalLM
from sparkserve.train.lm.checkpoint import latest_checkpoint
from sparkserve.train.lm.data import Document, PackedLoader
from sparkserve.train.lm.trainer import TrainConfig, train

CFG = TrainConfig(max_steps=8, lr=1e-2, warmup_steps=2, seed=0, num_threads=1, log_every=100)


def _model():
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64)
    return Qwen3ForCausalLM(cfg)


def _loader():
    g = torch.Generator().manual_seed(0)
    docs = []
    for _ in range(40):
        n = int(torch.randint(4, 20, (1,), generator=g))
        ids = torch.randint(4, 64, (n,), generator=g).tolist()
        docs.append(Document(ids, [0] * (n // 3) + [1] * (n - n // 3), "math"))
    return PackedLoader(docs, seq_len=31, batch_size=2, pad_id=0, seed=0)


def test_resume_gives_identical_weights(tmp_path):
    full = _model()
    train(full, _loader(), CFG, str(tmp_path / "full"), log=lambda _: None)

    part = _model()
    out = train(part, _loader(), CFG, str(tmp_path / "part"), log=lambda _: None, stop_after_steps=3)
    assert out["step"] == 3 and latest_checkpoint(str(tmp_path / "part")).endswith("step_00000003")
    resumed = _model()  # a fresh process would rebuild the model from scratch
    out = train(resumed, _loader(), CFG, str(tmp_path / "part"), log=lambda _: None)
    assert out["step"] == 8

    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert not torch.equal(full.state_dict()["model.norm.weight"], _model().state_dict()["model.norm.weight"])


def test_checkpoints_hold_no_pickle(tmp_path):
    train(_model(), _loader(), CFG, str(tmp_path), log=lambda _: None, stop_after_steps=2)
    files = sorted(os.listdir(latest_checkpoint(str(tmp_path))))
    assert files == ["model.safetensors", "optimizer.safetensors", "state.json"]
