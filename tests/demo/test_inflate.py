"""`sparkserve demo inflate`: the widened copy computes the original's function (target logits and
features, every drafter's proposals), and the W=4 demo world has the advertised shapes."""
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import save_file

from sparkserve.assets import DEMO_MODEL_DIR
from sparkserve.demo.inflate import drafter_dirs, inflate, inflate_config, inflate_tensor, tile
from sparkserve.models.hf_config import DecoderConfig
from sparkserve.models.loader import load_model, read_state_dict
from sparkserve.models.registry import model_class
from sparkserve.spec_decode.checkpoint import FROZEN_VOCAB, check_against_target, load_drafter
from sparkserve.spec_decode.drafters.config import DraftConfig
from sparkserve.spec_decode.drafters.dspark import DSparkDraftModel
from sparkserve.spec_decode.drafters.eagle3 import Eagle3DraftModel
from sparkserve.tools.init_drafter import init_drafter
from sparkserve.tools.slim_drafter import write_slim_drafter
from tests.spec_decode.drafter_fixtures import (
    BLOCK,
    NUM_BLOCKS,
    PagedTables,
    _workdir,
    propose_request,
    single_thread,  # noqa: F401  (fixture)
    tiny_target,
)

pytestmark = pytest.mark.usefixtures("single_thread")
W = 2
H = 64  # the tiny target's hidden size
# name -> (method, Markov head); the DSpark drafter is written slim like the shipped ones
DRAFTERS = {"dspark": ("dspark", "vanilla"), "dspark-gated": ("dspark", "gated"), "dspark-rnn": ("dspark", "rnn"),
            "dflash": ("dflash", "vanilla"), "eagle3": ("eagle3", "vanilla"), "zlab": ("zlab-dflash", "vanilla")}


def _perturb_vectors(path: str, seed: int) -> None:
    """Non-trivial norm weights and biases (init writes ones/zeros, which any tiling preserves)."""
    gen = torch.Generator().manual_seed(seed)
    state = read_state_dict(path)
    state = {k: (v.float() + 0.3 * torch.randn(v.shape, generator=gen) if v.dim() == 1 else v.float()).contiguous()
             for k, v in state.items()}
    save_file(state, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def world():
    """(source dir, inflated dir): the tiny tied target with six drafters, widened W times."""
    src, out = os.path.join(_workdir(), "inflate-src"), os.path.join(_workdir(), "inflate-out")
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(tiny_target(), src)
    _perturb_vectors(src, 0)
    for i, (name, (method, head)) in enumerate(DRAFTERS.items()):
        path = os.path.join(src, "drafters", name)
        init_drafter(method, src, path, num_speculative_tokens=5, markov_head_type=head, seed=i, init_std=0.2)
        _perturb_vectors(path, i + 1)
    full = os.path.join(src, "drafters", "dspark")
    write_slim_drafter(full, full + "-slim")
    shutil.rmtree(full)
    os.rename(full + "-slim", full)
    inflate(src, out, W)
    return src, out


def test_tile_segments():
    t = torch.tensor([[1.0, 2.0, 3.0]])
    assert tile(t, 1, [(2, True), (1, False)], 2, divide=True).tolist() == [[0.5, 1.0, 0.5, 1.0, 3.0]]
    assert tile(t, 1, [(1, False), (2, True)], 3, divide=False).tolist() == [[1.0, 2.0, 3.0, 2.0, 3.0, 2.0, 3.0]]
    # a biased projection (Llama mlp_bias / attention_bias): tile(x) in, tile(A x + b) out
    gen = torch.Generator().manual_seed(0)
    a, b, x = torch.randn(4, 6, generator=gen), torch.randn(4, generator=gen), torch.randn(6, generator=gen)
    wide_a = inflate_tensor("model.layers.0.mlp.down_proj.weight", a, 4, 3)
    wide_b = inflate_tensor("model.layers.0.mlp.down_proj.bias", b, 4, 3)
    torch.testing.assert_close(wide_a @ x.repeat(3) + wide_b, (a @ x + b).repeat(3))
    with pytest.raises(ValueError, match="unknown tensor"):
        inflate_tensor("model.layers.0.mystery.weight", torch.zeros(2, 2), 2, 2)


def test_target_logits_and_features_match(world):
    src, out = world
    (small, cfg), (wide, wide_cfg) = load_model(src, "float32"), load_model(out, "float32")
    assert wide_cfg.hidden_size == W * cfg.hidden_size and not wide_cfg.tie_word_embeddings
    assert (wide_cfg.num_attention_heads, wide_cfg.num_key_value_heads) == (W * 4, W * 2)
    assert wide_cfg.head_dim == cfg.head_dim and wide_cfg.intermediate_size == W * cfg.intermediate_size
    ids = torch.randint(0, cfg.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    layers = (-1, 1, 2)
    with torch.no_grad():
        logits, feats = small.forward_train(ids, layers)
        wide_logits, wide_feats = wide.forward_train(ids, layers)
    assert logits.std() > 0.5  # far from a constant function
    torch.testing.assert_close(wide_logits, logits, atol=2e-4, rtol=1e-4)
    # the residual stream is tiled: feature block j of the wide model = W copies of block j
    wide_feats = wide_feats.unflatten(-1, (len(layers), W, H))
    torch.testing.assert_close(wide_feats, feats.unflatten(-1, (len(layers), 1, H)).expand_as(wide_feats),
                               atol=1e-4, rtol=1e-4)
    copied = {n for n in os.listdir(src) if os.path.isfile(os.path.join(src, n))}  # generation_config.json, ...
    assert "generation_config.json" in copied and copied <= set(os.listdir(out))


def _propose(target_dir: str, drafter: str):
    """Observe three requests' target features (the target's own forward), then propose: two greedy,
    one sampled with a seed."""
    model, cfg = load_model(target_dir, "float32")
    proposer = load_drafter(drafter, cfg, model, None, NUM_BLOCKS, BLOCK, "cpu", torch.float32)
    gen = torch.Generator().manual_seed(3)
    tables = PagedTables(NUM_BLOCKS, BLOCK, seed=0)
    requests = []
    for rid, length, temperature, seed in (("a", 9, 0.0, None), ("b", 14, 0.0, None), ("c", 6, 1.0, 5)):
        tokens = torch.randint(0, cfg.vocab_size, (length + 1,), generator=gen).tolist()  # tokens[-1] = anchor
        with torch.no_grad():
            _, feats = model.forward_train(torch.tensor([tokens[:-1]]), proposer.target_layer_ids)
        slots = tables.slots(rid, range(length))
        proposer.observe(feats[0], torch.tensor(tokens[:-1]), torch.arange(length), torch.tensor(slots),
                         torch.tensor(tokens[1:]))
        requests.append(propose_request(rid, tokens, tables, temperature, seed, 5))
    return proposer.propose(requests)


@pytest.mark.parametrize("name", list(DRAFTERS))
def test_drafter_proposals_match(world, name):
    src, out = world
    small = _propose(src, os.path.join(src, "drafters", name))
    wide = _propose(out, os.path.join(out, "drafters", name))
    assert [b.token_ids for b in wide] == [b.token_ids for b in small]
    assert all(len(b.token_ids) == 5 for b in small)
    torch.testing.assert_close(wide[2].probs, small[2].probs, atol=2e-5, rtol=1e-4)
    if small[0].confidences is not None:
        for a, b in zip(small, wide):
            torch.testing.assert_close(torch.tensor(b.confidences), torch.tensor(a.confidences), atol=1e-5, rtol=1e-4)


def _meta_state(path: str) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v.shape, device="meta") for k, v in read_state_dict(path).items()}


def _assert_shapes(wide: dict[str, torch.Tensor], module: torch.nn.Module, may_lack=()) -> None:
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert set(expected) - set(wide) <= set(may_lack) and set(wide) <= set(expected)
    assert {k: tuple(v.shape) for k, v in wide.items()} == {k: expected[k] for k in wide}


def test_demo_world_w4_shapes_and_configs():
    """W=4 of the shipped demo on the meta device (no 340 MB in CI): configs that parse and fit each
    other, every tensor shaped as the widened config implies, about 89M target parameters."""
    with open(os.path.join(DEMO_MODEL_DIR, "config.json")) as f:
        target = DecoderConfig.from_dict(inflate_config(json.load(f), 4, torch.float32))
    assert (target.hidden_size, target.intermediate_size, target.num_attention_heads, target.num_key_value_heads,
            target.head_dim, target.tie_word_embeddings) == (1024, 3072, 32, 8, 32, False)
    state = _meta_state(DEMO_MODEL_DIR)
    state["lm_head.weight"] = state["model.embed_tokens.weight"]  # tied in the demo, untied when widened
    wide = {k: inflate_tensor(k, v, 256, 4) for k, v in state.items()}
    with torch.device("meta"):
        _assert_shapes(wide, model_class(target)(target))
    assert 85e6 < sum(t.numel() for t in wide.values()) < 92e6
    for name, path in drafter_dirs(DEMO_MODEL_DIR).items():
        with open(os.path.join(path, "config.json")) as f:
            raw = inflate_config(json.load(f), 4, torch.float32)
        wide = {k: inflate_tensor(k, v, 256, 4) for k, v in _meta_state(path).items()}
        dcfg = DraftConfig.from_dict(raw, set(wide))
        check_against_target(dcfg, target, name)
        with torch.device("meta"):
            _assert_shapes(wide, (Eagle3DraftModel if dcfg.kind == "eagle3" else DSparkDraftModel)(dcfg), FROZEN_VOCAB)
        assert wide["fc.weight"].shape == (1024, 4 * 1024)
