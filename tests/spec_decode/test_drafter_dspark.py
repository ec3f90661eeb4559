"""DSpark / DFlash: batched paged observe + propose == a dense per-request reference (DeepSpec math)."""
import pytest
import torch
from torch.nn.functional import linear

from sparkserve.sample import draw_index
from sparkserve.spec_decode.checkpoint import load_drafter
from tests.spec_decode.drafter_fixtures import (
    BLOCK,
    NUM_BLOCKS,
    PagedTables,
    attention,
    drafter_dir,
    loaded_target,
    mlp,
    perturb_norms,
    propose_request,
    rms,
    rope,
    single_thread,  # noqa: F401  (fixture)
)

pytestmark = pytest.mark.usefixtures("single_thread")

GAMMA = 5


def reference_block(sd: dict, dcfg, feats: torch.Tensor, anchor: int, embed: torch.Tensor, head: torch.Tensor,
                    temperature: float, seed, num: int):
    """One request, dense: context = all its features (positions 0..s-1), block at s..s+B-1."""
    m = dcfg.model
    s, B, eps, theta = feats.shape[0], dcfg.block_size, m.rms_norm_eps, m.rope_theta
    hq, hkv, d = m.num_attention_heads, m.num_key_value_heads, m.head_dim
    ctx = rms(linear(feats, sd["fc.weight"]), sd["hidden_norm.weight"], eps)  # [s, H]
    x = embed[torch.tensor([anchor] + [dcfg.mask_token_id] * (B - 1))] * dcfg.input_embedding_scale
    pos_ctx, pos_blk = torch.arange(s), torch.arange(s, s + B)
    for i in range(m.num_hidden_layers):
        p = f"layers.{i}."
        a = p + "self_attn."

        def proj(inp, name, heads):
            return linear(inp, sd[a + name + "_proj.weight"]).view(inp.shape[0], heads, d)

        h = rms(x, sd[p + "input_layernorm.weight"], eps)
        q = rope(rms(proj(h, "q", hq), sd[a + "q_norm.weight"], eps), pos_blk, theta)
        k = torch.cat([rope(rms(proj(ctx, "k", hkv), sd[a + "k_norm.weight"], eps), pos_ctx, theta),
                       rope(rms(proj(h, "k", hkv), sd[a + "k_norm.weight"], eps), pos_blk, theta)])
        v = torch.cat([proj(ctx, "v", hkv), proj(h, "v", hkv)])
        visible = torch.ones(B, s + B, dtype=torch.bool)  # DeepSpec: no mask at all
        causal, window = dcfg.layer_attention(i)
        if causal:
            visible[:, s:] = torch.ones(B, B).tril().bool()
        if window is not None:  # z-lab sliding layers
            diff = pos_blk[:, None] - torch.cat([pos_ctx, pos_blk])[None, :]
            visible &= (diff < window) & ((diff > -window) | torch.tensor(causal))
        x = x + linear(attention(q, k, v, visible), sd[a + "o_proj.weight"])
        x = x + mlp(sd, p + "mlp.", rms(x, sd[p + "post_attention_layernorm.weight"], eps))
    hn = rms(x, sd["norm.weight"], eps)
    rows = hn[1:] if dcfg.kind == "zlab-dflash" else hn
    base = linear(rows, head)  # [rows, V]
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    r = dcfg.markov_rank
    prev, state = anchor, torch.zeros(r)
    tokens, probs, confs = [], [], []
    for kk in range(num):
        hk, z = rows[kk], base[kk]
        if r:
            e = sd["markov_head.markov_w1.weight"][prev]
            if dcfg.markov_head_type == "gated":
                u = e * torch.sigmoid(linear(torch.cat([hk, e]), sd["markov_head.gate_proj.weight"],
                                             sd["markov_head.gate_proj.bias"]))
            elif dcfg.markov_head_type == "rnn":
                y = linear(torch.cat([state, e, hk]), sd["markov_head.joint_proj.weight"],
                           sd["markov_head.joint_proj.bias"])
                g, c, o = torch.sigmoid(y[:r]), y[r:2 * r], y[2 * r:]
                state = g * state + (1 - g) * torch.tanh(c)
                u = torch.tanh(o)
            else:
                u = e
            z = z + linear(u, sd["markov_head.markov_w2.weight"])
        if dcfg.enable_confidence_head:
            feat = torch.cat([hk, sd["markov_head.markov_w1.weight"][prev]]) if dcfg.confidence_head_with_markov else hk
            confs.append(torch.sigmoid(linear(feat, sd["confidence_head.proj.weight"],
                                              sd["confidence_head.proj.bias"]))[0].item())
        if temperature == 0:
            tok = int(z.argmax())
        else:
            q = torch.softmax(z / temperature, -1)
            probs.append(q)
            tok = int(draw_index(q, gen))
        tokens.append(tok)
        prev = tok
    return tokens, (torch.stack(probs) if probs else None), (confs or None)


# (rid, context length s, temperature, seed, max_draft_tokens, chunk split)
REQUESTS = [("a", 9, 0.0, None, GAMMA, None), ("b", 3, 1.0, 11, GAMMA, None), ("c", 14, 0.7, 12, 3, 6),
            ("d", 1, 0.0, None, 2, None), ("e", 6, 1.3, 13, GAMMA, 2)]


def run_paged(proposer, reqs=REQUESTS, seed=0):
    """Observe every request's context in one or two flat batches (interleaved, like the runner),
    with stale rows past the anchor, then propose all blocks at once. Returns (blocks, refs input)."""
    width = len(proposer.target_layer_ids) * proposer.config.model.hidden_size
    tables = PagedTables(NUM_BLOCKS, BLOCK, seed + len(reqs))
    data = {}
    rounds = [[], []]
    for rid, s, _, _, _, split in reqs:
        gen = torch.Generator().manual_seed(1000 * seed + ord(rid))  # per request: batch-independent data
        data[rid] = (torch.randn(s, width, generator=gen), torch.randint(0, 300, (s + 1,), generator=gen).tolist())
        feats = data[rid][0]
        cut = split or s
        rounds[0].append((rid, range(0, cut), feats[:cut]))
        stale = torch.randn(3, width, generator=gen) * 5  # rows past the anchor (rejected drafts)
        rounds[1].append((rid, range(cut, s + 3), torch.cat([feats[cut:], stale])))
    for batch in rounds:
        feats, pos, slots = [], [], []
        for rid, positions, f in batch:
            if len(positions) == 0:
                continue
            feats.append(f)
            pos.extend(positions)
            slots.extend(tables.slots(rid, positions))
        n = len(pos)
        proposer.observe(torch.cat(feats), torch.zeros(n, dtype=torch.long), torch.tensor(pos),
                         torch.tensor(slots), torch.full((n,), -1))
    requests = [propose_request(rid, data[rid][1], tables, t, seed_, mx) for rid, s, t, seed_, mx, _ in reqs]
    return proposer.propose(requests), data


def check_against_reference(proposer, embed, head, reqs=REQUESTS):
    blocks, data = run_paged(proposer, reqs)
    sd = {k: v.float() for k, v in proposer.model.state_dict().items()}
    dcfg = proposer.config
    for block, (rid, s, temp, seed, mx, _) in zip(blocks, reqs):
        feats, tokens = data[rid]
        num = min(mx, proposer.num_speculative_tokens)
        ref_tokens, ref_probs, ref_conf = reference_block(sd, dcfg, feats, tokens[-1], embed, head, temp, seed, num)
        assert block.token_ids == ref_tokens, rid
        if temp == 0:
            assert block.probs is None
        else:
            assert block.probs.shape == ref_probs.shape
            torch.testing.assert_close(block.probs, ref_probs, atol=2e-5, rtol=1e-4)
        if dcfg.enable_confidence_head:
            assert block.confidences == pytest.approx(ref_conf, abs=1e-5)
        else:
            assert block.confidences is None
    return blocks


def load(method, head="vanilla"):
    model, cfg = loaded_target()
    proposer = load_drafter(drafter_dir(method, head, GAMMA), cfg, model, method, NUM_BLOCKS, BLOCK, "cpu",
                            torch.float32)
    perturb_norms(proposer.model)
    return proposer


@pytest.mark.parametrize("head", ["vanilla", "gated", "rnn"])
def test_dspark_paged_matches_dense_reference(head):
    proposer = load("dspark", head)
    assert proposer.num_speculative_tokens == GAMMA and proposer.config.markov_head_type == head
    sd = proposer.model.state_dict()
    blocks = check_against_reference(proposer, sd["embed_tokens.weight"], sd["lm_head.weight"])
    assert len({tuple(b.token_ids) for b in blocks}) > 2  # drafts are not all the same string
    assert [len(b.token_ids) for b in blocks] == [GAMMA, GAMMA, 3, 2, GAMMA]


def test_deepspec_dflash_matches_reference():
    proposer = load("dflash")
    assert proposer.model.markov_head is None and proposer.model.confidence_head is None
    sd = proposer.model.state_dict()
    check_against_reference(proposer, sd["embed_tokens.weight"], sd["lm_head.weight"])


def test_zlab_dflash_uses_target_vocab_and_mask_rows():
    proposer = load("zlab-dflash")
    target, _ = loaded_target()
    assert proposer.num_speculative_tokens == GAMMA and proposer.config.block_size == GAMMA + 1
    assert proposer.embed_tokens is target.model.embed_tokens and proposer.lm_head is target.lm_head
    check_against_reference(proposer, target.model.embed_tokens.weight, target.lm_head.weight)


def test_zlab_dflash_causal_layers():
    proposer = load("zlab-dflash")
    proposer.config.is_causal = True
    target, _ = loaded_target()
    check_against_reference(proposer, target.model.embed_tokens.weight, target.lm_head.weight)


@pytest.mark.parametrize("is_causal", [None, False])
def test_zlab_dflash_sliding_layers(is_causal):
    proposer = load("zlab-dflash")
    dcfg = proposer.config
    dcfg.layer_types = ("sliding_attention", "full_attention") * 3
    dcfg.sliding_window, dcfg.is_causal = 4, is_causal  # None: sliding layers are causal (z-lab)
    assert dcfg.layer_attention(0) == (is_causal is None, 4) and dcfg.layer_attention(1) == (False, None)
    target, _ = loaded_target()
    check_against_reference(proposer, target.model.embed_tokens.weight, target.lm_head.weight)


def test_propose_is_stateless_and_batch_independent():
    proposer = load("dspark", "rnn")
    first, _ = run_paged(proposer)
    again, _ = run_paged(proposer)  # same caches rewritten, same seeds
    alone, _ = run_paged(proposer, [REQUESTS[2]])
    assert [b.token_ids for b in first] == [b.token_ids for b in again]
    assert alone[0].token_ids == first[2].token_ids
    torch.testing.assert_close(alone[0].probs, first[2].probs)


def test_zero_max_draft_tokens_gives_empty_blocks():
    proposer = load("dspark")
    reqs = [("a", 4, 1.0, 3, 0, None), ("b", 5, 0.0, None, 0, None)]
    blocks, _ = run_paged(proposer, reqs)
    assert [b.token_ids for b in blocks] == [[], []]


def test_target_features_feed_the_drafter():
    """The target's captured features (decoder.forward capture_layer_ids) are the outputs of the
    target layers ``target_layer_ids`` (transformers' hidden_states[l + 1]) concatenated, and drafts
    proposed from them equal the dense reference's."""
    import transformers

    from tests.spec_decode.drafter_fixtures import tiny_target

    model, cfg = loaded_target()
    proposer = load("dspark")
    ids = torch.randint(0, 300, (1, 12), generator=torch.Generator().manual_seed(0))
    _, feats = model.forward_train(ids, capture_layer_ids=proposer.target_layer_ids)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_target(), dtype=torch.float32)
    with torch.no_grad():
        states = hf(ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(feats, torch.cat([states[i + 1] for i in proposer.target_layer_ids], -1))
    tables = PagedTables()
    slots = torch.tensor(tables.slots("x", range(12)))
    proposer.observe(feats[0], ids[0], torch.arange(12), slots, torch.full((12,), -1))
    req = propose_request("x", ids[0].tolist() + [5], tables, 0.0, None, GAMMA)
    req.anchor_position = 12
    sd = {k: v.float() for k, v in proposer.model.state_dict().items()}
    want, _, _ = reference_block(sd, proposer.config, feats[0], 5, sd["embed_tokens.weight"], sd["lm_head.weight"],
                                 0.0, None, GAMMA)
    assert proposer.propose([req])[0].token_ids == want
