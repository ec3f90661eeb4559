"""Inference linear layers for CPUs.

``StreamLinear`` (when the native kernels are built): decode, verify and draft products (up to
``STREAM_MAX_ROWS`` rows) run on ``csrc/linear.cpp``, which reads every weight row once per call
whatever the row count and computes each output row with the same fp32 dot product for any batch.
Weights may be stored in bf16 (widened to fp32 in registers: half the bytes to stream, the same fp32
math); that is done only where it is exact (``exactly_bf16``: a bf16 checkpoint loaded as fp32), so
it changes no number. More rows (prefill) go to torch's GEMM, which wins there.

``DualLayoutLinear`` (no native kernels): small CPU models keep an [in, out] copy of each projection;
1-2-row decode products read it about 2x faster than the [out, in] layout on AVX2 machines (numbers
in ``bench/RESULTS.md``), while [out, in] is faster for 8+ rows.
"""
from __future__ import annotations

import torch
from torch import nn

from sparkserve import native

DUAL_LAYOUT_MAX_ROWS = 2  # up to this many rows use the [in, out] copy
STREAM_MAX_ROWS = 16  # rows the streaming kernel takes for inputs >= 256 wide (csrc/linear.cpp: stream_max_rows)


class DualLayoutLinear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach(), requires_grad=False)  # [out, in]
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)
        self.register_buffer("weight_t", self.weight.detach().t().contiguous(), persistent=False)  # [in, out]
        self.out_features, self.in_features = self.weight.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and x.shape[0] <= DUAL_LAYOUT_MAX_ROWS:
            out = x @ self.weight_t
            return out if self.bias is None else out + self.bias
        return nn.functional.linear(x, self.weight, self.bias)


def exactly_bf16(weight: torch.Tensor) -> bool:
    """True when every value of ``weight`` is a bf16 number (so bf16 storage loses nothing)."""
    return weight.dtype == torch.bfloat16 or torch.equal(weight, weight.to(torch.bfloat16).to(weight.dtype))


class StreamLinear(nn.Module):
    """y = x @ weight.T + bias for inference on the CPU; weight [out, in] stored fp32 or bf16, sums in fp32.

    Without autograd the native ``linear_cpu`` op decides (one rule, also used by the captured stack and
    the Markov loop): up to ``STREAM_MAX_ROWS`` rows (fewer for inputs narrower than 256) of fp32 inputs,
    or of bf16 inputs against bf16 weights, stream; more fp32 rows against bf16 weights go to
    ``linear_widen``; anything else to torch. With autograd, torch."""

    def __init__(self, linear: nn.Module, bf16_when_exact: bool = False):
        super().__init__()
        weight = linear.weight.detach()
        self.compute_dtype = weight.dtype  # what its inputs should be in (bf16 storage still computes in fp32)
        if bf16_when_exact and weight.dtype == torch.float32 and exactly_bf16(weight):
            weight = weight.to(torch.bfloat16)
        self.weight = nn.Parameter(weight.contiguous(), requires_grad=False)  # [out, in]
        bias = getattr(linear, "bias", None)
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        self.weight_gemm: torch.Tensor | None = None  # fp32 copy of bf16 weights for many-row products (keep_gemm_copies)
        self.out_features, self.in_features = self.weight.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cpu and not torch.is_grad_enabled():  # csrc/linear.cpp: linear_cpu picks the kernel
            return torch.ops.sparkserve.linear_cpu(x, self.weight, self.bias, self.weight_gemm)
        weight = self.weight if self.weight.dtype == x.dtype else self.weight.to(x.dtype)
        return nn.functional.linear(x, weight, None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight={self.weight.dtype}"


def input_dtype(linear: nn.Module) -> torch.dtype:
    """The dtype to feed ``linear`` (any of the linears here): its weight's, unless that is only storage."""
    return getattr(linear, "compute_dtype", linear.weight.dtype)


def concat_linears(*linears: nn.Linear) -> nn.Linear:
    """One frozen nn.Linear computing [a(x); b(x); ...] (inference fusion: fused q/k/v, gate/up); each output is
    the same dot product as in its own layer."""
    w = torch.cat([m.weight.detach() for m in linears])
    has_bias = linears[0].bias is not None
    out = nn.Linear(w.shape[1], w.shape[0], bias=has_bias, device=w.device, dtype=w.dtype)
    out.weight = nn.Parameter(w, requires_grad=False)
    if has_bias:
        out.bias = nn.Parameter(torch.cat([m.bias.detach() for m in linears]), requires_grad=False)
    return out


def use_dual_layout(module: nn.Module, names: tuple[str, ...]) -> None:
    """Replace the named nn.Linear children of ``module`` with DualLayoutLinear (in place)."""
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, nn.Linear):
            setattr(module, name, DualLayoutLinear(child))


def _replace_linears(module: nn.Module, make) -> int:
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in (nn.Linear, DualLayoutLinear):
                setattr(parent, name, make(child))
                count += 1
    return count


def use_dual_layout_everywhere(module: nn.Module) -> int:
    """Replace every nn.Linear inside ``module`` with DualLayoutLinear (in place); returns how many.
    For drafters on CPU: their sequential steps (Eagle3's chain, the Markov head) are 1-2 row
    products at low concurrency, exactly where the [in, out] copy pays."""
    return _replace_linears(module, lambda child: child if isinstance(child, DualLayoutLinear) else DualLayoutLinear(child))


def use_stream_linears(module: nn.Module, bf16_when_exact: bool = False) -> int:
    """Replace every nn.Linear (or DualLayoutLinear) inside ``module`` with StreamLinear (in place);
    returns how many. Needs the native kernels (``sparkserve.native.available()``)."""
    native.require()
    return _replace_linears(module, lambda child: StreamLinear(child, bf16_when_exact))


def use_cpu_inference_linears(module: nn.Module, bf16_when_exact: bool = False, dual_layout: bool = True) -> str:
    """The CPU inference linears for ``module``: StreamLinear everywhere when the native kernels are
    available (bf16-stored ones with fp32 GEMM copies, budget permitting: ``keep_gemm_copies``), else DualLayoutLinear (when ``dual_layout``), else unchanged. Returns which ("stream",
    "dual", "torch")."""
    if native.available():
        use_stream_linears(module, bf16_when_exact)
        keep_gemm_copies(module)
        return "stream"
    if dual_layout:
        use_dual_layout_everywhere(module)
        return "dual"
    return "torch"


GEMM_COPY_BUDGET_BYTES = 1 << 30  # fp32 copies kept for many-row products, at most this much per model


def keep_gemm_copies(module: nn.Module, budget_bytes: int = GEMM_COPY_BUDGET_BYTES) -> int:
    """Give every bf16-stored StreamLinear in ``module`` an fp32 copy for products of many rows (prefill, large
    batches), where torch's GEMM on fp32 beats widening the bf16 weights per call (the many-row cost of bf16
    storage measured in bench/RESULTS.md); the bytes to stream per decode step stay the bf16 ones. Only when
    all copies fit ``budget_bytes`` (a model too large for that keeps bf16 only). Returns the bytes added."""
    layers = [m for m in module.modules() if isinstance(m, StreamLinear) and m.weight.dtype == torch.bfloat16]
    total = sum(m.weight.numel() * 4 for m in layers)
    if not layers or total > budget_bytes:
        return 0
    for m in layers:
        m.weight_gemm = m.weight.float()
    return total


def weight_storage(module: nn.Module) -> str:
    """The dtypes the linear weights of ``module`` are stored in, e.g. "bfloat16" or "float32+bfloat16"."""
    dtypes = sorted({str(m.weight.dtype).removeprefix("torch.") for m in module.modules()
                     if isinstance(m, (nn.Linear, DualLayoutLinear, StreamLinear))})
    return "+".join(dtypes) or "none"
