"""A Qwen3/Llama-style decoder-only LM over a flat batch of tokens.

Module names mirror Hugging Face's, so an HF ``model.safetensors`` loads with no renaming.
``forward`` takes tokens from many sequences at once ([num_tokens]) and an attention context
(paged cache for serving, dense causal for training); it can also return the residual stream after
chosen layers, which DSpark/DFlash/Eagle3 drafters condition on (DSPARK.md §1.3).
"""
from __future__ import annotations

import torch
from torch import nn

from sparkserve.attention.base import AttentionContext, DenseCausalContext
from sparkserve.layers import fused
from sparkserve.layers.linear import concat_linears, use_cpu_inference_linears
from sparkserve.layers.norm import RMSNorm
from sparkserve.layers.rotary import RotaryEmbedding
from sparkserve.models.hf_config import DecoderConfig


class Attention(nn.Module):
    def __init__(self, cfg: DecoderConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        bias = cfg.attention_bias
        self.q_proj = nn.Linear(cfg.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, cfg.hidden_size, bias=bias)
        self.qk_norm = cfg.qk_norm
        if self.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)

        self.qkv_proj: nn.Linear | None = None  # set by fuse() for inference

    def fuse(self) -> None:
        """Inference only: one [q; k; v] matmul instead of three (same numbers, fewer kernel calls)."""
        self.qkv_proj = concat_linears(self.q_proj, self.k_proj, self.v_proj)
        del self.q_proj, self.k_proj, self.v_proj

    def forward(self, x: torch.Tensor, positions: torch.Tensor, rotary: RotaryEmbedding,
                attn: AttentionContext) -> torch.Tensor:
        t = x.shape[0]
        if self.qkv_proj is not None:  # inference: native per-head norm + RoPE where available
            q, k, v = fused.qkv_norm_rope(self, self.qkv_proj(x), positions, rotary)
        else:
            q = self.q_proj(x).reshape(t, self.num_heads, self.head_dim)
            k = self.k_proj(x).reshape(t, self.num_kv_heads, self.head_dim)
            v = self.v_proj(x).reshape(t, self.num_kv_heads, self.head_dim)
            if self.qk_norm:
                q, k = self.q_norm(q), self.k_norm(k)
            q, k = rotary(positions, q, k)
        out = attn.forward(self.layer_idx, q, k, v)  # [T, Hq, D]
        return self.o_proj(out.reshape(t, self.num_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        bias = cfg.mlp_bias
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=bias)
        self.gate_up_proj: nn.Linear | None = None  # set by fuse() for inference

    def fuse(self) -> None:
        self.gate_up_proj = concat_linears(self.gate_proj, self.up_proj)
        del self.gate_proj, self.up_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            return self.down_proj(fused.silu_and_mul(self.gate_up_proj(x)))
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: DecoderConfig, layer_idx: int):
        super().__init__()
        self.self_attn = Attention(cfg, layer_idx)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, positions, rotary, attn):
        x, h = fused.add_rms_norm(x, self.self_attn(self.input_layernorm(x), positions, rotary, attn),
                                  self.post_attention_layernorm)
        return x + self.mlp(h)


class DecoderModel(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class DecoderForCausalLM(nn.Module):
    """Base class of the registered architectures (Qwen3ForCausalLM, LlamaForCausalLM)."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.config = cfg
        self.model = DecoderModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.rotary = RotaryEmbedding(cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta, cfg.rope_scaling)
        self.scale = cfg.head_dim ** -0.5
        self.native_stack = None  # set by capture_step(): the whole layer stack as one native call

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, attn: AttentionContext,
                capture_layer_ids: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor | None]:
        """input_ids, positions: [T]. Returns (final-normed hidden [T, H], captured [T, len(ids)*H] or None).

        Layer id l captures the residual stream after decoder layer l; -1 captures the embedding output.
        """
        x = self.model.embed_tokens(input_ids)
        captured = {-1: x} if -1 in capture_layer_ids else {}
        if self.native_stack is not None and self.native_stack.applies(x, attn):
            hidden, from_layers = self.native_stack(x, positions, attn, capture_layer_ids)
            captured.update(from_layers)
        else:
            for i, layer in enumerate(self.model.layers):
                x = layer(x, positions, self.rotary, attn)
                if i in capture_layer_ids:
                    captured[i] = x
            hidden = self.model.norm(x)
        feats = torch.cat([captured[i] for i in capture_layer_ids], dim=-1) if capture_layer_ids else None
        return hidden, feats

    def fuse_for_inference(self, bf16_when_exact: bool = False) -> "DecoderForCausalLM":
        """Fuse q/k/v and gate/up projections (serving only; the fused model has no HF state dict).
        On a CPU every projection and lm_head then becomes a StreamLinear when the native kernels are
        built (bf16 storage where exact, if ``bf16_when_exact``), else small models keep [in, out]
        weight copies for fast 1-2 row decode products (layers/linear.py)."""
        for layer in self.model.layers:
            layer.self_attn.fuse()
            layer.mlp.fuse()
        if self.lm_head.weight.device.type == "cpu":
            small = sum(p.numel() for p in self.parameters()) < 250e6
            use_cpu_inference_linears(self, bf16_when_exact, dual_layout=small)
        return self

    def capture_step(self) -> str | None:
        """Run the fused layer stack as one native call from now on (models/native_stack.py); returns None
        when captured, else why not (the module path then stays)."""
        from sparkserve.models.native_stack import NativeDecoderStack, unsupported_reason

        reason = unsupported_reason(self)
        self.native_stack = NativeDecoderStack(self) if reason is None else None
        return reason

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, H] -> logits [N, V] (fp32)."""
        return self.lm_head(hidden).float()

    def forward_train(self, input_ids: torch.Tensor, capture_layer_ids: tuple[int, ...] = ()):
        """input_ids [B, S] -> logits [B, S, V] (and features [B, S, n*H] when capture ids are given)."""
        b, s = input_ids.shape
        positions = torch.arange(s, device=input_ids.device).repeat(b)
        ctx = DenseCausalContext(b, s, self.scale)
        hidden, feats = self.forward(input_ids.reshape(-1), positions, ctx, capture_layer_ids)
        logits = self.lm_head(hidden).view(b, s, -1)
        if capture_layer_ids:
            return logits, feats.view(b, s, -1)
        return logits
