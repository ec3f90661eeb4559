"""The model's building blocks against their written formulas: the dual-layout linear (both of its
paths), RMSNorm in fp32 and bf16, and neox RoPE (including that it preserves norms and that
attention scores depend only on relative positions)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparkserve.layers.linear import DUAL_LAYOUT_MAX_ROWS, DualLayoutLinear, use_dual_layout_everywhere
from sparkserve.layers.norm import RMSNorm
from sparkserve.layers.rotary import RotaryEmbedding, apply_rotary


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, DUAL_LAYOUT_MAX_ROWS, DUAL_LAYOUT_MAX_ROWS + 1, 9])
def test_dual_layout_linear_matches_nn_linear_on_both_paths(rows, bias):
    torch.manual_seed(0)
    ref = nn.Linear(24, 40, bias=bias)
    dual = DualLayoutLinear(ref)
    x = torch.randn(rows, 24)
    torch.testing.assert_close(dual(x), ref(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dual(x[None]), ref(x[None]), rtol=1e-5, atol=1e-5)  # 3-D input: [out, in] path


def test_use_dual_layout_everywhere_replaces_only_plain_linears():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), nn.ReLU()), nn.Embedding(3, 4))
    assert use_dual_layout_everywhere(model) == 2
    assert isinstance(model[0], DualLayoutLinear) and isinstance(model[1][0], DualLayoutLinear)
    assert isinstance(model[2], nn.Embedding)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_is_w_times_x_over_rms(dtype):
    torch.manual_seed(1)
    norm = RMSNorm(16, eps=1e-6)
    norm.weight.data = torch.randn(16)
    x = torch.randn(5, 16).to(dtype)
    x64 = x.double()
    want = norm.weight.double() * (x64 / torch.sqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-6)).to(dtype).double()
    got = norm(x)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_rope_rotates_each_frequency_pair_by_position_times_inv_freq():
    head_dim, theta = 8, 10000.0
    rope = RotaryEmbedding(head_dim, 64, theta)
    x = torch.randn(3, 2, head_dim, generator=torch.Generator().manual_seed(2))
    positions = torch.tensor([0, 5, 63])
    got = rope.rotate(x, positions)
    half = head_dim // 2
    for t, p in enumerate(positions.tolist()):
        for i in range(half):
            angle = p / theta ** (2 * i / head_dim)
            c, s = math.cos(angle), math.sin(angle)
            a, b = x[t, :, i], x[t, :, i + half]
            torch.testing.assert_close(got[t, :, i], a * c - b * s, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(got[t, :, i + half], b * c + a * s, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[0], x[0])  # position 0 is the identity


def test_rope_keeps_norms_and_scores_depend_on_relative_position():
    rope = RotaryEmbedding(16, 128, 1e6)
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(1, 1, 16, generator=g), torch.randn(1, 1, 16, generator=g)
    torch.testing.assert_close(rope.rotate(q, torch.tensor([77])).norm(), q.norm(), rtol=1e-5, atol=1e-5)
    scores = []
    for shift in (0, 10, 50):
        qr, kr = rope(torch.tensor([20 + shift]), q, k)[0], rope(torch.tensor([7 + shift]), q, k)[1]
        scores.append(float((qr * kr).sum()))
    assert max(scores) - min(scores) < 1e-4
    cos, sin = rope.cos[torch.tensor([9])].unsqueeze(-2), rope.sin[torch.tensor([9])].unsqueeze(-2)
    torch.testing.assert_close(apply_rotary(q, cos, sin), rope.rotate(q, torch.tensor([9])))
