"""The captured step on a CPU: a decoder's whole layer stack as one native call (``csrc/decoder_stack.cpp``).

A small model's decode step is mostly Python between kernels (module calls, attribute lookups, the
checks of each dispatch helper): the demo's 6 layers make about 70 kernel calls per step. Once the model
is fused for inference, ``NativeDecoderStack`` collects every layer's weights into one argument list, and
each step then crosses into C++ once; the kernels called there are the same ones, with the same arguments,
as the module path's, so the numbers are bit-identical. It applies to fp32 activations with the native
paged-attention backend (``cpu``) and StreamLinear projections; anything else (training, the torch backend,
bf16 activations, ``--enforce-eager``) runs the modules.
"""
from __future__ import annotations

import torch

from sparkserve import native
from sparkserve.attention.base import PagedAttentionContext
from sparkserve.layers.linear import StreamLinear


def unsupported_reason(model) -> str | None:
    """Why ``model`` (a fused DecoderForCausalLM) cannot run as a native stack, or None if it can."""
    eps = model.config.rms_norm_eps
    reason = stack_unsupported_reason(model.model.layers, model.rotary, eps)
    if reason is None and (not isinstance(model.lm_head, StreamLinear) or model.model.norm.eps != eps):
        return "lm_head / final norm differ"
    return reason


def stack_unsupported_reason(layers, rotary, eps: float) -> str | None:
    """Why fused layers (input_layernorm, self_attn with qkv_proj/o_proj, post_attention_layernorm, mlp with
    gate_up_proj/down_proj) cannot run as a native stack (csrc/stack_ops.h), or None if they can."""
    if not native.available():
        return "the native kernels are not built"
    if rotary.cos.dtype != torch.float32 or rotary.cos.device.type != "cpu":
        return "rotary tables are not fp32 on the CPU"
    for layer in layers:
        attn, mlp = layer.self_attn, layer.mlp
        linears = (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj)
        if not all(isinstance(m, StreamLinear) for m in linears):
            return "projections are not fused StreamLinear layers"
        norms = [layer.input_layernorm, layer.post_attention_layernorm] + ([attn.q_norm, attn.k_norm] if attn.qk_norm else [])
        if any(n.eps != eps or n.weight.dtype != torch.float32 for n in norms):
            return "norms differ in eps or dtype"
    return None


def _linear(m: StreamLinear) -> tuple:
    """(weight, bias, fp32 GEMM copy): what csrc/stack_ops.h passes to linear_cpu for one projection."""
    return m.weight, m.bias, m.weight_gemm


def layer_weights(layer) -> list[torch.Tensor | None]:
    """One fused layer's 16 entries of a native stack's weight list, in csrc/stack_ops.h's order."""
    attn, mlp = layer.self_attn, layer.mlp
    qk = (attn.q_norm.weight, attn.k_norm.weight) if attn.qk_norm else (None, None)
    return [layer.input_layernorm.weight, *_linear(attn.qkv_proj), *qk, *_linear(attn.o_proj),
            layer.post_attention_layernorm.weight, *_linear(mlp.gate_up_proj), *_linear(mlp.down_proj)]


class NativeDecoderStack:
    """One native call per forward for the layers of a fused fp32 DecoderForCausalLM (see module doc)."""

    def __init__(self, model):
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"cannot capture this model's step: {reason}")
        cfg = model.config
        self.weights = [w for layer in model.model.layers for w in layer_weights(layer)]
        self.final_norm = model.model.norm.weight
        self.rotary = model.rotary
        self.shape = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim)
        self.eps, self.scale = float(cfg.rms_norm_eps), float(model.scale)

    @staticmethod
    def applies(x: torch.Tensor, attn) -> bool:
        """fp32 rows, no autograd, and the native paged backend's context."""
        return (x.dtype == torch.float32 and not torch.is_grad_enabled() and isinstance(attn, PagedAttentionContext)
                and attn.backend.name == "cpu")

    def __call__(self, x: torch.Tensor, positions: torch.Tensor, attn: PagedAttentionContext,
                 capture_layer_ids: tuple[int, ...]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """x [T, H] embeddings -> (final-normed hidden [T, H], {layer id: residual after it} for capture ids >= 0)."""
        m = attn.metadata
        layer_ids = [i for i in capture_layer_ids if i >= 0]
        hidden, captured = torch.ops.sparkserve.decoder_stack(
            x, positions, self.weights, self.final_norm, self.rotary.cos, self.rotary.sin,
            [kv[0] for kv in attn.kv_caches], [kv[1] for kv in attn.kv_caches], m.slot_mapping, m.block_tables,
            m.seq_lens, m.query_start_loc, *self.shape, self.eps, self.scale, layer_ids)
        return hidden, dict(zip(layer_ids, captured))
