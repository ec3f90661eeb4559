"""Markov heads and the confidence head: sequential (batched over requests) == teacher-forced."""
import pytest
import torch

from sparkserve.spec_decode.heads import ConfidenceHead, build_markov_head

V, H, R, K = 50, 16, 3, 6


def _randomise(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


@pytest.mark.parametrize("head_type", ["vanilla", "gated", "rnn"])
def test_step_matches_teacher_forced(head_type):
    head = build_markov_head(head_type, V, H, 8)
    _randomise(head)
    gen = torch.Generator().manual_seed(1)
    base, hidden = torch.randn(R, K, V, generator=gen), torch.randn(R, K, H, generator=gen)
    prev = torch.randint(0, V, (R, K), generator=gen)
    forced = head.teacher_forced(base, hidden, prev)
    assert forced.shape == (R, K, V) and forced.dtype == torch.float32
    state = head.init_state(R, "cpu", torch.float32)
    for k in range(K):
        z, state = head.step(base[:, k], hidden[:, k], prev[:, k], state)
        torch.testing.assert_close(z, forced[:, k])
    # per request alone == in the batch
    z0 = head.teacher_forced(base[1:2], hidden[1:2], prev[1:2])
    torch.testing.assert_close(z0[0], forced[1])


def test_vanilla_bias_is_low_rank_bigram():
    head = build_markov_head("vanilla", V, H, 4)
    _randomise(head)
    prev = torch.tensor([3, 7])
    z, _ = head.step(torch.zeros(2, V), torch.zeros(2, H), prev)
    torch.testing.assert_close(z, head.markov_w1.weight[prev] @ head.markov_w2.weight.T)


def test_rnn_state_depends_on_history():
    head = build_markov_head("rnn", V, H, 8)
    _randomise(head)
    hidden, base = torch.randn(2, 2, H), torch.zeros(2, 2, V)
    hidden[1] = hidden[0]
    prev = torch.tensor([[1, 5], [2, 5]])  # same previous token at k=1, different history
    z = head.teacher_forced(base, hidden, prev)
    assert not torch.allclose(z[0, 1], z[1, 1])


def test_head_keys_and_errors():
    assert build_markov_head("vanilla", V, H, 0) is None
    with pytest.raises(ValueError, match="markov_head_type"):
        build_markov_head("lstm", V, H, 4)
    keys = {k: tuple(v.shape) for k, v in build_markov_head("rnn", V, H, 4).state_dict().items()}
    assert keys == {"markov_w1.weight": (V, 4), "markov_w2.weight": (V, 4), "joint_proj.weight": (12, 8 + H),
                    "joint_proj.bias": (12,)}
    gated = {k: tuple(v.shape) for k, v in build_markov_head("gated", V, H, 4).state_dict().items()}
    assert gated["gate_proj.weight"] == (4, H + 4) and gated["gate_proj.bias"] == (4,)


def test_confidence_head():
    conf = ConfidenceHead(H, 4)
    _randomise(conf)
    h, e = torch.randn(R, K, H), torch.randn(R, K, 4)
    logits = conf(h, e)
    assert logits.shape == (R, K)
    torch.testing.assert_close(logits[1, 2], (conf.proj.weight[0] @ torch.cat([h[1, 2], e[1, 2]])) + conf.proj.bias[0])
    with pytest.raises(ValueError):
        conf(h)
    plain = ConfidenceHead(H, 0)
    assert plain.proj.weight.shape == (1, H) and plain(h).shape == (R, K)
