"""A decoder layer's fused small ops: native kernels (``csrc/layer_ops.cpp``) for inference on the CPU,
their pure-torch references everywhere else.

The native path is taken only when autograd is off (``torch.no_grad`` / ``inference_mode``: the kernels
have no backward), the tensors are fp32 or bf16 on the CPU in one dtype, and ``sparkserve.native.available()``
(so ``SPARKSERVE_NATIVE=0`` or a failed build means torch). Both paths round in the same places: bf16 results
match bit for bit except where the fp32 sum of squares (summed in another order) or silu's exp flips a
rounding (at most one bf16 ulp); fp32 results agree to a few ulps.
"""
from __future__ import annotations

import torch

from sparkserve import native

NATIVE_DTYPES = (torch.float32, torch.bfloat16)


def use_native(x: torch.Tensor, *same_dtype: torch.Tensor) -> bool:
    """True when x (and every tensor in same_dtype, which must share x's dtype) may go to the kernels."""
    if not x.is_cpu or x.dtype not in NATIVE_DTYPES or torch.is_grad_enabled():
        return False
    for t in same_dtype:
        if t.dtype != x.dtype:
            return False
    return native.available()


def add_rms_norm(x: torch.Tensor, delta: torch.Tensor, norm) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual add then RMSNorm: (x + delta, norm(x + delta)), both [..., H] in x's dtype."""
    if use_native(x, delta, norm.weight) and delta.shape == x.shape:
        return torch.ops.sparkserve.layer_add_rms_norm(x, delta, norm.weight, norm.eps)
    x = x + delta
    return x, norm(x)


def qkv_norm_rope(attn, qkv: torch.Tensor, positions: torch.Tensor, rotary) -> tuple[torch.Tensor, ...]:
    """The fused projection's output qkv [T, (Hq + 2 Hk) * D] -> q [T, Hq, D], k [T, Hk, D] (per-head
    RMSNorm when ``attn.qk_norm``, then neox RoPE at positions [T]) and v [T, Hk, D] (a view of qkv)."""
    t, hq, hk, d = qkv.shape[0], attn.num_heads, attn.num_kv_heads, attn.head_dim
    weights = (attn.q_norm.weight, attn.k_norm.weight) if attn.qk_norm else ()
    if qkv.dim() == 2 and qkv.stride(1) == 1 and rotary.cos.dtype == torch.float32 and use_native(qkv, *weights):
        eps = attn.q_norm.eps if attn.qk_norm else 0.0
        return torch.ops.sparkserve.layer_qk_norm_rope(qkv, positions, rotary.cos, rotary.sin,
                                                      *(weights or (None, None)), hq, hk, eps)
    q, k, v = qkv.split([hq * d, hk * d, hk * d], dim=-1)
    q, k, v = q.reshape(t, hq, d), k.reshape(t, hk, d), v.reshape(t, hk, d)
    if attn.qk_norm:
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = rotary(positions, q, k)
    return q, k, v


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """[..., 2 I] holding [gate | up] -> silu(gate) * up [..., I]."""
    if use_native(gate_up):
        return torch.ops.sparkserve.layer_silu_and_mul(gate_up)
    gate, up = gate_up.chunk(2, dim=-1)
    return torch.nn.functional.silu(gate) * up
