"""Markov heads and the confidence head: each head against its written formula (heads.py docstring,
DSPARK.md §1.5 steps 5 and 7, paper eq. 5-6) computed here in fp64 with plain scalar/tensor math;
sequential (batched over requests) == teacher-forced."""
import math

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


# ----------------------------------------------------------------------------------------------
# exact checks against the written formulas (fp64 reference, one request and one position at a time)

def _sig(x: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(-x))


def reference_block(head, base, hidden, prev) -> tuple[torch.Tensor, list]:
    """z [K, V] and the RNN states s_0..s_{K-1} for one request (base [K, V], hidden [K, H], prev [K])."""
    p = {k: v.detach().double() for k, v in head.state_dict().items()}
    w1, w2 = p["markov_w1.weight"], p["markov_w2.weight"]  # [V, r], [V, r]
    rank = w1.shape[1]
    state = torch.zeros(rank, dtype=torch.float64)  # s_{-1} = 0
    zs, states = [], []
    for k in range(base.shape[0]):
        e, h = w1[int(prev[k])], hidden[k].double()
        if "gate_proj.weight" in p:  # gated: u = e * sigmoid(gate_proj([h; e]))
            u = e * _sig(p["gate_proj.weight"] @ torch.cat([h, e]) + p["gate_proj.bias"])
        elif "joint_proj.weight" in p:  # rnn: y = [s; e; h]; (g, c, o) = split(joint_proj(y))
            y = p["joint_proj.weight"] @ torch.cat([state, e, h]) + p["joint_proj.bias"]
            g, c, o = y[:rank], y[rank:2 * rank], y[2 * rank:]
            u = torch.tanh(o)  # the output reads s_{k-1} (through y), paper eq. 6
            state = _sig(g) * state + (1 - _sig(g)) * torch.tanh(c)
            states.append(state)
        else:  # vanilla: u = e
            u = e
        zs.append(base[k].double() + w2 @ u)
    return torch.stack(zs), states


@pytest.mark.parametrize("head_type", ["vanilla", "gated", "rnn"])
def test_heads_match_their_written_formula(head_type):
    rank = 5
    head = build_markov_head(head_type, V, H, rank)
    _randomise(head, seed=3)
    gen = torch.Generator().manual_seed(4)
    base, hidden = torch.randn(R, K, V, generator=gen), torch.randn(R, K, H, generator=gen)
    prev = torch.randint(0, V, (R, K), generator=gen)
    forced = head.teacher_forced(base, hidden, prev)
    state = head.init_state(R, "cpu", torch.float32)
    refs = [reference_block(head, base[r], hidden[r], prev[r]) for r in range(R)]
    for k in range(K):
        z, state = head.step(base[:, k], hidden[:, k], prev[:, k], state)
        want = torch.stack([refs[r][0][k] for r in range(R)]).float()
        torch.testing.assert_close(z, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(forced[:, k], want, rtol=1e-5, atol=1e-5)
        if head_type == "rnn":
            torch.testing.assert_close(state, torch.stack([refs[r][1][k] for r in range(R)]).float(),
                                       rtol=1e-5, atol=1e-6)


def test_gated_head_by_hand():
    """r = 1, H = 1, V = 2: e = W1[0] = 2, h = 1, gate = sigmoid(0.5 h + 0.25 e - 0.25) = sigmoid(0.75),
    z = b + W2 * e * gate (not e * (1 - gate): that would differ by a factor gate / (1 - gate))."""
    head = build_markov_head("gated", 2, 1, 1)
    with torch.no_grad():
        head.markov_w1.weight.copy_(torch.tensor([[2.0], [-1.0]]))
        head.markov_w2.weight.copy_(torch.tensor([[1.0], [-3.0]]))
        head.gate_proj.weight.copy_(torch.tensor([[0.5, 0.25]]))
        head.gate_proj.bias.copy_(torch.tensor([-0.25]))
    z, _ = head.step(torch.tensor([[0.1, 0.2]]), torch.tensor([[1.0]]), torch.tensor([0]))
    u = 2.0 / (1.0 + math.exp(-0.75))
    torch.testing.assert_close(z, torch.tensor([[0.1 + u, 0.2 - 3.0 * u]]))


def test_rnn_head_by_hand():
    """r = 1, H = 1: y = [s; e; h], joint_proj rows (gate, candidate, output); two steps from s = 0."""
    head = build_markov_head("rnn", 2, 1, 1)
    with torch.no_grad():
        head.markov_w1.weight.copy_(torch.tensor([[1.0], [-2.0]]))
        head.markov_w2.weight.copy_(torch.tensor([[1.0], [0.5]]))
        head.joint_proj.weight.copy_(torch.tensor([[0.3, 0.2, -0.4],    # gate
                                                   [0.7, -0.5, 0.1],    # candidate
                                                   [-0.6, 0.9, 0.2]]))  # output
        head.joint_proj.bias.copy_(torch.tensor([0.1, -0.2, 0.05]))
    sig = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
    s, want = 0.0, []
    for e, h in ((1.0, 0.5), (-2.0, -1.0)):  # prev ids 0 then 1
        g = sig(0.3 * s + 0.2 * e - 0.4 * h + 0.1)
        c = math.tanh(0.7 * s - 0.5 * e + 0.1 * h - 0.2)
        u = math.tanh(-0.6 * s + 0.9 * e + 0.2 * h + 0.05)
        s = g * s + (1 - g) * c
        want.append([u, 0.5 * u])
    z = head.teacher_forced(torch.zeros(1, 2, 2), torch.tensor([[[0.5], [-1.0]]]), torch.tensor([[0, 1]]))
    torch.testing.assert_close(z[0], torch.tensor(want))
