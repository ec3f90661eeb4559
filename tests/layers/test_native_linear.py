"""The weight-streaming linear (csrc/linear.cpp) against torch's product on the same numbers, with fp32
and bf16 weight storage, at odd sizes (K not a multiple of the vector width, N not a multiple of the
weight-row group, 0 / 1 / many rows, with and without bias); that a row's result does not depend on the
rows beside it; and ``StreamLinear`` (layers/linear.py): bf16 storage only where exact, the prefill
path, other dtypes, and a whole fused model against the same model on plain nn.Linear."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sparkserve import native
from sparkserve.layers.linear import (STREAM_MAX_ROWS, StreamLinear, exactly_bf16, keep_gemm_copies,
                                      use_stream_linears, weight_storage)
from sparkserve.models.decoder import DecoderForCausalLM
from sparkserve.models.hf_config import DecoderConfig

ROWS = [0, 1, 3, 4, 5, 8, 13, 16, 17]
SHAPES_NK = [(1, 1), (7, 5), (33, 40), (130, 257), (64, 1024)]  # (out, in)


@pytest.fixture(scope="module", autouse=True)
def kernels():
    """A failed build fails these tests; only an explicit SPARKSERVE_NATIVE=0 (the suite's torch-only run) skips."""
    if not native.enabled_by_env():
        pytest.skip("SPARKSERVE_NATIVE=0: the kernels are forced off")
    native.require()


def reference(x, w, b):
    """fp64 product of the same numbers (the kernel's fp32 sums must land within fp32 rounding)."""
    y = x.double() @ w.double().t()
    return y if b is None else y + b.double()


@pytest.mark.parametrize("wdtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("n,k", SHAPES_NK)
@pytest.mark.parametrize("bias", [False, True])
def test_kernel_matches_the_product(wdtype, rows, n, k, bias):
    g = torch.Generator().manual_seed(rows * 1000 + n + k)
    x = torch.randn(rows, k, generator=g)
    w = torch.randn(n, k, generator=g).to(wdtype)
    b = torch.randn(n, generator=g) if bias else None
    y = torch.ops.sparkserve.linear_stream(x, w, b)
    assert y.dtype == torch.float32 and y.shape == (rows, n)
    want = reference(x, w, b)
    scale = x.double().abs() @ w.double().abs().t() + (0 if b is None else b.double().abs())
    assert torch.all((y.double() - want).abs() <= 1e-6 * scale + 1e-30)  # fp32 summation error bound


@pytest.mark.parametrize("wdtype", [torch.float32, torch.bfloat16])
def test_a_rows_result_does_not_depend_on_its_batch(wdtype):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(STREAM_MAX_ROWS, 300, generator=g)
    w = torch.randn(70, 300, generator=g).to(wdtype)
    full = torch.ops.sparkserve.linear_stream(x, w, None)
    for i in range(x.shape[0]):
        assert torch.equal(torch.ops.sparkserve.linear_stream(x[i:i + 1], w, None)[0], full[i])
    assert torch.equal(torch.ops.sparkserve.linear_stream(x[3:11], w, None), full[3:11])


def test_kernel_rejects_what_it_does_not_compute():
    with pytest.raises(RuntimeError, match="x must be float32"):
        torch.ops.sparkserve.linear_stream(torch.randn(2, 4).bfloat16(), torch.randn(3, 4), None)
    with pytest.raises(RuntimeError, match="expected"):
        torch.ops.sparkserve.linear_stream(torch.randn(2, 4), torch.randn(3, 5), None)
    x = torch.randn(8, 6)[:, ::2]  # non-contiguous input is copied, not misread
    w = torch.randn(5, 3)
    torch.testing.assert_close(torch.ops.sparkserve.linear_stream(x, w, None), x @ w.t())


def test_bf16_storage_only_where_exact():
    exact = nn.Linear(32, 16)
    exact.weight.data = exact.weight.data.bfloat16().float()
    inexact = nn.Linear(32, 16)
    assert exactly_bf16(exact.weight) and not exactly_bf16(inexact.weight)
    assert StreamLinear(exact, bf16_when_exact=True).weight.dtype == torch.bfloat16
    assert StreamLinear(inexact, bf16_when_exact=True).weight.dtype == torch.float32
    assert StreamLinear(exact).weight.dtype == torch.float32  # off unless asked


@pytest.mark.parametrize("rows", [1, STREAM_MAX_ROWS, STREAM_MAX_ROWS + 1, 64])
@pytest.mark.parametrize("bf16", [False, True])
def test_stream_linear_matches_nn_linear_on_every_path(rows, bf16):
    torch.manual_seed(rows)
    ref = nn.Linear(48, 40)
    ref.weight.data = ref.weight.data.bfloat16().float()  # exact in bf16, so both storages are the same numbers
    layer = StreamLinear(ref, bf16_when_exact=bf16)
    x = torch.randn(rows, 48)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), ref(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer(x.view(1, rows, 48)), ref(x.view(1, rows, 48)), rtol=1e-5, atol=1e-5)
        got = layer(x.bfloat16())  # another activation dtype: torch in that dtype
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), ref(x.bfloat16().float()), rtol=0.05, atol=0.05)
    torch.testing.assert_close(layer(x), ref(x), rtol=1e-5, atol=1e-5)  # autograd on: torch's path


def tiny_config() -> DecoderConfig:
    return DecoderConfig(vocab_size=300, hidden_size=96, intermediate_size=160, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=24, max_position_embeddings=128,
                         rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True)


def test_fused_model_on_stream_linears_matches_plain_linears():
    torch.manual_seed(0)
    model = DecoderForCausalLM(tiny_config())
    for p in model.parameters():
        p.data = p.data.bfloat16().float()  # a bf16 checkpoint loaded as fp32
    ids = torch.randint(0, 300, (1, 9))
    with torch.no_grad():
        want = model.forward_train(ids)
        model.fuse_for_inference(bf16_when_exact=True)
        assert weight_storage(model) == "bfloat16"
        hidden, _ = model.forward(ids[0], torch.arange(9), _dense(model, 9))
        got = model.compute_logits(hidden)
    torch.testing.assert_close(got, want[0], rtol=1e-4, atol=1e-4)


def _dense(model, seq_len):
    from sparkserve.attention.base import DenseCausalContext
    return DenseCausalContext(1, seq_len, model.scale)


def test_use_stream_linears_counts_and_keeps_other_modules():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), nn.ReLU()), nn.Embedding(3, 4))
    assert use_stream_linears(model) == 2
    assert isinstance(model[0], StreamLinear) and isinstance(model[1][0], StreamLinear)
    assert isinstance(model[2], nn.Embedding) and weight_storage(model) == "float32"


@pytest.mark.parametrize("bias", [False, True])
def test_widened_blocks_cover_every_weight_row(bias):
    """linear_widen (many rows, bf16 weights): 4096 inputs make 64-row blocks, so 130 outputs take three."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(40, 4096, generator=g)
    w = torch.randn(130, 4096, generator=g).bfloat16()
    b = torch.randn(130, generator=g) if bias else None
    y = torch.ops.sparkserve.linear_widen(x, w, b)
    want = reference(x, w, b)
    scale = x.double().abs() @ w.double().abs().t() + (0 if b is None else b.double().abs())
    assert y.shape == (40, 130) and torch.all((y.double() - want).abs() <= 1e-6 * scale + 1e-30)


@pytest.mark.parametrize("rows", [0, 1, 4, 5, 16])
@pytest.mark.parametrize("n,k", [(7, 5), (130, 257), (64, 1024)])
def test_bf16_rows_against_bf16_weights(rows, n, k):
    """A model run in bf16: bf16 x and w, fp32 sums (vdpbf16ps where the CPU has it), y rounded to bf16 once."""
    g = torch.Generator().manual_seed(rows + n)
    x = torch.randn(rows, k, generator=g).bfloat16()
    w = torch.randn(n, k, generator=g).bfloat16()
    b = torch.randn(n, generator=g)
    y = torch.ops.sparkserve.linear_stream(x, w, b)
    assert y.dtype == torch.bfloat16 and y.shape == (rows, n)
    want = reference(x, w, b)
    scale = x.double().abs() @ w.double().abs().t() + b.double().abs()
    assert torch.all((y.double() - want).abs() <= 2 ** -8 * want.abs() + 1e-6 * scale + 1e-30)  # one rounding
    full = torch.ops.sparkserve.linear_stream(x, w, None)
    for i in range(rows):  # batch-invariant here too
        assert torch.equal(torch.ops.sparkserve.linear_stream(x[i:i + 1], w, None)[0], full[i])
    with pytest.raises(RuntimeError, match="bfloat16 w"):
        torch.ops.sparkserve.linear_stream(x, w.float(), None)


@pytest.mark.parametrize("k,streamed", [(64, 1), (128, 4), (256, 16), (1024, 16)])
def test_linear_cpu_streams_as_many_rows_as_pay_for_the_width(k, streamed):
    """linear_cpu (the one rule StreamLinear, the captured stack and the Markov loop call): narrow inputs stream
    fewer rows, because each output's horizontal sum costs about as much as a short row's products."""
    g = torch.Generator().manual_seed(k)
    w = torch.randn(40, k, generator=g)
    for rows in (streamed, streamed + 1):
        x = torch.randn(rows, k, generator=g)
        got = torch.ops.sparkserve.linear_cpu(x, w, None)
        want = torch.ops.sparkserve.linear_stream(x, w, None) if rows <= streamed else nn.functional.linear(x, w)
        assert torch.equal(got, want)
    x3 = torch.randn(2, 1, k, generator=g)  # any leading shape
    assert torch.equal(torch.ops.sparkserve.linear_cpu(x3, w, None), torch.ops.sparkserve.linear_cpu(x3.view(2, k), w, None).view(2, 1, 40))


def test_gemm_copies_serve_many_rows_and_respect_the_budget():
    ref = nn.Linear(300, 50)
    ref.weight.data = ref.weight.data.bfloat16().float()
    model = nn.Sequential(StreamLinear(ref, bf16_when_exact=True))
    assert keep_gemm_copies(model, budget_bytes=100) == 0 and model[0].weight_gemm is None  # too big: bf16 only
    assert keep_gemm_copies(model) == 300 * 50 * 4
    assert model[0].weight_gemm.dtype == torch.float32 and torch.equal(model[0].weight_gemm, ref.weight)
    x = torch.randn(40, 300)
    with torch.no_grad():
        assert torch.equal(model(x), nn.functional.linear(x, ref.weight, ref.bias))  # torch's GEMM on the copy
        assert torch.equal(model(x[:1]), torch.ops.sparkserve.linear_stream(x[:1], model[0].weight, ref.bias))
