"""Anchor sampling, block construction and the training mask (DSPARK.md §1.6), and the check that
the training forwards compute what the serving proposers compute: a DSpark block's hidden states,
Markov logits and confidence logits, and every Eagle3 test-time-training step."""
import os

import pytest
import torch

from sparkserve.layers.rotary import RotaryEmbedding
from sparkserve.models.loader import load_model
from sparkserve.spec_decode.drafters.dspark import DSparkProposer
from sparkserve.spec_decode.drafters.eagle3 import Eagle3Proposer
from sparkserve.tools.init_drafter import init_drafter
from sparkserve.spec_decode.types import ProposeRequest
from sparkserve.step import SamplingMeta
from sparkserve.train.drafter.blocks import (
    anchor_candidates,
    build_blocks,
    loss_weights,
    pad_anchors,
    sample_anchors,
    training_mask,
)
from sparkserve.train.drafter.drafter_io import load_trainable
from sparkserve.train.drafter.features import TargetFeatures
from sparkserve.train.drafter.losses import LossWeights, block_hidden, ttt_mask, ttt_steps


def test_anchor_candidates_and_sampling():
    mask = torch.tensor([0, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1])
    assert anchor_candidates(mask).tolist() == [2, 3, 6, 9, 10]  # p and p+1 carry loss, p <= S-2
    for seed in range(5):
        got = sample_anchors(mask, 3, torch.Generator().manual_seed(seed))
        assert len(got) == 3 and got.tolist() == sorted(set(got.tolist()))
        assert set(got.tolist()) <= {2, 3, 6, 9, 10}
    again = sample_anchors(mask, 3, torch.Generator().manual_seed(4))
    assert again.tolist() == sample_anchors(mask, 3, torch.Generator().manual_seed(4)).tolist()
    assert sample_anchors(mask, 10, torch.Generator()).tolist() == [2, 3, 6, 9, 10]
    picks = torch.stack([torch.bincount(sample_anchors(mask, 1, torch.Generator().manual_seed(s)), minlength=12)
                         for s in range(500)]).sum(0)
    assert picks[[2, 3, 6, 9, 10]].min() > 60  # uniform over candidates (expected 100 each)
    anchors, keep = pad_anchors([torch.tensor([2, 6]), torch.tensor([3])])
    assert anchors.tolist() == [[2, 6], [3, 0]] and keep.tolist() == [[True, True], [True, False]]


def test_build_blocks_labels_and_validity():
    ids = torch.arange(100, 112)[None]  # x[p] = 100 + p, S = 12
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1]])
    anchors, keep = torch.tensor([[2, 4, 9, 0]]), torch.tensor([[True, True, True, False]])
    b = build_blocks(ids, mask, anchors, keep, block_size=3, mask_token_id=7)
    assert b.input_ids[0].tolist() == [[102, 7, 7], [104, 7, 7], [109, 7, 7], [100, 7, 7]]
    assert b.positions[0, 1].tolist() == [4, 5, 6]
    assert b.labels[0, 0].tolist() == [103, 104, 105] and b.prev_ids[0, 0].tolist() == [102, 103, 104]
    assert b.target_rows[0, 2].tolist() == [9, 10, 11]
    # block at 4: label 6 has no loss, so rows 1.. stop; block at 9: label 12 is past the end
    assert b.valid[0].tolist() == [[True, True, True], [True, False, False], [True, True, False], [False] * 3]
    w = loss_weights(b.valid, 4.0)
    assert torch.allclose(w[0, 0], torch.exp(-torch.arange(3.0) / 4))
    assert float(w[0, 3].sum()) == 0.0
    assert LossWeights.for_method("dflash") == LossWeights(1.0, 0.0, 0.0, 4.0)
    assert LossWeights.for_method("dspark") == LossWeights(0.1, 0.9, 1.0, 4.0)


def test_training_mask_context_before_anchor_and_own_block():
    seq_len, k = 10, 3
    anchors = torch.tensor([[3, 7, 0], [1, 2, 5]])
    mask = training_mask(anchors, seq_len, k)
    assert mask.shape == (2, 1, 9, seq_len + 9)
    for b in range(2):
        for j in range(3):
            for r in range(k):
                row = mask[b, 0, j * k + r]
                assert row[:seq_len].nonzero().squeeze(1).tolist() == list(range(int(anchors[b, j])))
                assert row[seq_len:].nonzero().squeeze(1).tolist() == list(range(j * k, j * k + k))


def test_ttt_mask():
    m = ttt_mask(4, 2)
    assert m.shape == (4, 12)
    assert torch.equal(m[:, :4], torch.ones(4, 4, dtype=torch.bool).tril())
    eye = torch.eye(4, dtype=torch.bool)
    assert torch.equal(m[:, 4:8], eye) and torch.equal(m[:, 8:], eye)


@pytest.fixture(scope="module")
def loaded(target):
    model, _ = load_model(target, "float32")
    return model


def _request(anchor: int, pos: int, n: int) -> ProposeRequest:
    return ProposeRequest("r", anchor, pos, [], list(range(8)), SamplingMeta(temperature=0.0), None, n)


def _observe(proposer, feats, ids, upto):
    pos = torch.arange(upto)
    proposer.observe(feats[:upto], ids[:upto], pos, pos.clone(), ids[1:upto + 1])


@torch.no_grad()
def test_dspark_training_forward_matches_proposer(root, target, loaded):
    path = init_drafter("dspark", target, os.path.join(root, "consistency-dspark"), num_speculative_tokens=4,
                        num_layers=2, markov_head_type="rnn", seed=3, init_std=0.2)
    model = load_trainable(path, "dspark", loaded).eval()
    k, gen = 4, torch.Generator().manual_seed(0)
    x = torch.randint(4, 300, (14,), generator=gen)
    feats_fn = TargetFeatures(loaded, model.config.target_layer_ids, need_logits=False)
    proposer = DSparkProposer(model, num_blocks=8, block_size=4)
    a_late, a_early = 11, 5
    _, feats = feats_fn.hidden_and_features(x[:a_late + 1][None])
    _observe(proposer, feats[0], x, a_late)
    conf_logits = []
    hook = model.confidence_head.register_forward_hook(lambda _m, _i, out: conf_logits.append(out.clone()))
    drafts = proposer.propose([_request(int(x[a_late]), a_late, k)])[0].token_ids
    hook.remove()
    want_late = proposer._block_hidden([_request(int(x[a_late]), a_late, k)])[0]
    want_early = proposer._block_hidden([_request(int(x[a_early]), a_early, k)])[0]
    seq = torch.cat([x[:a_late + 1], torch.tensor(drafts)])[None]  # the drafts become the labels
    mask = torch.zeros_like(seq)
    mask[:, a_early:] = 1
    blocks = build_blocks(seq, mask, torch.tensor([[a_early, a_late]]), torch.tensor([[True, True]]), k,
                          model.config.mask_token_id)
    _, feats_train = feats_fn.hidden_and_features(seq)
    m = model.config.model
    rotary = RotaryEmbedding(m.head_dim, 64, m.rope_theta, m.rope_scaling)
    hidden = block_hidden(model, rotary, feats_train, blocks)  # [1, 2, K, H]
    torch.testing.assert_close(hidden[0, 1], want_late, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(hidden[0, 0], want_early, atol=2e-5, rtol=1e-4)
    h = hidden[0, 1][None]
    prev = blocks.prev_ids[0, 1][None]
    z = model.markov_head.teacher_forced(model.lm_head(h).float(), h, prev)
    assert z[0].argmax(-1).tolist() == drafts
    conf = model.confidence_head(h, model.markov_head.prev_embeddings(prev))
    torch.testing.assert_close(conf[0], torch.stack(conf_logits, 1)[0], atol=2e-5, rtol=1e-4)


@torch.no_grad()
def test_eagle3_ttt_matches_chain_drafting(root, target, loaded):
    path = init_drafter("eagle3", target, os.path.join(root, "consistency-eagle3"), num_speculative_tokens=4,
                        seed=4, init_std=0.2)
    model = load_trainable(path, "eagle3", loaded).eval()
    steps, a, gen = 4, 9, torch.Generator().manual_seed(1)
    x = torch.randint(4, 300, (a + 1,), generator=gen)
    feats_fn = TargetFeatures(loaded, model.config.target_layer_ids, need_logits=False)
    _, feats = feats_fn.hidden_and_features(x[None])
    proposer = Eagle3Proposer(model, num_blocks=8, block_size=4)
    _observe(proposer, feats[0], x, a)
    chain_logits, logits_fn = [], model.logits
    model.logits = lambda out: chain_logits.append(logits_fn(out)) or chain_logits[-1]
    drafts = proposer.propose([_request(int(x[a]), a, steps)])[0].token_ids
    del model.logits
    seq = torch.cat([x, torch.tensor(drafts)])[None]
    _, feats_train = feats_fn.hidden_and_features(seq)
    m = model.config.model
    rotary = RotaryEmbedding(m.head_dim, 64, m.rope_theta, m.rope_scaling)
    for step, hidden in ttt_steps(model, rotary, feats_train, seq, steps):
        torch.testing.assert_close(model.logits(hidden[0, a - 1]), chain_logits[step][0], atol=1e-4, rtol=1e-4)
