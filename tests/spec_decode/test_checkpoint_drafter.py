"""Drafter checkpoints: init_drafter writes the DeepSpec / z-lab layouts, load_drafter checks them
and refuses drafters that do not fit the target."""
import dataclasses
import json
import os
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sparkserve.spec_decode.checkpoint import load_drafter
from sparkserve.spec_decode.drafters import DSparkProposer, Eagle3Proposer, NgramProposer
from sparkserve.tools.init_drafter import build_target_layer_ids, init_drafter
from tests.spec_decode.drafter_fixtures import (
    BLOCK,
    NUM_BLOCKS,
    _workdir,
    drafter_dir,
    loaded_target,
    single_thread,  # noqa: F401  (fixture)
    tiny_target,
)

pytestmark = pytest.mark.usefixtures("single_thread")
H, V, L, HQ, HKV, D = 64, 320, 4, 4, 2, 16  # the tiny target
IDS = [1, 2]  # build_target_layer_ids(4)


def shapes(path):
    with safe_open(os.path.join(path, "model.safetensors"), "pt") as f:
        return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}


def config(path):
    with open(os.path.join(path, "config.json")) as f:
        return json.load(f)


def load(path, method=None, target_cfg=None, **kw):
    model, cfg = loaded_target()
    return load_drafter(path, target_cfg or cfg, model, method, NUM_BLOCKS, BLOCK, "cpu", torch.float32, **kw)


def copy_dir(src, name):
    dst = os.path.join(_workdir(), name)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return dst


def edit_config(path, **changes):
    cfg = config(path)
    cfg.update(changes)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)


def test_layer_id_rule():
    assert build_target_layer_ids(36) == [1, 9, 17, 25, 33]
    assert build_target_layer_ids(40) == [1, 10, 19, 28, 37]
    assert build_target_layer_ids(4) == IDS
    for n in range(2, 12):
        ids = build_target_layer_ids(n)
        assert len(set(ids)) == len(ids) == min(5, max(n - 2, 1)) and max(ids) <= n - 2


def test_dspark_layout_and_config():
    path = drafter_dir("dspark", "vanilla", 5)
    r = V // 8
    s = shapes(path)
    assert all(dtype == "BF16" for _, dtype in s.values())
    expect = {"embed_tokens.weight": (V, H), "lm_head.weight": (V, H), "fc.weight": (H, 2 * H),
              "hidden_norm.weight": (H,), "norm.weight": (H,), "markov_head.markov_w1.weight": (V, r),
              "markov_head.markov_w2.weight": (V, r), "confidence_head.proj.weight": (1, H + r),
              "confidence_head.proj.bias": (1,)}
    for i in range(5):
        p = f"layers.{i}."
        expect.update({p + "self_attn.q_proj.weight": (HQ * D, H), p + "self_attn.k_proj.weight": (HKV * D, H),
                       p + "self_attn.v_proj.weight": (HKV * D, H), p + "self_attn.o_proj.weight": (H, HQ * D),
                       p + "self_attn.q_norm.weight": (D,), p + "self_attn.k_norm.weight": (D,),
                       p + "mlp.gate_proj.weight": (2 * H, H), p + "mlp.up_proj.weight": (2 * H, H),
                       p + "mlp.down_proj.weight": (H, 2 * H), p + "input_layernorm.weight": (H,),
                       p + "post_attention_layernorm.weight": (H,)})
    assert {k: v[0] for k, v in s.items()} == expect
    cfg = config(path)
    assert cfg["architectures"] == ["Qwen3DSparkModel"] and cfg["block_size"] == 5 and cfg["num_hidden_layers"] == 5
    assert cfg["target_layer_ids"] == IDS and cfg["num_target_layers"] == L and cfg["mask_token_id"] == V - 1
    assert cfg["markov_rank"] == r and cfg["markov_head_type"] == "vanilla" and cfg["enable_confidence_head"]
    assert cfg["confidence_head_with_markov"] and cfg["tie_word_embeddings"] is False
    assert cfg["hidden_size"] == H and cfg["head_dim"] == D  # the target's dims
    # embed/lm_head are the target's (tied) embedding
    target, _ = loaded_target()
    sd = load_file(os.path.join(path, "model.safetensors"))
    torch.testing.assert_close(sd["lm_head.weight"].float(), target.lm_head.weight.bfloat16().float())
    torch.testing.assert_close(sd["embed_tokens.weight"], sd["lm_head.weight"])
    prop = load(path, "dspark")
    assert isinstance(prop, DSparkProposer) and prop.num_speculative_tokens == 5 and prop.target_layer_ids == (1, 2)
    assert [tuple(k.shape) for k, _ in prop.kv_caches] == [(NUM_BLOCKS, BLOCK, HKV, D)] * 5


@pytest.mark.parametrize("head,extra", [("gated", {"markov_head.gate_proj.weight": (V // 8, H + V // 8),
                                                   "markov_head.gate_proj.bias": (V // 8,)}),
                                        ("rnn", {"markov_head.joint_proj.weight": (3 * (V // 8), 2 * (V // 8) + H),
                                                 "markov_head.joint_proj.bias": (3 * (V // 8),)})])
def test_markov_variant_keys(head, extra):
    s = shapes(drafter_dir("dspark", head, 5))
    assert {k: s[k][0] for k in extra} == extra
    assert load(drafter_dir("dspark", head, 5)).model.markov_head.__class__.__name__.lower().startswith(head[:3])


def test_dflash_and_zlab_layouts():
    dflash = drafter_dir("dflash", "vanilla", 5)
    keys = set(shapes(dflash))
    assert not any(k.startswith(("markov_head", "confidence_head")) for k in keys)
    assert config(dflash)["markov_rank"] == 0 and not config(dflash)["enable_confidence_head"]
    assert load(dflash, "dflash").num_speculative_tokens == 5
    zlab = drafter_dir("zlab-dflash", "vanilla", 5)
    keys = set(shapes(zlab))
    assert "embed_tokens.weight" not in keys and "lm_head.weight" not in keys and "fc.weight" in keys
    cfg = config(zlab)
    assert cfg["architectures"] == ["DFlashDraftModel"]
    assert cfg["dflash_config"] == {"block_size": 6, "mask_token_id": V - 1, "target_layer_ids": IDS}
    prop = load(zlab, "dflash")
    assert prop.zlab and prop.num_speculative_tokens == 5
    # top-level fields and no dflash_config: still z-lab (no embed_tokens in the checkpoint)
    alt = copy_dir(zlab, "zlab-toplevel")
    cfg.pop("dflash_config")
    cfg.update(architectures=["SomeDraft"], block_size=6, mask_token_id=3, target_layer_ids=IDS)
    with open(os.path.join(alt, "config.json"), "w") as f:
        json.dump(cfg, f)
    assert load(alt).zlab


def test_eagle3_layout():
    path = drafter_dir("eagle3", gamma=5)
    s = {k: v[0] for k, v in shapes(path).items()}
    assert s["fc.weight"] == (H, 2 * H) and s["layers.0.self_attn.q_proj.weight"] == (HQ * D, 2 * H)
    assert s["layers.0.self_attn.k_proj.weight"] == (HKV * D, 2 * H) and s["layers.0.hidden_norm.weight"] == (H,)
    assert s["embed_tokens.weight"] == (V, H) and s["lm_head.weight"] == (V, H) and "d2t" not in s
    assert not any(k.startswith("layers.1.") for k in s)
    cfg = config(path)
    assert cfg["architectures"] == ["Qwen3Eagle3Model"] and cfg["ttt_length"] == 5 and cfg["num_hidden_layers"] == 1
    prop = load(path, "eagle3", num_speculative_tokens=3)
    assert isinstance(prop, Eagle3Proposer) and prop.num_speculative_tokens == 3
    assert prop.hidden_store.shape == (NUM_BLOCKS, BLOCK, H)


def test_ngram_needs_no_checkpoint():
    prop = load(None, "ngram", num_speculative_tokens=6)
    assert isinstance(prop, NgramProposer) and prop.num_speculative_tokens == 6


def test_wrong_target_refused():
    path = drafter_dir("dspark", "vanilla", 5)
    _, cfg = loaded_target()
    with pytest.raises(ValueError, match="hidden_size 64 != target hidden_size 128"):
        load(path, target_cfg=dataclasses.replace(cfg, hidden_size=128, head_dim=32))
    with pytest.raises(ValueError, match="vocab_size 320 != target vocab_size 1000"):
        load(path, target_cfg=dataclasses.replace(cfg, vocab_size=1000))
    with pytest.raises(ValueError, match="4-layer target, the target has 6 layers"):
        load(path, target_cfg=dataclasses.replace(cfg, num_hidden_layers=6))
    with pytest.raises(ValueError, match="method 'eagle3' was requested"):
        load(path, "eagle3")
    with pytest.raises(ValueError, match="must be within 1..5"):
        load(path, num_speculative_tokens=9)


def test_bad_layer_ids_and_mask_refused():
    src = drafter_dir("dflash", "vanilla", 5)
    path = copy_dir(src, "bad-ids")
    edit_config(path, target_layer_ids=[1, 3])
    with pytest.raises(ValueError, match="last layer 3 is not allowed"):
        load(path)
    edit_config(path, target_layer_ids=[1, 2], mask_token_id=V)
    with pytest.raises(ValueError, match="mask_token_id 320 is outside"):
        load(path)


def test_key_and_shape_mismatches_listed():
    src = drafter_dir("dflash", "vanilla", 5)
    path = copy_dir(src, "bad-keys")
    file = os.path.join(path, "model.safetensors")
    sd = load_file(file)
    del sd["layers.2.mlp.up_proj.weight"]
    sd["extra.weight"] = torch.zeros(2)
    save_file(sd, file)
    with pytest.raises(ValueError, match=r"missing keys \['layers.2.mlp.up_proj.weight'\], "
                                         r"unexpected keys \['extra.weight'\]"):
        load(path)
    sd = load_file(os.path.join(src, "model.safetensors"))
    sd["fc.weight"] = torch.zeros(H, 3 * H)
    save_file(sd, file)
    with pytest.raises(ValueError, match=r"fc.weight: checkpoint \(64, 192\), config implies \(64, 128\)"):
        load(path)


def test_unsupported_layouts_refused():
    src = drafter_dir("eagle3", gamma=5)
    path = copy_dir(src, "upstream-eagle")
    sd = {k.replace("layers.0.", "midlayer."): v for k, v in load_file(os.path.join(src, "model.safetensors")).items()}
    sd["d2t"] = torch.zeros(V, dtype=torch.long)
    save_file(sd, os.path.join(path, "model.safetensors"))
    edit_config(path, architectures=["LlamaForCausalLMEagle3"])
    with pytest.raises(ValueError, match="upstream EAGLE-3 .* not supported"):
        load(path)
    edit_config(path, architectures=["DFlash2DraftModel"])
    with pytest.raises(ValueError, match="not supported"):
        load(path)
    empty = os.path.join(_workdir(), "pickle-only")
    os.makedirs(empty, exist_ok=True)
    with open(os.path.join(empty, "pytorch_model.bin"), "wb") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="pickle checkpoints are not loaded"):
        load(empty)


def test_init_drafter_options():
    out = os.path.join(_workdir(), "opts")
    init_drafter("dspark", tiny_target(), out, num_speculative_tokens=3, markov_rank=8, num_layers=2,
                 target_layer_ids=[0, 2], mask_token_id=5)
    cfg = config(out)
    assert (cfg["block_size"], cfg["markov_rank"], cfg["num_hidden_layers"], cfg["target_layer_ids"],
            cfg["mask_token_id"]) == (3, 8, 2, [0, 2], 5)
    assert load(out).num_speculative_tokens == 3
    with pytest.raises(ValueError, match="not the last layer"):
        init_drafter("dspark", tiny_target(), out, target_layer_ids=[3])
    with pytest.raises(ValueError, match="unknown drafter method"):
        init_drafter("medusa", tiny_target(), out)


@pytest.mark.parametrize("method", ["dspark", "dflash", "eagle3"])
def test_slim_drafter_takes_the_frozen_vocab_from_the_target(method):
    from sparkserve.spec_decode.checkpoint import FROZEN_VOCAB
    from sparkserve.tools.slim_drafter import write_slim_drafter

    target, _ = loaded_target()
    full = copy_dir(drafter_dir(method), f"full-{method}")
    state = load_file(os.path.join(full, "model.safetensors"))
    state["embed_tokens.weight"] = target.model.embed_tokens.weight.detach().clone().to(state["fc.weight"].dtype)
    state["lm_head.weight"] = target.lm_head.weight.detach().clone().to(state["fc.weight"].dtype)
    save_file(state, os.path.join(full, "model.safetensors"))
    slim = os.path.join(_workdir(), f"slim-{method}")
    assert "model.safetensors" in write_slim_drafter(full, slim)
    assert not set(FROZEN_VOCAB) & set(shapes(slim))
    assert set(shapes(full)) - set(shapes(slim)) == set(FROZEN_VOCAB)
    a, b = load(full).model.state_dict(), load(slim).model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if k + ".weight" not in FROZEN_VOCAB
                                        and k not in FROZEN_VOCAB)
    assert torch.equal(b["embed_tokens.weight"], target.model.embed_tokens.weight)  # exact, not a bf16 copy
    assert torch.equal(b["lm_head.weight"], target.lm_head.weight)
    assert torch.allclose(a["lm_head.weight"], b["lm_head.weight"], rtol=1e-2, atol=1e-3)
    with pytest.raises(ValueError, match="load it with the target model"):
        load_drafter(slim, target.config, None, method, NUM_BLOCKS, BLOCK, "cpu", torch.float32)
