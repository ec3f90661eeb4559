"""The captured draft step on a CPU: a DSpark/DFlash drafter's block layers as one native call
(``csrc/draft_stack.cpp``), the drafter's counterpart of the target's ``models/native_stack.py``.

A propose call runs every drafting request's block (anchor + mask rows) through the drafter's layers;
with the modules that is ~15 kernel calls per layer with Python between them. Once the drafter is fused
for serving (``DSparkDraftModel.fuse_for_inference``) and its projections are StreamLinear layers,
``NativeDraftStack`` hands the whole loop and the final norm to C++ in one call, which runs the same
kernels with the same arguments (bit-identical results). It applies to fp32 block rows with the native
attention backend (``cpu``); anything else (training, the torch backend, ``--enforce-eager``) runs the modules.
"""
from __future__ import annotations

import torch

from sparkserve.attention.base import DraftAttentionContext, DraftMask
from sparkserve.models.native_stack import layer_weights, stack_unsupported_reason


def unsupported_reason(model, rotary) -> str | None:
    """Why ``model`` (a DSparkDraftModel, fused for serving) cannot run its block layers natively, or None."""
    eps = model.config.model.rms_norm_eps
    if any(layer.self_attn.qkv_proj is None for layer in model.layers):
        return "the drafter is not fused for serving"
    if model.norm.eps != eps:
        return "the final norm's eps differs"
    return stack_unsupported_reason(model.layers, rotary, eps)


class NativeDraftStack:
    """One native call per propose for the block layers of a fused fp32 DSparkDraftModel (module doc)."""

    def __init__(self, model, rotary):
        reason = unsupported_reason(model, rotary)
        if reason is not None:
            raise ValueError(f"cannot capture this drafter's step: {reason}")
        cfg = model.config.model
        self.weights = [w for layer in model.layers for w in layer_weights(layer)]
        self.final_norm = model.norm.weight
        self.rotary = rotary
        self.shape = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim)
        self.eps = float(cfg.rms_norm_eps)

    @staticmethod
    def applies(x: torch.Tensor, ctx: DraftAttentionContext) -> bool:
        """fp32 rows, no autograd, and the native backend's draft metadata."""
        return x.dtype == torch.float32 and not torch.is_grad_enabled() and ctx.backend.name == "cpu"

    def __call__(self, x: torch.Tensor, positions: torch.Tensor, ctx: DraftAttentionContext,
                 masks: list[DraftMask]) -> torch.Tensor:
        """x [R, B, H] embedded blocks, positions [R, B], one mask per layer -> post-norm hidden [R, B, H]
        (``block_layers``)."""
        r, b, h = x.shape
        m = ctx.metadata
        out = torch.ops.sparkserve.draft_stack(
            x.reshape(r * b, h), positions.reshape(-1), self.weights, self.final_norm, self.rotary.cos,
            self.rotary.sin, [kv[0] for kv in ctx.kv_caches], [kv[1] for kv in ctx.kv_caches], m.block_tables,
            m.context_lens, r, *self.shape, self.eps, float(ctx.scale), [int(bool(k.causal)) for k in masks],
            [int(k.window or 0) for k in masks])
        return out.view(r, b, h)
