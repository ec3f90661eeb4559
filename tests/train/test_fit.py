"""``sparkserve train fit``: for each method a few steps lower the loss and the exported drafter serves
in the engine with greedy output equal to no speculation; an interrupted + resumed run ends with
exactly the weights of an uninterrupted one; the feature cache gives the online features."""
import os

import pytest
import torch

from sparkserve import LLM, SamplingParams
from sparkserve.cli import main
from sparkserve.models.loader import load_model
from sparkserve.train.drafter.dataset import TokenDataset
from sparkserve.train.drafter.features import FeatureCache, TargetFeatures
from sparkserve.train.drafter.trainer import FitConfig, fit
from tests.train.conftest import state_of

PROMPT_IDS = [[5, 17, 33, 80], [200, 201, 9], [40, 41, 42, 43, 44, 45], [7]]
TOKENS = 20


@pytest.fixture(scope="module")
def greedy_baseline(target):
    llm = LLM(target, max_model_len=128)
    outs = llm.generate([{"prompt_token_ids": p} for p in PROMPT_IDS],
                        SamplingParams(temperature=0, max_tokens=TOKENS, ignore_eos=True))
    return [o.outputs[0].token_ids for o in outs]


def quick_config(method: str, **kw) -> FitConfig:
    base = dict(method=method, steps=24, batch_size=9, lr=5e-3, warmup_ratio=0.1, block_size=4, num_layers=1, seed=1)
    return FitConfig(**{**base, **kw})


@pytest.mark.parametrize("method", ["dspark", "dflash", "eagle3"])
def test_fit_lowers_loss_and_serves_losslessly(method, root, target, data_dir, greedy_baseline):
    out = os.path.join(root, f"fit-{method}")
    result = fit(quick_config(method), target, data_dir, out, log_every=1, log=lambda *_: None)
    losses = [r["loss"] for r in result["history"]]
    assert len(losses) == 24
    # (Eagle3's soft CE has the target's entropy as its floor, so the drop is a few percent)
    assert losses[-1] < min(losses[:4]) and sum(losses[-4:]) < 0.98 * sum(losses[:4]), losses
    assert sorted(f for f in os.listdir(out) if not os.path.isdir(os.path.join(out, f))) == [
        "config.json", "model.safetensors", "train_log.jsonl"]
    llm = LLM(target, max_model_len=128, speculative_config={"method": method, "model": out})
    outs = llm.generate([{"prompt_token_ids": p} for p in PROMPT_IDS],
                        SamplingParams(temperature=0, max_tokens=TOKENS, ignore_eos=True))
    assert [o.outputs[0].token_ids for o in outs] == greedy_baseline
    assert sum(o.spec_decode.num_verified_draft_tokens for o in outs) > 0
    state = state_of(out)
    target_model, _ = load_model(target, "float32")
    emb = target_model.model.embed_tokens.weight.to(torch.bfloat16)
    assert torch.equal(state["embed_tokens.weight"], emb) and torch.equal(state["lm_head.weight"], emb)  # frozen


def test_resume_is_exact(root, target, data_dir):
    args = ["train", "fit", "--method", "dspark", "--target", target, "--data", data_dir, "--steps", "6",
            "--batch-size", "6", "--micro-batch-size", "4", "--block-size", "3", "--num-layers", "1",
            "--markov-head-type", "rnn", "--lr", "3e-3", "--ckpt-every-steps", "100", "--save-dtype", "float32",
            "--log-every", "2", "--threads", "1"]
    full, cut = os.path.join(root, "resume-full"), os.path.join(root, "resume-cut")
    assert main(args + ["--out", full]) == 0
    assert main(args + ["--out", cut, "--stop-after-steps", "2"]) == 0
    assert not os.path.exists(os.path.join(cut, "model.safetensors"))
    with pytest.raises(ValueError, match="--resume"):
        main(args + ["--out", cut])
    assert main(args + ["--out", cut, "--resume", "--stop-after-steps", "3"]) == 0  # a second interruption
    assert main(args + ["--out", cut, "--resume"]) == 0
    a, b = state_of(full), state_of(cut)
    assert a.keys() == b.keys() and "markov_head.joint_proj.weight" in a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ckpt = lambda d: state_of(os.path.join(d, "checkpoints", "step_00000006"))  # noqa: E731
    assert all(torch.equal(ckpt(full)[k], ckpt(cut)[k]) for k in ckpt(full))


def test_feature_cache_matches_online(root, target, data_dir):
    model, _ = load_model(target, "float32")
    ds = TokenDataset(data_dir)
    feats = TargetFeatures(model, (0, 2), need_logits=True)
    cache = FeatureCache(os.path.join(root, "fcache"), {"target": target, "n": len(ds)}, torch.float32)
    cache.build(ds, feats, batch_size=3, shard_samples=4, log=lambda *_: None)
    assert len(cache.location) == len(ds) and len({*cache.location.values()}) == 3
    ids = torch.zeros(2, 90, dtype=torch.long)
    for r, i in enumerate((1, 6)):
        ids[r, :len(ds[i][0])] = ds[i][0]
    f_online, l_online = feats(ids)
    feats.cache = cache
    f_cached, l_cached = feats(ids, [1, 6])
    for r, i in enumerate((1, 6)):
        n = len(ds[i][0])
        torch.testing.assert_close(f_cached[r, :n], f_online[r, :n], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(l_cached[r, :n], l_online[r, :n], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="built for"):
        FeatureCache(os.path.join(root, "fcache"), {"target": target, "n": len(ds) + 1}, torch.float32)
    logs = []
    fit(quick_config("dflash", steps=2), target, data_dir, os.path.join(root, "fit-cached"),
        feature_cache=os.path.join(root, "fcache-fit"), log=logs.append)
    assert any("MiB" in line for line in logs)
    assert os.path.exists(os.path.join(root, "fcache-fit", "manifest.json"))


def test_loss_weights_option_resumes_and_is_validated(root, target, data_dir):
    args = ["train", "fit", "--method", "dspark", "--target", target, "--data", data_dir, "--steps", "4",
            "--batch-size", "4", "--block-size", "3", "--num-layers", "1", "--loss-weights", "1", "0", "1",
            "--ckpt-every-steps", "100", "--threads", "1", "--out", os.path.join(root, "lw")]
    assert main(args + ["--stop-after-steps", "2"]) == 0
    assert main(args + ["--resume"]) == 0  # the tuple round-trips through the checkpoint's JSON
    assert os.path.exists(os.path.join(root, "lw", "model.safetensors"))
    with pytest.raises(ValueError, match="loss_weights"):
        quick_config("dflash", loss_weights=(1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="loss_weights"):
        quick_config("dspark", loss_weights=(0.0, 0.0, 0.0))
