"""Eagle3: batched paged observe + chain propose == a dense per-request reference (DeepSpec math)."""
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


def reference_chain(sd, dcfg, feats, tokens, temperature, seed, num):
    """Dense causal forward over context rows 0..s-1 (row p: fc(feat_p) with token p+1), keep the
    last row's output, then chain ``num`` drafts with a growing K/V list."""
    m = dcfg.model
    s, eps, theta = feats.shape[0], m.rms_norm_eps, m.rope_theta
    hq, hkv, d = m.num_attention_heads, m.num_key_value_heads, m.head_dim
    a = "layers.0.self_attn."

    def layer_in(tok_ids, h):
        emb = sd["embed_tokens.weight"][torch.as_tensor(tok_ids)]
        return torch.cat([rms(emb, sd["layers.0.input_layernorm.weight"], eps),
                          rms(h, sd["layers.0.hidden_norm.weight"], eps)], -1)

    def qkv(x, pos):
        def proj(name, heads):
            return linear(x, sd[a + name + "_proj.weight"]).view(x.shape[0], heads, d)
        q = rope(rms(proj("q", hq), sd[a + "q_norm.weight"], eps), pos, theta)
        k = rope(rms(proj("k", hkv), sd[a + "k_norm.weight"], eps), pos, theta)
        return q, k, proj("v", hkv)

    def finish(att, h):
        out = h + linear(att, sd[a + "o_proj.weight"])
        return out + mlp(sd, "layers.0.mlp.", rms(out, sd["layers.0.post_attention_layernorm.weight"], eps))

    h = linear(feats, sd["fc.weight"])  # [s, H]
    q, k, v = qkv(layer_in(tokens[1:s + 1], h), torch.arange(s))
    out = finish(attention(q, k, v, torch.ones(s, s).tril().bool()), h)
    hidden = out[-1:]
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    drafts, probs = [], []
    for j in range(num):
        if j > 0:
            qj, kj, vj = qkv(layer_in([drafts[-1]], hidden), torch.tensor([s - 1 + j]))
            k, v = torch.cat([k, kj]), torch.cat([v, vj])
            hidden = finish(attention(qj, k, v, torch.ones(1, k.shape[0], dtype=torch.bool)), hidden)
        z = linear(rms(hidden, sd["norm.weight"], eps), sd["lm_head.weight"])[0]
        if temperature == 0:
            tok = int(z.argmax())
        else:
            p = torch.softmax(z / temperature, -1)
            probs.append(p)
            tok = int(draw_index(p, gen))
        drafts.append(tok)
    return drafts, (torch.stack(probs) if probs else None)


# (rid, context length s, temperature, seed, max_draft_tokens, chunk split, last next token known)
REQUESTS = [("a", 9, 0.0, None, GAMMA, None, True), ("b", 2, 1.0, 5, GAMMA, None, False),
            ("c", 13, 0.8, 6, 3, 5, False), ("d", 1, 0.0, None, 2, None, True), ("e", 7, 1.0, 7, GAMMA, 3, True)]


def run_paged(proposer, reqs=REQUESTS):
    width = len(proposer.target_layer_ids) * proposer.config.model.hidden_size
    tables = PagedTables(NUM_BLOCKS, BLOCK, len(reqs))
    data, rounds = {}, [[], []]
    for rid, s, _, _, _, split, known in reqs:
        gen = torch.Generator().manual_seed(ord(rid))
        feats = torch.randn(s, width, generator=gen)
        tokens = torch.randint(0, 300, (s + 1,), generator=gen).tolist()  # tokens[s] = anchor
        data[rid] = (feats, tokens)
        nxt = tokens[1:] if known else tokens[1:s] + [-1]  # the anchor may not be known at observe time
        cut = split or s
        stale = torch.randn(2, width, generator=gen) * 5  # rejected verify rows past the anchor
        rounds[0].append((rid, range(0, cut), feats[:cut], nxt[:cut]))
        rounds[1].append((rid, range(cut, s + 2), torch.cat([feats[cut:], stale]), nxt[cut:] + [7, -1]))
    for batch in rounds:
        feats, pos, slots, nxt = [], [], [], []
        for rid, positions, f, n in batch:
            if len(positions):
                feats.append(f)
                pos.extend(positions)
                slots.extend(tables.slots(rid, positions))
                nxt.extend(n)
        proposer.observe(torch.cat(feats), torch.zeros(len(pos), dtype=torch.long), torch.tensor(pos),
                         torch.tensor(slots), torch.tensor(nxt))
    requests = [propose_request(rid, data[rid][1], tables, t, seed, mx) for rid, s, t, seed, mx, *_ in reqs]
    return proposer.propose(requests), data, tables


def load():
    model, cfg = loaded_target()
    proposer = load_drafter(drafter_dir("eagle3", gamma=GAMMA), cfg, model, "eagle3", NUM_BLOCKS, BLOCK, "cpu",
                            torch.float32)
    perturb_norms(proposer.model)
    return proposer


def test_eagle3_paged_matches_dense_reference():
    proposer = load()
    assert proposer.num_speculative_tokens == GAMMA
    blocks, data, _ = run_paged(proposer)
    sd = {k: v.float() for k, v in proposer.model.state_dict().items()}
    for block, (rid, s, temp, seed, mx, *_) in zip(blocks, REQUESTS):
        feats, tokens = data[rid]
        ref, ref_probs = reference_chain(sd, proposer.config, feats, tokens, temp, seed, min(mx, GAMMA))
        assert block.token_ids == ref, rid
        assert block.confidences is None
        if temp == 0:
            assert block.probs is None
        else:
            torch.testing.assert_close(block.probs, ref_probs, atol=2e-5, rtol=1e-4)
    assert len({tuple(b.token_ids) for b in blocks}) > 2


def test_eagle3_repeat_and_batch_independence():
    proposer = load()
    first, *_ = run_paged(proposer)
    again, *_ = run_paged(proposer)
    alone, *_ = run_paged(proposer, [REQUESTS[2]])
    assert [b.token_ids for b in first] == [b.token_ids for b in again]
    assert alone[0].token_ids == first[2].token_ids
    torch.testing.assert_close(alone[0].probs, first[2].probs)


def test_eagle3_second_round_reads_row_written_by_propose():
    """Round 2 after accepting drafts: context row s-1 (observed with an unknown next token) must have
    been completed by round 1's propose; verify rows s..s' are observed with the last next unknown."""
    proposer = load()
    reqs = REQUESTS[1:3]  # both observed their last context row with next token -1
    _, data, tables = run_paged(proposer, reqs)
    width = proposer.model.fc.in_features
    gen = torch.Generator().manual_seed(99)
    feats, pos, slots, nxt, requests, refs = [], [], [], [], [], []
    for rid, s, temp, seed, mx, *_ in reqs:
        old_feats, tokens = data[rid]
        accepted = torch.randint(0, 300, (2,), generator=gen).tolist()  # a=1 draft + the new anchor
        new_feats = torch.randn(2, width, generator=gen)  # verify rows at s, s+1
        tokens = tokens + accepted
        feats.append(new_feats)
        pos.extend([s, s + 1])
        slots.extend(tables.slots(rid, range(s, s + 2)))
        nxt.extend([accepted[0], -1])
        requests.append(propose_request(rid, tokens, tables, temp, seed, mx))
        refs.append((torch.cat([old_feats, new_feats]), tokens, temp, seed, min(mx, GAMMA)))
    proposer.observe(torch.cat(feats), torch.zeros(len(pos), dtype=torch.long), torch.tensor(pos),
                     torch.tensor(slots), torch.tensor(nxt))
    sd = {k: v.float() for k, v in proposer.model.state_dict().items()}
    for block, (f, toks, temp, seed, num) in zip(proposer.propose(requests), refs):
        ref, ref_probs = reference_chain(sd, proposer.config, f, toks, temp, seed, num)
        assert block.token_ids == ref
        torch.testing.assert_close(block.probs, ref_probs, atol=2e-5, rtol=1e-4)
